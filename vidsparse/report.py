"""Everything `vidsparse compare` writes: per-frame quality against dense, speed, density, media.

`write_compare_report` takes one `MethodRun` per method (the first is dense, the reference) over the
same (prompt, seed) cases and writes into one folder:

    report.md                          the report, with images and videos referenced by relative path
    report.html                        the same report, self-contained: inline CSS, every image and
                                       animation inlined as a base64 data: URI (opens offline)
    results.json                       every number of the report (the dict the function returns)
    psnr_per_frame.png                 PSNR against dense per frame, one line per method and case
    ssim_per_frame.png                 the same for SSIM
    density_<method>.png               realised density per layer x head, with each head's pattern
    side_by_side_<method>_<case>.mp4   dense | method | |difference| x4, H.264 (libx264, yuv420p)
    side_by_side_<method>_<case>.gif   the same, smaller (~512 px wide, <= 25 frames): the one
                                       report.html inlines

Example::

    >>> runs = [MethodRun("dense", {...}, dense_videos, 12.0, 0.6, 1.0, heads, []),
    ...         MethodRun("spatial", {...}, spatial_videos, 7.5, 0.375, 0.18, heads, [])]
    >>> results = write_compare_report(Path("samples/compare"), cases, runs, meta, fps=8)
    >>> results["methods"][1]["psnr_mean"], results["methods"][1]["speedup_vs_dense"]

Definitions (also written into the reports):
    psnr_mean / ssim_mean: the mean over every frame of every case of the per-frame value against
        dense on the same prompt and seed (`vidsparse.metrics`); *_worst_frame is the lowest frame.
    Infinities: an identical frame has PSNR +inf. results.json and the returned dict write every
        infinity as the string "inf" (and -inf as "-inf"; a NaN as null); nothing else is a string
        where a number is expected. A mean that includes an identical frame is "inf" too, so dense
        against dense gives "inf" and SSIM 1.0.
    speedup_vs_dense: dense seconds per step / the method's seconds per step (null if either is 0).
    lpips: the mean LPIPS over every frame of every case when `metrics.lpips_available()` allows
        it, else null, with the reason in results["lpips"]["reason"].
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .metrics import lpips_available, lpips_per_frame, psnr_per_frame, ssim_per_frame

__all__ = ["MethodRun", "write_compare_report"]

logger = logging.getLogger(__name__)

GIF_WIDTH = 512      # px: the inlined animations stay small enough for report.html
GIF_MAX_FRAMES = 25  # longer videos are subsampled (at the same playback speed)
DIFF_GAIN = 4        # the difference panel shows |dense - method| x 4


@dataclass
class MethodRun:
    """One method's generations over every case, and what its installation reported.

    Attributes:
        name: "dense", "spatial", ... (unique; also used in file names).
        config: the SparseConfig fields as a dict.
        videos: one uint8 [F, H, W, 3] video per (prompt, seed) case, in the order of `cases`.
        seconds_total: wall time of all its generations.
        seconds_per_step: seconds_total / total denoising steps.
        density: realised mean attention density (1.0 for dense).
        heads: {"density": [[per-head float] per layer], "pattern": [[per-head str] per layer]}.
        fallbacks: reasons sparse attention fell back (may be empty).
    """

    name: str
    config: dict
    videos: list[np.ndarray]
    seconds_total: float
    seconds_per_step: float
    density: float
    heads: dict = field(default_factory=dict)
    fallbacks: list[str] = field(default_factory=list)


@dataclass
class _Media:
    """File names (relative to the report folder) of what `_write_media` wrote."""

    psnr_plot: str
    ssim_plot: str
    tradeoff_plot: str
    density: dict[str, str]                          # method -> png
    side_by_side: dict[str, list[tuple[str, str]]]   # method -> [(mp4, gif) per case]; not the reference


def write_compare_report(out_dir: Path, cases: list[dict], runs: list[MethodRun], meta: dict,
                         fps: float = 8) -> dict:
    """Score every run against `runs[0]` (dense) and write the report folder; return the results.

    Args:
        out_dir: report folder (created if missing; existing files of the same names are replaced).
        cases: [{"prompt": str, "seed": int}], one per video of each run.
        runs: the methods; runs[0] is the reference every other run is compared with.
        meta: {"model", "command", "date", "device", "versions": {...}, "steps", ...}; shown at the
            top of the reports and saved as is (non-JSON values as strings).
        fps: playback rate of the side-by-side videos.

    Returns:
        The dict saved as results.json (JSON-safe: infinities are the string "inf"):
        {"meta", "cases", "methods": [{"name", "config", "psnr_mean", "psnr_worst_frame", "ssim_mean",
        "ssim_worst_frame", "psnr_per_frame": [[...] per case], "ssim_per_frame", "seconds_total",
        "seconds_per_step", "speedup_vs_dense", "density", "heads", "fallbacks", "lpips"}],
        "lpips": {"used": bool, "reason": str}}.
    """
    out_dir = Path(out_dir)
    _validate(cases, runs, fps)
    out_dir.mkdir(parents=True, exist_ok=True)
    use_lpips, lpips_reason = lpips_available()
    scores = [_score(run, runs[0], use_lpips) for run in runs]
    raw = {"meta": meta, "cases": cases, "methods": scores, "lpips": {"used": use_lpips, "reason": lpips_reason}}
    media = _write_media(out_dir, cases, runs, scores, fps)
    results = _json_safe(raw)
    _write_text(out_dir / "results.json", _dumps(results))
    _write_text(out_dir / "report.md", _markdown(raw, media))
    _write_text(out_dir / "report.html", _html(raw, media, out_dir))
    return results


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    logger.info("wrote %s", path)


# ---------------------------------------------------------------------------------------- validation
def _validate(cases: list[dict], runs: list[MethodRun], fps: float) -> None:
    if not runs:
        raise ValueError("runs is empty: give at least the dense run (the reference)")
    if not cases:
        raise ValueError("cases is empty: give one {'prompt', 'seed'} per video")
    if not isinstance(fps, (int, float)) or not fps > 0:
        raise ValueError(f"fps must be a number > 0; got {fps!r}")
    for i, case in enumerate(cases):
        if not isinstance(case, dict) or "prompt" not in case or "seed" not in case:
            raise ValueError(f"cases[{i}] must be a dict with 'prompt' and 'seed'; got {case!r}")
    slugs = [_slug(run.name) for run in runs]
    if len(set(slugs)) != len(slugs):
        raise ValueError(f"method names must be unique (as file names); got {[run.name for run in runs]}")
    for run in runs:
        _validate_videos(run, runs[0], len(cases))


def _validate_videos(run: MethodRun, ref: MethodRun, n_cases: int) -> None:
    if len(run.videos) != n_cases:
        raise ValueError(f"method {run.name!r} has {len(run.videos)} videos for {n_cases} cases")
    for i, (video, ref_video) in enumerate(zip(run.videos, ref.videos)):
        if not isinstance(video, np.ndarray) or video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
            raise ValueError(f"method {run.name!r} case {i}: videos must be uint8 [F, H, W, 3] numpy arrays; got "
                             f"{getattr(video, 'dtype', type(video).__name__)} {getattr(video, 'shape', '')}")
        if video.shape != ref_video.shape:
            raise ValueError(f"method {run.name!r} case {i}: video shape {video.shape} differs from "
                             f"{ref.name!r}'s {ref_video.shape}")


def _slug(name: str) -> str:
    """`name` as a file-name part: anything but letters, digits, '.', '_' and '-' becomes '-'."""
    if not name:
        raise ValueError("a method name is empty")
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


# ---------------------------------------------------------------------------------------- scoring
def _score(run: MethodRun, ref: MethodRun, use_lpips: bool) -> dict:
    """The results entry of one method (floats, +inf for identical frames; made JSON-safe later)."""
    psnr = [psnr_per_frame(a, b) for a, b in zip(ref.videos, run.videos)]
    ssim = [ssim_per_frame(a, b) for a, b in zip(ref.videos, run.videos)]
    lpips = np.concatenate([lpips_per_frame(a, b) for a, b in zip(ref.videos, run.videos)]) if use_lpips else None
    all_psnr, all_ssim = np.concatenate(psnr), np.concatenate(ssim)
    return {
        "name": run.name,
        "config": run.config,
        "psnr_mean": _mean(all_psnr),
        "psnr_worst_frame": float(all_psnr.min()),
        "ssim_mean": _mean(all_ssim),
        "ssim_worst_frame": float(all_ssim.min()),
        "psnr_per_frame": [p.tolist() for p in psnr],
        "ssim_per_frame": [s.tolist() for s in ssim],
        "seconds_total": float(run.seconds_total),
        "seconds_per_step": float(run.seconds_per_step),
        "speedup_vs_dense": _ratio(ref.seconds_per_step, run.seconds_per_step),
        "density": float(run.density),
        "heads": run.heads,
        "fallbacks": list(run.fallbacks),
        "lpips": None if lpips is None else _mean(lpips),
    }


def _mean(values: np.ndarray) -> float:
    """Mean; +inf as soon as one value is +inf (numpy would agree, but say it outright)."""
    return math.inf if np.isposinf(values).any() else float(values.mean())


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if num > 0 and den > 0 else None


def _json_safe(value):
    """`value` with numpy types as Python ones, +-inf as "inf"/"-inf", NaN as None, the rest as str."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return None
        return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if value is None or isinstance(value, str):
        return value
    return str(value)


