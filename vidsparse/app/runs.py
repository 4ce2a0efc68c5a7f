"""One method's generations: install it on the pipeline, generate every (prompt, seed) case, time every denoising
step, and remove it again. `vidsparse generate` and `vidsparse compare` run each method through `run_method`."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .configs import MethodPlan

__all__ = ["MethodResult", "gpu_kernel_ran", "run_method"]


@dataclass
class MethodResult:
    """What one method's generations gave: the videos, the handle's report, and the time of every step.

    Attributes:
        seconds_total: wall time of every generation (text encoding and decoding included).
        step_seconds: the duration of every denoising step but each video's first (from one step's end to the
            next's; the first also holds the text encoding). Empty when each video has one step, or when the
            pipeline takes no `callback_on_step_end` (HunyuanVideo-1.5).
        steps_per_video: the denoising steps of each video where `step_seconds` could not be measured (None: 1).
    """

    videos: list[np.ndarray]
    seconds_total: float
    step_seconds: list[float]
    report: dict
    steps_per_video: int | None = None

    @property
    def seconds_per_step(self) -> float:
        """The median step; without step times, the mean over the whole generations (decoding included)."""
        if self.step_seconds:
            return float(statistics.median(self.step_seconds))
        steps = max(1, len(self.videos)) * (self.steps_per_video or 1)
        return self.seconds_total / steps


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _generate(pipe, prompt: str, seed: int, kwargs: dict, desc: str, marks: list[float]) -> np.ndarray:
    """One video as uint8 [F, H, W, 3]; appends the time at the end of every denoising step to `marks`."""

    def on_step_end(pipeline, step, timestep, callback_kwargs):
        _sync()
        marks.append(time.perf_counter())
        return {}

    generator = torch.Generator(device="cpu").manual_seed(seed)
    pipe.set_progress_bar_config(desc=desc, leave=False)
    if _takes_step_callback(pipe):
        kwargs = {**kwargs, "callback_on_step_end": on_step_end}
    with torch.inference_mode():
        frames = pipe(prompt=prompt, generator=generator, output_type="np", **kwargs).frames[0]
    return (np.clip(np.asarray(frames, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _takes_step_callback(pipe) -> bool:
    import inspect

    return "callback_on_step_end" in inspect.signature(type(pipe).__call__).parameters


def run_method(pipe, plan: MethodPlan, cases: list[dict], kwargs: dict, prepare=None) -> MethodResult:
    """Generate every case with one method installed; the handle is removed before returning. `prepare(pipe)`, if
    given, runs once after installation (context parallelism goes on there)."""
    import vidsparse

    handle = vidsparse.apply(pipe, plan.config)
    try:
        if prepare is not None:
            prepare(pipe)
        videos, steps, start = [], [], time.perf_counter()
        for i, case in enumerate(cases):
            marks: list[float] = []
            videos.append(_generate(pipe, case["prompt"], case["seed"], kwargs,
                                    f"{plan.name} {i + 1}/{len(cases)}", marks))
            steps += [b - a for a, b in zip(marks, marks[1:])]
        _sync()
        return MethodResult(videos, time.perf_counter() - start, steps, handle.report(),
                            None if _takes_step_callback(pipe) else kwargs.get("num_inference_steps"))
    finally:
        handle.remove()


def gpu_kernel_ran(plan: MethodPlan, result: MethodResult, device) -> bool:
    """Whether a sparse method's times measure the Triton kernel: a CUDA device and no fallback."""
    return torch.device(device).type == "cuda" and not result.report["fallbacks"]
