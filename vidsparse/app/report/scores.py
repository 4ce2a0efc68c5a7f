"""The numbers of a report: one `MethodRun` per method, checked, then scored against the reference (dense) frame
by frame; the Pareto front, the share of each head's choices, and results.json's text."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

import numpy as np

from ..metrics import lpips_per_frame, psnr_per_frame, ssim_per_frame

__all__ = [
    "FALLBACK_SPEED", "MethodRun", "choice_shares", "dumps_results", "frame_mean", "pareto_front", "score_run",
    "slug", "validate_runs",
]


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


def validate_runs(cases: list[dict], runs: list[MethodRun], fps: float) -> None:
    if not runs:
        raise ValueError("runs is empty: give at least the dense run (the reference)")
    if not cases:
        raise ValueError("cases is empty: give one {'prompt', 'seed'} per video")
    if not isinstance(fps, (int, float)) or not fps > 0:
        raise ValueError(f"fps must be a number > 0; got {fps!r}")
    for i, case in enumerate(cases):
        if not isinstance(case, dict) or "prompt" not in case or "seed" not in case:
            raise ValueError(f"cases[{i}] must be a dict with 'prompt' and 'seed'; got {case!r}")
    slugs = [slug(run.name) for run in runs]
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


def slug(name: str) -> str:
    """`name` as a file-name part: anything but letters, digits, '.', '_' and '-' becomes '-'."""
    if not name:
        raise ValueError("a method name is empty")
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def score_run(run: MethodRun, ref: MethodRun, use_lpips: bool) -> dict:
    """The results entry of one method (floats, +inf for identical frames; made JSON-safe later)."""
    psnr = [psnr_per_frame(a, b) for a, b in zip(ref.videos, run.videos)]
    ssim = [ssim_per_frame(a, b) for a, b in zip(ref.videos, run.videos)]
    lpips = np.concatenate([lpips_per_frame(a, b) for a, b in zip(ref.videos, run.videos)]) if use_lpips else None
    all_psnr, all_ssim = np.concatenate(psnr), np.concatenate(ssim)
    return {
        "name": run.name,
        "config": run.config,
        "psnr_mean": frame_mean(all_psnr),
        "psnr_worst_frame": float(all_psnr.min()),
        "ssim_mean": frame_mean(all_ssim),
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
        "lpips": None if lpips is None else frame_mean(lpips),
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


def frame_mean(values: np.ndarray) -> float:
    """Mean; +inf as soon as one value is +inf (numpy would agree, but say it outright)."""
    return math.inf if np.isposinf(values).any() else float(values.mean())


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if num > 0 and den > 0 else None


_NUMBER = r'(?:-?\d[\d.eE+-]*|"-?inf"|null)'
_NUMBER_LIST = re.compile(rf"\[\s*({_NUMBER}(?:,\s*{_NUMBER})*)\s*\]")


def dumps_results(results: dict) -> str:
    """Indented JSON with every list of numbers on one line (per-frame lists stay readable)."""
    text = json.dumps(results, indent=2)
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text) + "\n"


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