_NUMBER = r'(?:-?\d[\d.eE+-]*|"-?inf"|null)'
_NUMBER_LIST = re.compile(rf"\[\s*({_NUMBER}(?:,\s*{_NUMBER})*)\s*\]")


def _dumps(results: dict) -> str:
    """Indented JSON with every list of numbers on one line (per-frame lists stay readable)."""
    text = json.dumps(results, indent=2)
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text) + "\n"


# ---------------------------------------------------------------------------------------- media
def _write_media(out_dir: Path, cases: list[dict], runs: list[MethodRun], scores: list[dict], fps: float) -> _Media:
    colours = {run.name: _PALETTE[i % len(_PALETTE)] for i, run in enumerate(runs)}
    compared = scores[1:]
    media = _Media(psnr_plot="psnr_per_frame.png", ssim_plot="ssim_per_frame.png",
                   tradeoff_plot="density_vs_psnr.png", density={}, side_by_side={})
    _write_png(out_dir / media.tradeoff_plot, _tradeoff_plot(compared, colours))
    _write_png(out_dir / media.psnr_plot, _metric_plot(compared, cases, colours, "psnr_per_frame", "PSNR (dB)",
                                                       f"PSNR per frame against {runs[0].name}"))
    _write_png(out_dir / media.ssim_plot, _metric_plot(compared, cases, colours, "ssim_per_frame", "SSIM",
                                                       f"SSIM per frame against {runs[0].name}"))
    for run in runs:
        media.density[run.name] = f"density_{_slug(run.name)}.png"
        _write_png(out_dir / media.density[run.name], _density_figure(run.name, run.heads, run.density))
    for run in runs[1:]:
        media.side_by_side[run.name] = [
            _write_side_by_side(out_dir, runs[0], run, i, fps) for i in range(len(cases))
        ]
    return media


