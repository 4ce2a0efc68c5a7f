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

import logging
from pathlib import Path

from ..metrics import lpips_available
from ..runinfo import json_safe
from .figures import density_figure, metric_plot, tradeoff_plot
from .html import render_html
from .markdown import render_markdown
from .scores import (
    FALLBACK_SPEED, MethodRun, choice_shares, dumps_results, pareto_front, score_run, slug, validate_runs,
)
from .style import METHOD_COLOURS, PATTERNS, pattern_style
from .text import ReportMedia
from .videos import DIFF_GAIN, GIF_MAX_FRAMES, GIF_WIDTH, write_side_by_side

__all__ = [
    "DIFF_GAIN", "FALLBACK_SPEED", "GIF_MAX_FRAMES", "GIF_WIDTH", "PATTERNS", "MethodRun", "choice_shares",
    "pareto_front", "pattern_style", "write_compare_report",
]

logger = logging.getLogger(__name__)


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
    validate_runs(cases, runs, fps)
    out_dir.mkdir(parents=True, exist_ok=True)
    use_lpips, lpips_reason = lpips_available()
    scores = [score_run(run, runs[0], use_lpips) for run in runs]
    raw = {"meta": meta, "cases": cases, "methods": scores, "lpips": {"used": use_lpips, "reason": lpips_reason}}
    media = _write_media(out_dir, cases, runs, scores, fps)
    results = json_safe(raw)
    _write_text(out_dir / "results.json", dumps_results(results))
    _write_text(out_dir / "report.md", render_markdown(raw, media))
    _write_text(out_dir / "report.html", render_html(raw, media, out_dir))
    return results


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    logger.info("wrote %s", path)


def _write_media(out_dir: Path, cases: list[dict], runs: list[MethodRun], scores: list[dict],
                 fps: float) -> ReportMedia:
    colours = {run.name: METHOD_COLOURS[i % len(METHOD_COLOURS)] for i, run in enumerate(runs)}
    compared = scores[1:]
    media = ReportMedia(psnr_plot="psnr_per_frame.png", ssim_plot="ssim_per_frame.png",
                         tradeoff_plot="density_vs_psnr.png", density={}, side_by_side={})
    tradeoff_plot(out_dir / media.tradeoff_plot, compared, colours)
    metric_plot(out_dir / media.psnr_plot, compared, cases, colours, "psnr_per_frame", "PSNR (dB)",
                f"PSNR per frame against {runs[0].name}")
    metric_plot(out_dir / media.ssim_plot, compared, cases, colours, "ssim_per_frame", "SSIM",
                f"SSIM per frame against {runs[0].name}")
    for run in runs:
        media.density[run.name] = f"density_{slug(run.name)}.png"
        density_figure(out_dir / media.density[run.name], run.name, run.heads, run.density)
    for run in runs[1:]:
        media.side_by_side[run.name] = [
            write_side_by_side(out_dir, runs[0], run, i, fps) for i in range(len(cases))
        ]
    return media
