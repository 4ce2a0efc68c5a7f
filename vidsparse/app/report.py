"""Everything `vidsparse compare` writes: per-frame quality against dense, speed, density, media.

`write_compare_report` takes one `MethodRun` per method (the first is dense, the reference) over the
same (prompt, seed) cases and writes into one folder:

    report.md                          the report, with images and videos referenced by relative path
    report.html                        the same report, self-contained: inline CSS, every image and
                                       animation inlined as a base64 data: URI (opens offline)
    results.json                       every number of the report (the dict the function returns)
    density_vs_psnr.png                the Pareto plot: mean PSNR against realised density and, where a GPU
                                       ran, against seconds per step; one point per method, the front dashed
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
        dense on the same prompt and seed (`vidsparse.app.metrics`); *_worst_frame is the lowest frame.
    Infinities: an identical frame has PSNR +inf. results.json and the returned dict write every
        infinity as the string "inf" (and -inf as "-inf"; a NaN as null); nothing else is a string
        where a number is expected. A mean that includes an identical frame is "inf" too, so dense
        against dense gives "inf" and SSIM 1.0.
    seconds_per_step: the median denoising step (`MethodRun.step_samples` steps), or total / steps.
    speedup_vs_dense: dense seconds per step / the method's seconds per step; null if either is 0, or when the
        method did not run vidsparse's GPU kernel (`MethodRun.gpu_kernel`): then "speed" says
        "fallback (no GPU kernel)" instead of a ratio.
    Figures are drawn with matplotlib (no pyplot state); pattern letters and colours come from one table,
        `PATTERNS`, so that a letter means the same in every figure.
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
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .media import write_video
from .metrics import lpips_available, lpips_per_frame, psnr_per_frame, ssim_per_frame
from .runinfo import json_safe as _json_safe

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
        notes: what the run changed or could not do (a scaled warm-up, a method that ran dense throughout).
        gpu_kernel: whether its times measure vidsparse's GPU kernel; False for a sparse method that ran the
            PyTorch fallback (no CUDA device, or a fallback reason), whose speed is then not compared.
        step_samples: how many denoising steps `seconds_per_step` is the median of (0: total / steps).
    """

    name: str
    config: dict
    videos: list[np.ndarray]
    seconds_total: float
    seconds_per_step: float
    density: float
    heads: dict = field(default_factory=dict)
    fallbacks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    gpu_kernel: bool = True
    step_samples: int = 0


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
        "speedup_vs_dense": _ratio(ref.seconds_per_step, run.seconds_per_step) if run.gpu_kernel else None,
        "speed": _speed(run, ref),
        "density": float(run.density),
        "heads": run.heads,
        "fallbacks": list(run.fallbacks),
        "notes": list(run.notes),
        "step_samples": int(run.step_samples),
        "lpips": None if lpips is None else _mean(lpips),
    }


FALLBACK_SPEED = "fallback (no GPU kernel)"


def _speed(run: MethodRun, ref: MethodRun) -> str:
    """The speed column: the ratio of median step times, or why there is none."""
    if run is ref:
        return "reference"
    if not run.gpu_kernel:
        return FALLBACK_SPEED
    ratio = _ratio(ref.seconds_per_step, run.seconds_per_step)
    return "n/a" if ratio is None else f"{ratio:.2f}x"


def _mean(values: np.ndarray) -> float:
    """Mean; +inf as soon as one value is +inf (numpy would agree, but say it outright)."""
    return math.inf if np.isposinf(values).any() else float(values.mean())


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if num > 0 and den > 0 else None


_NUMBER = r'(?:-?\d[\d.eE+-]*|"-?inf"|null)'
_NUMBER_LIST = re.compile(rf"\[\s*({_NUMBER}(?:,\s*{_NUMBER})*)\s*\]")


def _dumps(results: dict) -> str:
    """Indented JSON with every list of numbers on one line (per-frame lists stay readable)."""
    text = json.dumps(results, indent=2)
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text) + "\n"