def _write_png(path: Path, image_bgr: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image_bgr):
        raise OSError(f"OpenCV could not write {path}")
    logger.info("wrote %s", path)


# ------------------------------------------------------------------ drawing primitives (OpenCV, BGR)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_INK = (40, 36, 31)
_MUTED = (110, 100, 90)
_GRID = (232, 228, 224)
_WHITE = (255, 255, 255)
# tab10, BGR: one colour per method, by its position in `runs`
_PALETTE = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
            (75, 86, 140), (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23)]


def _text(img: np.ndarray, text: str, xy: tuple[float, float], scale: float = 0.45, colour=_INK,
          thick: int = 1, align: str = "left", valign: str = "baseline") -> int:
    """Draw `text` anchored at `xy` (align: left/center/right; valign: baseline/middle/top); return its width."""
    (w, h), _ = cv2.getTextSize(text, _FONT, scale, thick)
    x = xy[0] - {"left": 0, "center": w / 2, "right": w}[align]
    y = xy[1] + {"baseline": 0, "middle": h / 2, "top": h}[valign]
    cv2.putText(img, text, (round(x), round(y)), _FONT, scale, colour, thick, cv2.LINE_AA)
    return w


def _vertical_text(img: np.ndarray, text: str, centre: tuple[int, int], scale: float = 0.45) -> None:
    """`text` rotated 90 degrees counter-clockwise, centred on `centre` (dark ink over a light canvas)."""
    (w, h), base = cv2.getTextSize(text, _FONT, scale, 1)
    tile = np.full((h + base + 4, w + 4, 3), 255, np.uint8)
    cv2.putText(tile, text, (2, h + 2), _FONT, scale, _INK, 1, cv2.LINE_AA)
    tile = cv2.rotate(tile, cv2.ROTATE_90_COUNTERCLOCKWISE)
    y0, x0 = max(centre[1] - tile.shape[0] // 2, 0), max(centre[0] - tile.shape[1] // 2, 0)
    region = img[y0:y0 + tile.shape[0], x0:x0 + tile.shape[1]]
    np.minimum(region, tile[:region.shape[0], :region.shape[1]], out=region)


def _marker(img: np.ndarray, kind: int, xy: tuple[int, int], colour, r: int = 4) -> None:
    """One of six marker shapes (one per case, cycling): dot, square, triangle, diamond, ring, cross."""
    x, y = xy
    kind %= 6
    if kind == 0:
        cv2.circle(img, (x, y), r, colour, -1, cv2.LINE_AA)
    elif kind == 1:
        cv2.rectangle(img, (x - r + 1, y - r + 1), (x + r - 1, y + r - 1), colour, -1)
    elif kind in (2, 3):
        pts = [(x, y - r - 1), (x + r + 1, y + r), (x - r - 1, y + r)] if kind == 2 else \
              [(x, y - r - 1), (x + r + 1, y), (x, y + r + 1), (x - r - 1, y)]
        cv2.fillPoly(img, [np.array(pts, np.int32)], colour, cv2.LINE_AA)
    elif kind == 4:
        cv2.circle(img, (x, y), r, colour, 2, cv2.LINE_AA)
    else:
        cv2.line(img, (x - r, y - r), (x + r, y + r), colour, 2, cv2.LINE_AA)
        cv2.line(img, (x - r, y + r), (x + r, y - r), colour, 2, cv2.LINE_AA)


def _nice_ticks(lo: float, hi: float, target: int = 6, integer: bool = False) -> np.ndarray:
    """Round tick values (1, 2 or 5 x 10^k apart) from <= lo to >= hi."""
    raw = max(hi - lo, 1e-12) / target
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw * 0.999)
    if integer:
        step = max(1.0, round(step))
    return np.arange(math.floor(lo / step) * step, hi + step * 0.999, step)


def _tick_label(value: float, ticks: np.ndarray) -> str:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{value:.{decimals}f}"


# ------------------------------------------------------------------ per-frame line plot
def _metric_plot(scores: list[dict], cases: list[dict], colours: dict, key: str, ylabel: str,
                 title: str) -> np.ndarray:
    """One line per (method, case): colour = method, marker = case; infinite values are not drawn."""
    width, height = 960, 440
    box = (76, 44, 720, 376)  # x0, y0, x1, y1 of the plotting area
    img = np.full((height, width, 3), 255, np.uint8)
    _text(img, title, (box[0], 26), 0.6, thick=1)
    series = [(s["name"], c, np.asarray(v, float)) for s in scores for c, v in enumerate(s[key])]
    finite = np.concatenate([v[np.isfinite(v)] for _, _, v in series]) if series else np.empty(0)
    frames = max((len(v) for _, _, v in series), default=1)
    xt = _nice_ticks(0, max(frames - 1, 1), target=8, integer=True)
    yt = _y_ticks(finite)
    to_px = _axes(img, box, xt, yt, "frame", ylabel)
    for name, case, values in series:
        _draw_series(img, to_px, values, colours[name], case)
    if finite.size == 0:
        message = "nothing to draw: no method to compare" if not scores else "every frame is identical to the reference"
        _text(img, message, ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), 0.5, _MUTED, align="center")
    _plot_legend(img, (box[2] + 24, box[1] + 6), scores, cases, colours)
    return img


