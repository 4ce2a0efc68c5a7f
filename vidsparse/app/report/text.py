"""What report.md and report.html both say: the media they show, the summary and per-case tables, the run's
metadata, the definitions of every term, and the numbers formatted once for both."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from ..runinfo import json_safe
from .scores import FALLBACK_SPEED, frame_mean
from .style import PATTERNS, clip, pattern_style
from .videos import DIFF_GAIN

__all__ = [
    "ReportMedia", "case_table", "choices_table", "definitions", "fmt_db", "fmt_seconds", "meta_rows",
    "summary_table",
]


@dataclass
class ReportMedia:
    """File names (relative to the report folder) of what `_write_media` wrote."""

    psnr_plot: str
    ssim_plot: str
    tradeoff_plot: str
    density: dict[str, str]                          # method -> png
    side_by_side: dict[str, list[tuple[str, str]]]   # method -> [(mp4, gif) per case]; not the reference


def fmt_db(value) -> str:
    return "inf" if value == math.inf else f"{value:.2f}"


def fmt_seconds(value: float) -> str:
    if value >= 100:
        return f"{value:.0f} s"
    return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.1f} ms"


def summary_table(raw: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows (strings) of the one-row-per-method summary, shared by report.md and report.html."""
    use_lpips = raw["lpips"]["used"]
    header = ["method", "PSNR mean (dB)", "PSNR worst frame", "SSIM mean", "SSIM worst frame",
              *(["LPIPS mean"] if use_lpips else []), "time / step (median)", "total time", "speed vs dense",
              "density", "attention ran on"]
    rows = []
    for m in raw["methods"]:
        rows.append([
            m["name"], fmt_db(m["psnr_mean"]), fmt_db(m["psnr_worst_frame"]), f"{m['ssim_mean']:.4f}",
            f"{m['ssim_worst_frame']:.4f}", *([f"{m['lpips']:.4f}"] if use_lpips else []),
            fmt_seconds(m["seconds_per_step"]), fmt_seconds(m["seconds_total"]), m["speed"],
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


def case_table(method: dict, cases: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["case", "seed", "prompt", "PSNR mean (dB)", "PSNR worst", "SSIM mean", "SSIM worst"]
    rows = []
    for c, (case, psnr, ssim) in enumerate(zip(cases, method["psnr_per_frame"], method["ssim_per_frame"])):
        psnr, ssim = np.asarray(psnr), np.asarray(ssim)
        rows.append([str(c), str(case["seed"]), clip(case["prompt"], 80), fmt_db(frame_mean(psnr)),
                     fmt_db(float(psnr.min())), f"{ssim.mean():.4f}", f"{ssim.min():.4f}"])
    return header, rows


def choices_table(method: dict):
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


def meta_rows(meta: dict) -> list[tuple[str, str]]:
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
            rows.append((str(key), value if isinstance(value, str) else json.dumps(json_safe(value))))
    return rows


def definitions(raw: dict) -> list[str]:
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