# ---------------------------------------------------------------------------------------- media
def _write_media(out_dir: Path, cases: list[dict], runs: list[MethodRun], scores: list[dict], fps: float) -> _Media:
    colours = {run.name: _METHOD_COLOURS[i % len(_METHOD_COLOURS)] for i, run in enumerate(runs)}
    compared = scores[1:]
    media = _Media(psnr_plot="psnr_per_frame.png", ssim_plot="ssim_per_frame.png",
                   tradeoff_plot="density_vs_psnr.png", density={}, side_by_side={})
    _tradeoff_plot(out_dir / media.tradeoff_plot, compared, colours)
    _metric_plot(out_dir / media.psnr_plot, compared, cases, colours, "psnr_per_frame", "PSNR (dB)",
                 f"PSNR per frame against {runs[0].name}")
    _metric_plot(out_dir / media.ssim_plot, compared, cases, colours, "ssim_per_frame", "SSIM",
                 f"SSIM per frame against {runs[0].name}")
    for run in runs:
        media.density[run.name] = f"density_{_slug(run.name)}.png"
        _density_figure(out_dir / media.density[run.name], run.name, run.heads, run.density)
    for run in runs[1:]:
        media.side_by_side[run.name] = [
            _write_side_by_side(out_dir, runs[0], run, i, fps) for i in range(len(cases))
        ]
    return media


# ---------------------------------------------------------------------------------------- figures (matplotlib)
# tab10: one colour per method, by its position in `runs` (the same in every figure of a report)
_METHOD_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                   "#bcbd22", "#17becf"]
_MARKERS = "osD^vx"  # one per case, cycling

# One legend for every figure and every report: a head's pattern family -> (letter, colour, meaning).
# A union of families ("spatial+temporal") is drawn with its letters joined ("S+T") in the mean of their colours.
PATTERNS = {
    "dense": ("D", "#c7c7c7", "dense: the stock attention call ran (a warm-up step or layer, or the dense method)"),
    "full": ("F", "#7f7f7f", "full: the head's searched pattern keeps every key; vidsparse's kernel runs it"),
    "spatial": ("S", "#1f77b4", "spatial: keys of the query's own frame (and its neighbours)"),
    "temporal": ("T", "#ff7f0e", "temporal: keys at the query's own position in other frames"),
    "stripe": ("V", "#2ca02c", "stripe: a few key columns (sink frames or measured top blocks) for every query"),
    "skip": ("0", "#ffffff", "skip: the head's video-to-video attention is left out (text keys only)"),
    "sparse": ("X", "#8c564b", "sparse: a mask the method chose (no family recorded)"),
    "static": ("P", "#17becf", "static: the head's searched pattern, chosen at run time (hybrid method)"),
    "refresh": ("R", "#9467bd", "refresh: full attention that refreshes the head's cached delta (delta method)"),
    "delta": ("C", "#e377c2", "delta: the head's top key columns recomputed, the rest from its cache (delta method)"),
}


def pattern_style(name: str) -> tuple[str, tuple[float, float, float]]:
    """(letter, RGB colour in 0..1) of a pattern family name; the same wherever the name appears."""
    from matplotlib.colors import to_rgb

    parts = [p for p in name.split("+") if p]
    if not parts:
        return "", (0.96, 0.96, 0.96)
    letters, colours = [], []
    for part in parts:
        if part in PATTERNS:
            letter, colour, _ = PATTERNS[part]
        else:  # a family this report does not know: a stable colour from its name
            letter, colour = part[:1].upper(), _METHOD_COLOURS[zlib.crc32(part.encode()) % len(_METHOD_COLOURS)]
        letters.append(letter)
        colours.append(to_rgb(colour))
    return "+".join(letters), tuple(float(np.mean(c)) for c in zip(*colours))