# ------------------------------------------------------------------ density against quality
def _tradeoff_plot(scores: list[dict], colours: dict) -> np.ndarray:
    """One point per method: realised attention density (x) against mean PSNR (y); a sweep of one method's budget
    (several methods of the config, e.g. static at several eps) traces its curve. Identical videos are not drawn."""
    width, height = 760, 440
    box = (76, 44, 520, 376)
    img = np.full((height, width, 3), 255, np.uint8)
    _text(img, "Attention density against PSNR (mean over frames and cases)", (box[0], 26), 0.6)
    points = [(s["name"], float(s["density"]), float(s["psnr_mean"])) for s in scores]
    finite = np.array([p for _, _, p in points if math.isfinite(p)])
    xt = _nice_ticks(0.0, 1.0, target=5)
    to_px = _axes(img, box, xt, _y_ticks(finite), "realised attention density", "PSNR (dB)")
    y = box[1] + 6
    _text(img, "method", (box[2] + 24, y + 4), 0.45, _MUTED)
    for name, density, psnr in points:
        y += 22
        _marker(img, 0, (box[2] + 37, y), colours[name])
        label = f"{_clip(name, 18)}: {density:.2f}, " + (f"{psnr:.1f} dB" if math.isfinite(psnr) else "identical")
        _text(img, label, (box[2] + 50, y), 0.4, valign="middle")
        if math.isfinite(psnr):
            _marker(img, 0, to_px(density, psnr), colours[name], r=6)
    if finite.size == 0:
        _text(img, "nothing to draw", ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), 0.5, _MUTED, align="center")
    return img


def _y_ticks(finite: np.ndarray) -> np.ndarray:
    if finite.size == 0:
        return _nice_ticks(0.0, 1.0)
    lo, hi = float(finite.min()), float(finite.max())
    pad = max((hi - lo) * 0.05, 1e-3)
    return _nice_ticks(lo - pad, hi + pad)


