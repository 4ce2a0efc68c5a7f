"""The report's figures, drawn with matplotlib on their own Agg canvas (no pyplot state): quality per frame, the
Pareto plot of quality against density and time, and the density and pattern of every layer and head."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from .scores import pareto_front
from .style import clip, pattern_style

__all__ = ["density_figure", "metric_plot", "tradeoff_plot"]

logger = logging.getLogger(__name__)

_MARKERS = "osD^vx"  # one per case, cycling


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


def metric_plot(path: Path, scores: list[dict], cases: list[dict], colours: dict, key: str, ylabel: str,
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
                    label=f"{clip(s['name'], 24)}, case {c}")
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


def tradeoff_plot(path: Path, scores: list[dict], colours: dict) -> None:
    """The Pareto plot: one point per method, mean PSNR against realised attention density (left) and against
    seconds per step where a GPU kernel ran (right), the front (no other method both cheaper and better) joined by
    a dashed line. Identical videos (PSNR inf) are not drawn."""
    fig = _figure(11.5, 4.4)
    ax_density, ax_time = fig.subplots(1, 2)
    finite = [s for s in scores if math.isfinite(float(s["psnr_mean"]))]
    for s in scores:
        density, psnr = float(s["density"]), float(s["psnr_mean"])
        label = f"{clip(s['name'], 18)}: {density:.2f}, " + (f"{psnr:.1f} dB" if math.isfinite(psnr) else "identical")
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


def density_figure(path: Path, name: str, heads: dict, density: float) -> None:
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