def _figure(width: float, height: float):
    """A matplotlib Figure on its own Agg canvas (no pyplot, no global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    fig.savefig(path, format="png", facecolor="white")
    logger.info("wrote %s", path)


def _metric_plot(path: Path, scores: list[dict], cases: list[dict], colours: dict, key: str, ylabel: str,
                 title: str) -> None:
    """One line per (method, case): colour = method, marker = case; infinite values are not drawn."""
    fig = _figure(9.6, 4.4)
    ax = fig.add_subplot()
    drawn = False
    for s in scores:
        for c, values in enumerate(s[key]):
            values = np.asarray(values, float)
            finite = np.where(np.isfinite(values), values, np.nan)
            drawn |= bool(np.isfinite(finite).any())
            ax.plot(np.arange(len(values)), finite, color=colours[s["name"]], lw=2, marker=_MARKERS[c % len(_MARKERS)],
                    markevery=max(1, math.ceil(len(values) / 30)), ms=5,
                    label=f"{_clip(s['name'], 24)}, case {c}")
    if not drawn:
        message = "nothing to draw: no method to compare" if not scores else "every frame is identical to the reference"
        ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", color="0.4")
    else:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title="method, case (marker)",
                  title_fontsize=8, frameon=False)
    ax.set(title=title, xlabel="frame", ylabel=ylabel)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    _save(fig, path)


def _tradeoff_plot(path: Path, scores: list[dict], colours: dict) -> None:
    """The Pareto plot: one point per method, mean PSNR against realised attention density (left) and against
    seconds per step where a GPU kernel ran (right), the front (no other method both cheaper and better) joined by
    a dashed line. Identical videos (PSNR inf) are not drawn."""
    fig = _figure(11.5, 4.4)
    ax_density, ax_time = fig.subplots(1, 2)
    finite = [s for s in scores if math.isfinite(float(s["psnr_mean"]))]
    for s in scores:
        density, psnr = float(s["density"]), float(s["psnr_mean"])
        label = f"{_clip(s['name'], 18)}: {density:.2f}, " + (f"{psnr:.1f} dB" if math.isfinite(psnr) else "identical")
        ax_density.plot([density] if math.isfinite(psnr) else [], [psnr] if math.isfinite(psnr) else [], "o", ms=9,
                        color=colours[s["name"]], label=label)
    _front(ax_density, [(float(s["density"]), float(s["psnr_mean"])) for s in finite])
    timed = [s for s in finite if s.get("speedup_vs_dense") is not None]
    for s in timed:
        ax_time.plot([s["seconds_per_step"]], [float(s["psnr_mean"])], "o", ms=9, color=colours[s["name"]])
    _front(ax_time, [(s["seconds_per_step"], float(s["psnr_mean"])) for s in timed])
    if not timed:
        ax_time.text(0.5, 0.5, "no GPU run:\ntimes on a CPU measure\nthe PyTorch fallback, not the kernel",
                     transform=ax_time.transAxes, ha="center", va="center", color="0.4")
        ax_time.set(xticks=[], yticks=[])
    if not finite:
        ax_density.text(0.5, 0.5, "nothing to draw", transform=ax_density.transAxes, ha="center", va="center",
                        color="0.4")
    if scores:
        fig.legend(*ax_density.get_legend_handles_labels(), loc="outside right center", fontsize=8, title="method",
                   title_fontsize=8, frameon=False)
    ax_density.set(title="PSNR against realised density", xlabel="realised attention density", ylabel="PSNR (dB)",
                   xlim=(0, 1.02))
    ax_time.set(title="PSNR against time per step (GPU runs)", xlabel="seconds per denoising step",
                ylabel="PSNR (dB)")
    for ax in (ax_density, ax_time):
        ax.grid(alpha=0.3)
    _save(fig, path)


def choice_shares(report: dict) -> dict[str, float]:
    """The share of (layer, head, call) counts that ran each label, from a handle's report (`report["heads"]
    ["choices"]`): the per-head method map summed into one line (the dense warm-up counts as "dense")."""
    counts: dict[str, float] = {}
    for layer in report["heads"]["choices"]:
        for head in layer:
            for label, n in head.items():
                counts[label] = counts.get(label, 0.0) + n
    total = sum(counts.values())
    return {k: v / total for k, v in sorted(counts.items(), key=lambda kv: -kv[1])} if total else {}


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both cost (x, lower is better) and quality (y, higher), by cost."""
    front = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def _front(ax, points: list[tuple[float, float]]) -> None:
    front = pareto_front(points)
    if len(front) > 1:
        ax.plot(*zip(*front), "--", color="0.35", linewidth=1, zorder=0, label=None)


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


def _density_figure(path: Path, name: str, heads: dict, density: float) -> None:
    """Density per layer (rows) and head (columns) on a fixed 0..1 viridis scale, beside each head's pattern
    (colour + letter, from the one `PATTERNS` legend) and the legend of the patterns present."""
    grid, names = _head_grid(heads)
    if grid.size == 0:
        fig = _figure(6.4, 2.0)
        fig.text(0.03, 0.65, f"{name}: attention density {density:.3f}", fontsize=12)
        fig.text(0.03, 0.3, "no per-layer, per-head densities were recorded", color="0.4")
        _save(fig, path)
        return
    layers, n_heads = grid.shape
    patterns = sorted({p for p in names.flat if p})
    height = float(np.clip(0.32 * layers + 1.6 + 0.22 * len(patterns), 2.6, 19))
    width = float(np.clip(0.5 * n_heads * 2 + 3.5, 7.2, 19))
    fig = _figure(width, height)
    axes = fig.subplots(1, 2)
    fig.suptitle(f"{name}: realised attention density per layer and head (mean {density:.3f})", fontsize=11)
    image = axes[0].imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=0, vmax=1, aspect="auto",
                           interpolation="nearest")
    fig.colorbar(image, ax=axes[0], fraction=0.08, label="density")
    rgb = np.full((layers, n_heads, 3), 0.96)
    for (layer, head), pattern in np.ndenumerate(names):
        if pattern:
            letter, colour = pattern_style(pattern)
            rgb[layer, head] = colour
            if layers <= 48 and n_heads <= 48:
                ink = "black" if sum(colour) / 3 > 0.55 else "white"
                axes[1].text(head, layer, letter, ha="center", va="center", fontsize=7, color=ink)
    axes[1].imshow(rgb, aspect="auto", interpolation="nearest")
    for ax, title in zip(axes, ("density", "pattern")):
        ax.set(title=title, xlabel="head", ylabel="layer")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.yaxis.get_major_locator().set_params(integer=True)
    if patterns:
        from matplotlib.patches import Patch

        handles = [Patch(facecolor=pattern_style(p)[1], edgecolor="0.5", label=f"{pattern_style(p)[0]}  {p}")
                   for p in patterns]
        fig.legend(handles=handles, loc="outside lower center", ncol=min(4, len(handles)), fontsize=8,
                   frameon=False)
    _save(fig, path)


def _clip(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n - 3] + "..."


# ------------------------------------------------------------------ side-by-side videos

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE = (255, 255, 255)
def _write_side_by_side(out_dir: Path, ref: MethodRun, run: MethodRun, case: int, fps: float) -> tuple[str, str]:
    """Write the mp4 (full size, every frame) and the GIF (small) of one case; return their names."""
    stem = f"side_by_side_{_slug(run.name)}_{case:02d}"
    a, b = ref.videos[case], run.videos[case]
    write_video(out_dir / f"{stem}.mp4", _side_by_side(a, b, ref.name, run.name, scale=1.0), fps)
    step = math.ceil(a.shape[0] / GIF_MAX_FRAMES)
    scale = GIF_WIDTH / _strip_width(a.shape[2])
    write_video(out_dir / f"{stem}.gif", _side_by_side(a[::step], b[::step], ref.name, run.name, scale), fps / step)
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
              *(["LPIPS mean"] if use_lpips else []), "time / step (median)", "total time", "speed vs dense",
              "density", "attention ran on"]
    rows = []
    for m in raw["methods"]:
        rows.append([
            m["name"], _fmt_db(m["psnr_mean"]), _fmt_db(m["psnr_worst_frame"]), f"{m['ssim_mean']:.4f}",
            f"{m['ssim_worst_frame']:.4f}", *([f"{m['lpips']:.4f}"] if use_lpips else []),
            _fmt_seconds(m["seconds_per_step"]), _fmt_seconds(m["seconds_total"]), m["speed"],
            f"{m['density']:.3f}" + (" (ran dense)" if _ran_dense(m) else ""), _ran_on(m),
        ])
    return header, rows


def _ran_dense(method: dict) -> bool:
    return (method.get("config") or {}).get("method", "dense") != "dense" and method["density"] >= 1.0


def _ran_on(method: dict) -> str:
    """Where a method's attention ran, in words (the fallback reasons are listed in its section)."""
    if method["fallbacks"]:
        return "PyTorch fallback (reasons in its section)"
    if (method.get("config") or {}).get("method", "dense") == "dense":
        return "stock attention"
    return "Triton kernel" if method["speed"] != FALLBACK_SPEED else "Triton interpreter (CPU)"


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
        (f"Time / step: the median duration of the denoising steps of every generation (each video's first step, "
         f"which also encodes the text, left out). Speed vs {ref}: {ref}'s time per step / the method's, given only "
         f"where the method ran vidsparse's GPU kernel; \"{FALLBACK_SPEED}\" marks a sparse method that ran the "
         "PyTorch fallback (or Triton's interpreter) off the GPU, whose times measure nothing about the kernel."),
        ("Density: the realised fraction of attention blocks computed, mean over layers, heads and steps (1 = all; "
         "a sparse method at 1.000 ran dense, e.g. because its warm-up covered every step)."),
        "Patterns (the heat maps' right panels, the same letters and colours in every figure): "
        + "; ".join(f"{letter} = {meaning}" for letter, _, meaning in PATTERNS.values()) + ".",
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


def _choices_table(method: dict):
    """(header, rows) of how often each head ran each choice, one row per layer, for a method whose heads chose
    between several (profile: spatial / temporal / dense; delta: refresh / delta); None otherwise. A cell reads
    "S 12 T 3 D 5": the letter of the one legend and the calls (fractional where batch elements differed)."""
    choices = (method.get("heads") or {}).get("choices") or []
    if not any(len(head) > 1 for layer in choices for head in layer):
        return None
    n_heads = max(len(layer) for layer in choices)
    header = ["layer", *[f"head {h}" for h in range(n_heads)]]
    rows = []
    for layer, heads in enumerate(choices):
        cells = [" ".join(f"{pattern_style(name)[0]} {count:g}" for name, count in sorted(head.items()))
                 for head in heads]
        rows.append([str(layer), *cells, *[""] * (n_heads - len(cells))])
    return header, rows


def _md_method(method: dict, cases: list[dict], media: _Media, ref: str) -> str:
    name = method["name"]
    lines = [f"## {name}", "", f"Config: {_md_code(json.dumps(_json_safe(method['config'])))}", ""]
    lines += [_md_table(*_case_table(method, cases)), ""]
    table = _choices_table(method)
    if table is not None:
        lines += ["How often each head ran each choice (calls, every step counted):", "", _md_table(*table), ""]
    if method["notes"]:
        lines += ["Notes:", *[f"- {note}" for note in method["notes"]], ""]
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
        "<h2>Density against quality</h2>",
        _html_figure(out_dir, media.tradeoff_plot, "Realised attention density against mean PSNR, one point per method"),
        f"<h2>Quality per frame against {esc(ref)}</h2>",
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
    table = _choices_table(method)
    if table is not None:
        parts += ["<p>How often each head ran each choice (calls, every step counted):</p>", _html_table(*table)]
    if method["notes"]:
        parts.append('<p>Notes:</p><ul class="fallbacks">'
                     + "".join(f"<li>{esc(n)}</li>" for n in method["notes"]) + "</ul>")
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