def _axes(img: np.ndarray, box: tuple, xt: np.ndarray, yt: np.ndarray, xlabel: str, ylabel: str):
    """Grid, frame, ticks and labels; return the data -> pixel mapping."""
    x0, y0, x1, y1 = box

    def to_px(x: float, y: float) -> tuple[int, int]:
        px = x0 + (x - xt[0]) / (xt[-1] - xt[0]) * (x1 - x0)
        py = y1 - (y - yt[0]) / (yt[-1] - yt[0]) * (y1 - y0)
        return round(px), round(py)

    for x in xt:
        px = to_px(x, yt[0])[0]
        cv2.line(img, (px, y0), (px, y1), _GRID, 1)
        cv2.line(img, (px, y1), (px, y1 + 5), _INK, 1)
        _text(img, _tick_label(x, xt), (px, y1 + 20), 0.4, align="center")
    for y in yt:
        py = to_px(xt[0], y)[1]
        cv2.line(img, (x0, py), (x1, py), _GRID, 1)
        cv2.line(img, (x0 - 5, py), (x0, py), _INK, 1)
        _text(img, _tick_label(y, yt), (x0 - 9, py), 0.4, align="right", valign="middle")
    cv2.rectangle(img, (x0, y0), (x1, y1), _INK, 1)
    _text(img, xlabel, ((x0 + x1) / 2, y1 + 46), 0.5, align="center")
    _vertical_text(img, ylabel, (16, (y0 + y1) // 2), 0.5)
    return to_px


def _draw_series(img: np.ndarray, to_px, values: np.ndarray, colour, case: int) -> None:
    """A polyline through the finite points (broken at infinite ones), a marker every few frames."""
    points = [to_px(i, v) if np.isfinite(v) else None for i, v in enumerate(values)]
    run: list = []
    for p in [*points, None]:
        if p is None:
            if len(run) > 1:
                cv2.polylines(img, [np.array(run, np.int32)], False, colour, 2, cv2.LINE_AA)
            run = []
        else:
            run.append(p)
    every = max(1, math.ceil(len(values) / 30))
    for p in points[::every]:
        if p is not None:
            _marker(img, case, p, colour)


def _plot_legend(img: np.ndarray, origin: tuple[int, int], scores: list[dict], cases: list[dict],
                 colours: dict) -> None:
    x, y = origin
    _text(img, "method (colour)", (x, y + 4), 0.45, _MUTED)
    for s in scores[:10]:
        y += 22
        cv2.line(img, (x, y), (x + 26, y), colours[s["name"]], 3, cv2.LINE_AA)
        _text(img, _clip(s["name"], 24), (x + 34, y), 0.45, valign="middle")
    y += 36
    _text(img, "case (marker)", (x, y), 0.45, _MUTED)
    for c, case in enumerate(cases[:10]):
        y += 22
        _marker(img, c, (x + 13, y), _INK)
        _text(img, _clip(f"{c}: seed {case['seed']}, {case['prompt']}", 26), (x + 34, y), 0.4, valign="middle")
    if len(cases) > 10:
        _text(img, f"... and {len(cases) - 10} more", (x + 34, y + 22), 0.4, _MUTED, valign="middle")


def _clip(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n - 3] + "..."


# ------------------------------------------------------------------ density heat map
_DENSE_GREY = (200, 200, 200)
_PATTERN_COLOURS = [(14, 127, 255), (44, 160, 44), (189, 103, 148), (40, 39, 214), (34, 189, 188), (207, 190, 23)]


def _head_grid(heads: dict) -> tuple[np.ndarray, np.ndarray]:
    """float [L, H] densities (NaN where a layer has fewer heads) and str [L, H] patterns ("" there)."""
    dens, pats = heads.get("density") or [], heads.get("pattern") or []
    n_heads = max((len(row) for row in dens), default=0)
    grid = np.full((len(dens), n_heads), np.nan)
    names = np.full((len(dens), n_heads), "", dtype=object)
    for layer, row in enumerate(dens):
        grid[layer, :len(row)] = row
        pattern_row = pats[layer] if layer < len(pats) else []
        names[layer, :len(pattern_row)] = pattern_row
    return grid, names


def _pattern_letters(names: list[str]) -> dict[str, str]:
    """A distinct capital letter per pattern name: its first free letter, else a digit."""
    letters: dict[str, str] = {}
    for name in sorted(names):
        free = [ch for ch in name.upper() if ch.isalnum() and ch not in letters.values()]
        letters[name] = free[0] if free else str(len(letters) % 10)
    return letters


def _density_figure(name: str, heads: dict, density: float) -> np.ndarray:
    """Density per layer (rows) and head (columns) on a fixed 0..1 viridis scale with a colour bar,
    beside a panel of each head's pattern (colour + letter) and its legend."""
    grid, names = _head_grid(heads)
    if grid.size == 0:
        img = np.full((90, 640, 3), 255, np.uint8)
        _text(img, f"{name}: attention density {density:.3f}", (16, 32), 0.6)
        _text(img, "no per-layer, per-head densities were recorded", (16, 64), 0.45, _MUTED)
        return img
    layers, n_heads = grid.shape
    cell = int(np.clip(min(420 / n_heads, 560 / layers), 6, 44))
    pw, ph = n_heads * cell, layers * cell
    left, top = 70, 62
    bar_x = left + pw + 14
    pat_x = bar_x + 14 + 64
    patterns = sorted({p for p in names.flat if p})
    width = max(pat_x + pw + 24, 720)
    per_row = max(1, (width - 2 * left) // 170)
    legend_h = 24 * math.ceil(len(patterns) / per_row)
    img = np.full((top + ph + 60 + legend_h, width, 3), 255, np.uint8)
    _text(img, f"{name}: realised attention density per layer and head (mean {density:.3f})", (16, 26), 0.55)
    _text(img, "density", (left, top - 10), 0.45, _MUTED)
    _text(img, "pattern", (pat_x, top - 10), 0.45, _MUTED)
    img[top:top + ph, left:left + pw] = _density_cells(grid, cell)
    _colour_bar(img, (bar_x, top), ph)
    sparse = [p for p in patterns if p != "dense"]
    colours = {p: _PATTERN_COLOURS[i % len(_PATTERN_COLOURS)] for i, p in enumerate(sparse)} | {"dense": _DENSE_GREY}
    letters = _pattern_letters(patterns)
    _pattern_cells(img, (pat_x, top), names, cell, colours, letters)
    _grid_ticks(img, (left, top), (pat_x, top), layers, n_heads, cell)
    _pattern_legend(img, (left, top + ph + 60), per_row, patterns, colours, letters)
    return img


def _density_cells(grid: np.ndarray, cell: int) -> np.ndarray:
    """[L*cell, H*cell, 3] viridis cells (0 = dark purple, 1 = yellow), light grey where NaN."""
    levels = np.round(np.clip(np.nan_to_num(grid, nan=0.0), 0, 1) * 255).astype(np.uint8)
    rgb = cv2.applyColorMap(levels, cv2.COLORMAP_VIRIDIS)
    rgb[np.isnan(grid)] = (245, 245, 245)
    cells = np.repeat(np.repeat(rgb, cell, axis=0), cell, axis=1)
    if cell >= 10:  # thin white separators keep neighbouring cells apart
        cells[::cell, :] = 255
        cells[:, ::cell] = 255
    return cells


def _colour_bar(img: np.ndarray, origin: tuple[int, int], height: int) -> None:
    x, y = origin
    levels = np.round(np.linspace(255, 0, height)).astype(np.uint8)[:, None]
    img[y:y + height, x:x + 14] = np.repeat(cv2.applyColorMap(levels, cv2.COLORMAP_VIRIDIS), 14, axis=1)
    cv2.rectangle(img, (x, y), (x + 13, y + height - 1), _INK, 1)
    for value in (0.0, 0.25, 0.5, 0.75, 1.0) if height >= 120 else (0.0, 0.5, 1.0):
        py = y + round((1 - value) * (height - 1))
        cv2.line(img, (x + 14, py), (x + 18, py), _INK, 1)
        _text(img, f"{value:g}", (x + 22, py), 0.38, valign="middle")


def _pattern_cells(img: np.ndarray, origin: tuple[int, int], names: np.ndarray, cell: int, colours: dict,
                   letters: dict) -> None:
    x0, y0 = origin
    scale = min(0.5, cell / 34)
    for (layer, head), pattern in np.ndenumerate(names):
        x, y = x0 + head * cell, y0 + layer * cell
        colour = colours.get(pattern, (245, 245, 245))
        cv2.rectangle(img, (x, y), (x + cell - 1, y + cell - 1), colour, -1)
        if cell >= 10:
            cv2.rectangle(img, (x, y), (x + cell - 1, y + cell - 1), _WHITE, 1)
        if pattern and cell >= 12:
            ink = _INK if sum(colour) / 3 > 150 else _WHITE
            _text(img, letters[pattern], (x + cell / 2, y + cell / 2), scale, ink, align="center", valign="middle")


def _grid_ticks(img: np.ndarray, density_origin: tuple[int, int], pattern_origin: tuple[int, int], layers: int,
                n_heads: int, cell: int) -> None:
    """Layer numbers left of the density panel, head numbers under both panels, and axis labels."""
    left, top = density_origin
    every_layer, every_head = max(1, math.ceil(13 / cell)), max(1, math.ceil(22 / cell))
    for layer in range(0, layers, every_layer):
        _text(img, str(layer), (left - 6, top + layer * cell + cell / 2), 0.35, align="right", valign="middle")
    bottom = top + layers * cell
    for x0 in (left, pattern_origin[0]):
        for head in range(0, n_heads, every_head):
            _text(img, str(head), (x0 + head * cell + cell / 2, bottom + 16), 0.35, align="center")
        _text(img, "head", (x0 + n_heads * cell / 2, bottom + 38), 0.45, align="center")
    _vertical_text(img, "layer", (16, top + layers * cell // 2), 0.45)


def _pattern_legend(img: np.ndarray, origin: tuple[int, int], per_row: int, patterns: list[str], colours: dict,
                    letters: dict) -> None:
    """One entry per pattern (swatch, letter, name), 170 px apart, `per_row` to a row."""
    for i, pattern in enumerate(patterns):
        x, y = origin[0] + (i % per_row) * 170, origin[1] + (i // per_row) * 24
        cv2.rectangle(img, (x, y), (x + 16, y + 16), colours[pattern], -1)
        ink = _INK if sum(colours[pattern]) / 3 > 150 else _WHITE
        _text(img, letters[pattern], (x + 8, y + 8), 0.4, ink, align="center", valign="middle")
        _text(img, _clip(pattern, 18), (x + 24, y + 8), 0.42, valign="middle")


# ------------------------------------------------------------------ side-by-side videos
def _write_side_by_side(out_dir: Path, ref: MethodRun, run: MethodRun, case: int, fps: float) -> tuple[str, str]:
    """Write the mp4 (full size, every frame) and the GIF (small) of one case; return their names."""
    stem = f"side_by_side_{_slug(run.name)}_{case:02d}"
    a, b = ref.videos[case], run.videos[case]
    _write_mp4(out_dir / f"{stem}.mp4", _side_by_side(a, b, ref.name, run.name, scale=1.0), fps)
    step = math.ceil(a.shape[0] / GIF_MAX_FRAMES)
    scale = GIF_WIDTH / _strip_width(a.shape[2])
    _write_gif(out_dir / f"{stem}.gif", _side_by_side(a[::step], b[::step], ref.name, run.name, scale), fps / step)
    return f"{stem}.mp4", f"{stem}.gif"


def _strip_width(panel_width: int, gap: int = 4) -> int:
    return 3 * panel_width + 2 * gap


def _side_by_side(ref: np.ndarray, test: np.ndarray, ref_name: str, name: str, scale: float) -> np.ndarray:
    """uint8 [F, H', W', 3]: ref | test | |ref - test| x DIFF_GAIN, each panel resized by `scale`,
    labelled, 4 px apart on mid grey, padded to even sizes (yuv420p needs them)."""
    diff = np.minimum(np.abs(ref.astype(np.int16) - test) * DIFF_GAIN, 255).astype(np.uint8)
    panels = [_resize(v, scale) for v in (ref, test, diff)]
    frames, h, w, _ = panels[0].shape
    gap = 4
    out = np.full((frames, h + h % 2, _strip_width(w, gap) + _strip_width(w, gap) % 2, 3), 96, np.uint8)
    labels = (ref_name, name, f"|difference| x{DIFF_GAIN}")
    for i, (panel, label) in enumerate(zip(panels, labels)):
        x = i * (w + gap)
        out[:, :h, x:x + w] = panel
        _label(out[:, :h, x:x + w], label)
    return out


def _resize(video: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return video
    h, w = max(1, round(video.shape[1] * scale)), max(1, round(video.shape[2] * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST
    return np.stack([cv2.resize(f, (w, h), interpolation=interp) for f in video])


def _label(panels: np.ndarray, text: str) -> None:
    """Small white text on a dark box at the top left of every frame of `panels` [F, h, w, 3] (in place)."""
    h, w = panels.shape[1:3]
    scale = float(np.clip(h / 500, 0.4, 0.8))
    text = _clip(text, max(4, int(w / (20 * scale))))
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, 1)
    pad = max(2, th // 3)
    tile = np.zeros((th + base + 2 * pad, min(tw + 2 * pad, w), 3), np.uint8)
    cv2.putText(tile, text, (pad, pad + th), _FONT, scale, _WHITE, 1, cv2.LINE_AA)
    tile = tile[:h]
    # blend the box at 70 % over every frame at once
    region = panels[:, :tile.shape[0], :tile.shape[1]].astype(np.float32)
    panels[:, :tile.shape[0], :tile.shape[1]] = np.maximum(region * 0.3, tile.astype(np.float32)).astype(np.uint8)


def _write_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    """H.264 (libx264 veryfast, yuv420p, CRF 18) through imageio-ffmpeg; frame sizes must be even."""
    import imageio_ffmpeg

    height, width = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), fps=fps, codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
        quality=None, macro_block_size=1, ffmpeg_log_level="error",
        output_params=["-crf", "18", "-preset", "veryfast", "-movflags", "+faststart"],  # veryfast: 3x medium's speed
    )
    writer.send(None)  # start ffmpeg
    try:
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()
    logger.info("wrote %s (%d frames, %dx%d)", path, len(frames), width, height)


def _write_gif(path: Path, frames: np.ndarray, fps: float) -> None:
    import imageio.v3 as iio

    iio.imwrite(path, frames, extension=".gif", duration=round(1000 / fps), loop=0)
    logger.info("wrote %s (%d frames)", path, len(frames))


# ---------------------------------------------------------------------------------------- text
def _fmt_db(value) -> str:
    return "inf" if value == math.inf else f"{value:.2f}"


def _fmt_seconds(value: float) -> str:
    if value >= 100:
        return f"{value:.0f} s"
    return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.1f} ms"


def _summary_table(raw: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows (strings) of the one-row-per-method summary, shared by report.md and report.html."""
    use_lpips = raw["lpips"]["used"]
    header = ["method", "PSNR mean (dB)", "PSNR worst frame", "SSIM mean", "SSIM worst frame",
              *(["LPIPS mean"] if use_lpips else []), "time / step", "total time", "speedup vs dense",
              "density", "fallbacks"]
    rows = []
    for m in raw["methods"]:
        speedup = "n/a" if m["speedup_vs_dense"] is None else f"{m['speedup_vs_dense']:.2f}x"
        rows.append([
            m["name"], _fmt_db(m["psnr_mean"]), _fmt_db(m["psnr_worst_frame"]), f"{m['ssim_mean']:.4f}",
            f"{m['ssim_worst_frame']:.4f}", *([f"{m['lpips']:.4f}"] if use_lpips else []),
            _fmt_seconds(m["seconds_per_step"]), _fmt_seconds(m["seconds_total"]), speedup,
            f"{m['density']:.3f}", str(len(m["fallbacks"])) if m["fallbacks"] else "none",
        ])
    return header, rows


def _case_table(method: dict, cases: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["case", "seed", "prompt", "PSNR mean (dB)", "PSNR worst", "SSIM mean", "SSIM worst"]
    rows = []
    for c, (case, psnr, ssim) in enumerate(zip(cases, method["psnr_per_frame"], method["ssim_per_frame"])):
        psnr, ssim = np.asarray(psnr), np.asarray(ssim)
        rows.append([str(c), str(case["seed"]), _clip(case["prompt"], 80), _fmt_db(_mean(psnr)),
                     _fmt_db(float(psnr.min())), f"{ssim.mean():.4f}", f"{ssim.min():.4f}"])
    return header, rows


def _meta_rows(meta: dict) -> list[tuple[str, str]]:
    """(label, value) pairs: the usual keys first, then any others as compact JSON."""
    known = {"model": "model", "command": "command", "date": "date", "device": "device", "versions": "versions",
             "steps": "denoising steps"}
    rows = []
    for key, label in known.items():
        if key in meta:
            value = meta[key]
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items())
            rows.append((label, str(value)))
    for key, value in meta.items():
        if key not in known:
            rows.append((str(key), value if isinstance(value, str) else json.dumps(_json_safe(value))))
    return rows


def _definitions(raw: dict) -> list[str]:
    ref = raw["methods"][0]["name"]
    command = raw["meta"].get("command")
    lines = [
        (f"PSNR and SSIM compare every frame with {ref} attention on the same prompt and seed; means are over "
         "every frame of every case, worst is the lowest frame. PSNR is inf for identical frames."),
        "SSIM: Gaussian window 11x11, sigma 1.5, K1 0.01, K2 0.03, on BT.601 luma.",
        f"Time / step: wall time of all generations / denoising steps. Speedup: {ref} time per step / the method's.",
        "Density: the realised fraction of attention blocks computed, mean over layers, heads and steps (1 = dense).",
        f"Side-by-side videos: {ref} | method | absolute difference x{DIFF_GAIN}.",
    ]
    if command:
        lines.append(f"Every number here comes from: {command}")
    return lines


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def _md_code(text: str) -> str:
    fence = "``" if "`" in text else "`"
    return f"{fence} {text} {fence}" if fence == "``" else f"`{text}`"


def _markdown(raw: dict, media: _Media) -> str:
    meta, ref = raw["meta"], raw["methods"][0]["name"]
    parts = [f"# vidsparse compare: {meta.get('model', '')}".rstrip(": ")]
    meta_rows = [[k, _md_code(v) if k == "command" else v] for k, v in _meta_rows(meta)]
    parts.append(_md_table(["run", ""], meta_rows))
    parts.append("## Summary\n\n" + _md_table(*_summary_table(raw)))
    parts.append(f"> {raw['lpips']['reason']}")
    parts.append("\n".join(f"- {line}" for line in _definitions(raw)))
    parts.append(f"## Density against quality\n\n![Density against PSNR]({media.tradeoff_plot})")
    parts.append(f"## Quality per frame against {ref}\n\n![PSNR per frame]({media.psnr_plot})\n\n"
                 f"![SSIM per frame]({media.ssim_plot})")
    for method in raw["methods"]:
        parts.append(_md_method(method, raw["cases"], media, ref))
    return "\n\n".join(parts) + "\n"


def _md_method(method: dict, cases: list[dict], media: _Media, ref: str) -> str:
    name = method["name"]
    lines = [f"## {name}", "", f"Config: {_md_code(json.dumps(_json_safe(method['config'])))}", ""]
    lines += [_md_table(*_case_table(method, cases)), ""]
    if method["fallbacks"]:
        lines += ["Fallbacks:", *[f"- {reason}" for reason in method["fallbacks"]], ""]
    lines.append(f"![density per layer and head: {name}]({media.density[name]})")
    if name == ref:
        lines += ["", f"{ref} is the reference every other method is compared with."]
    for c, (mp4, gif) in enumerate(media.side_by_side.get(name, [])):
        case = cases[c]
        lines += ["", f"Case {c} (seed {case['seed']}, \"{_clip(case['prompt'], 80)}\"): [{mp4}]({mp4})", "",
                  f"![{ref} | {name} | difference]({gif})"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- HTML
_CSS = """
body{margin:0;background:#eef1f4;color:#1f2328;font:15px/1.5 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",
Arial,sans-serif}
main{max-width:1120px;margin:0 auto;padding:28px 36px 48px;background:#fff;min-height:100vh}
h1{font-size:26px;margin:0 0 16px}
h2{font-size:20px;margin:36px 0 12px;padding-bottom:4px;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;margin:8px 0 16px;font-size:14px}
th,td{border:1px solid #d0d7de;padding:5px 10px;text-align:left;vertical-align:top}
th{background:#f3f5f7;font-weight:600}
tbody tr:nth-child(even) td{background:#fafbfc}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.meta th{width:150px}
code{font:13px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f3f5f7;padding:1px 5px;
border-radius:4px;overflow-wrap:anywhere}
.note{background:#fff8e1;border:1px solid #ecd9a0;border-radius:6px;padding:8px 12px;margin:12px 0}
ul.defs{color:#57606a;font-size:13.5px;padding-left:20px}
ul.fallbacks li{color:#8a5a00}
figure{margin:14px 0 22px}
figure img{display:block;max-width:100%;height:auto;border:1px solid #d0d7de;border-radius:4px}
figcaption{color:#57606a;font-size:13px;margin-top:4px}
"""


def _data_uri(path: Path) -> str:
    mime = {".png": "image/png", ".gif": "image/gif"}[path.suffix]
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _html_table(header: list[str], rows: list[list[str]], numeric_from: int = 1, cls: str = "") -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(
            f"<td class=\"num\">{esc(v)}</td>" if i >= numeric_from else f"<td>{esc(v)}</td>" for i, v in enumerate(row)
        ) + "</tr>"
        for row in rows
    )
    cls_attr = f' class="{cls}"' if cls else ""
    return f"<table{cls_attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_figure(out_dir: Path, name: str, caption: str) -> str:
    esc = html.escape
    return (f'<figure><img src="{_data_uri(out_dir / name)}" alt="{esc(caption)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def _html(raw: dict, media: _Media, out_dir: Path) -> str:
    esc, meta, ref = html.escape, raw["meta"], raw["methods"][0]["name"]
    title = f"vidsparse compare: {meta.get('model', '')}".rstrip(": ")
    meta_rows = "".join(
        f"<tr><th>{esc(k)}</th><td>{f'<code>{esc(v)}</code>' if k == 'command' else esc(v)}</td></tr>"
        for k, v in _meta_rows(meta)
    )
    body = [
        f"<h1>{esc(title)}</h1>",
        f'<table class="meta"><tbody>{meta_rows}</tbody></table>',
        "<h2>Summary</h2>", _html_table(*_summary_table(raw)),
        f'<p class="note">{esc(raw["lpips"]["reason"])}</p>',
        '<ul class="defs">' + "".join(f"<li>{esc(line)}</li>" for line in _definitions(raw)) + "</ul>",
        f"<h2>Quality per frame against {esc(ref)}</h2>",
        _html_figure(out_dir, media.tradeoff_plot, "Realised attention density against mean PSNR, one point per method"),
        _html_figure(out_dir, media.psnr_plot, f"PSNR per frame against {ref} (inf, identical frames, not drawn)"),
        _html_figure(out_dir, media.ssim_plot, f"SSIM per frame against {ref}"),
        *[_html_method(m, raw["cases"], media, out_dir, ref) for m in raw["methods"]],
    ]
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{_CSS}</style></head>\n"
            f"<body><main>\n" + "\n".join(body) + "\n</main></body></html>\n")


def _html_method(method: dict, cases: list[dict], media: _Media, out_dir: Path, ref: str) -> str:
    esc, name = html.escape, method["name"]
    parts = [f"<h2>{esc(name)}</h2>",
             f"<p>Config: <code>{esc(json.dumps(_json_safe(method['config'])))}</code></p>",
             _html_table(*_case_table(method, cases), numeric_from=3)]
    if method["fallbacks"]:
        parts.append('<p>Fallbacks:</p><ul class="fallbacks">'
                     + "".join(f"<li>{esc(r)}</li>" for r in method["fallbacks"]) + "</ul>")
    parts.append(_html_figure(out_dir, media.density[name], f"Realised attention density and pattern per layer "
                                                            f"and head: {name}"))
    if name == ref:
        parts.append(f"<p>{esc(ref)} is the reference every other method is compared with.</p>")
    for c, (mp4, gif) in enumerate(media.side_by_side.get(name, [])):
        case = cases[c]
        parts.append(_html_figure(out_dir, gif, f"Case {c}, seed {case['seed']}: \u201c{_clip(case['prompt'], 120)}"
                                                f"\u201d. {ref} | {name} | |difference| x{DIFF_GAIN}. Full size, "
                                                f"every frame: {mp4}"))
    return "\n".join(parts)
