"""Timing: stopwatches (CUDA events on a GPU), timed forwards, and the stock SDPA calls timed in situ and replayed."""

from __future__ import annotations

import statistics
import time
import warnings

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = [
    "FAST_SDPA", "SDPARecorder", "Stopwatch", "fast_sdpa", "replay_calls", "run_forward", "stock_attention", "sync",
    "time_forwards",
]

# The fast SDPA list, in priority order (torch.nn.attention.SDPBackend names).
FAST_SDPA = ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION")


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Start/stop marks: CUDA events on a GPU (no sync in between), perf_counter on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def __enter__(self) -> Stopwatch:
        if self.cuda:
            self.start.record()
        else:
            self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            self.end.record()
        else:
            self.t1 = time.perf_counter()

    def ms(self) -> float:
        """Valid after a sync."""
        return self.start.elapsed_time(self.end) if self.cuda else (self.t1 - self.t0) * 1e3


def run_forward(transformer, inputs: dict) -> torch.Tensor:
    """One forward (one denoising step) under inference mode; its output tensor."""
    with torch.inference_mode():
        return transformer(**inputs)[0]


def time_forwards(transformer, inputs: dict, runs: int, device: torch.device) -> list[float]:
    """ms of `runs` forwards queued back to back; the caller has warmed up."""
    watches = []
    for _ in range(runs):
        with Stopwatch(device) as watch:
            run_forward(transformer, inputs)
        watches.append(watch)
    sync(device)
    return [w.ms() for w in watches]


def _time_call(fn, runs: int, device: torch.device) -> float:
    """Median ms of `runs` calls after one untimed call (which raises if the call cannot run)."""
    fn()
    sync(device)
    watches = []
    for _ in range(runs):
        with Stopwatch(device) as watch:
            fn()
        watches.append(watch)
    sync(device)
    return statistics.median(w.ms() for w in watches)


class SDPARecorder(TorchFunctionMode):
    """While active, times every `F.scaled_dot_product_attention` call, per call shape, and can keep the first
    call of each shape to replay it alone. A function mode sees the calls however the caller reaches the function
    (diffusers' processors and its attention dispatcher alike), without rebinding anything."""

    def __init__(self, device: torch.device, capture: bool):
        super().__init__()
        self.device, self.capture = device, capture
        self.calls: list[tuple[str, Stopwatch]] = []
        self.first: dict[str, tuple[tuple, dict]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        key = _call_key(args, kwargs)
        if self.capture and key not in self.first:
            self.first[key] = (args, kwargs)
        with Stopwatch(self.device) as watch:
            out = func(*args, **kwargs)
        self.calls.append((key, watch))
        return out

    def times(self) -> dict[str, list[float]]:
        """Per call shape, the ms of every call (valid after a sync)."""
        shapes: dict[str, list[float]] = {}
        for key, watch in self.calls:
            shapes.setdefault(key, []).append(watch.ms())
        return shapes


def _call_key(args, kwargs) -> str:
    q = kwargs.get("query", args[0] if args else None)
    k = kwargs.get("key", args[1] if len(args) > 1 else None)
    mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
    m = "none" if mask is None else f"{tuple(mask.shape)} {str(mask.dtype).removeprefix('torch.')}"
    return f"q{tuple(q.shape)} k{tuple(k.shape)} {str(q.dtype).removeprefix('torch.')} mask {m}"


def fast_sdpa(backends: tuple[str, ...]):
    """`sdpa_kernel` over these SDPBackend names, in this priority order."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, name) for name in backends], set_priority=True)


def replay_calls(first: dict[str, tuple[tuple, dict]], runs: int, device: torch.device) -> dict[str, dict]:
    """Per captured call shape: the median ms of the call alone with torch's default backend choice, and with
    each FAST_SDPA backend alone (or why that backend refused it); `fast` is the first that accepts, the backend
    the fast-SDPA variant runs ("MATH" when none does). Frees the captured q, k, v."""
    out = {}
    for key, (args, kwargs) in first.items():
        def call(args=args, kwargs=kwargs):
            with torch.inference_mode():  # q, k, v are inference tensors of the warm-up
                return F.scaled_dot_product_attention(*args, **kwargs)

        row = {"default_ms": _time_call(call, runs, device), "backends": {}}
        for name in FAST_SDPA:
            with warnings.catch_warnings(record=True) as caught, fast_sdpa((name,)):
                warnings.simplefilter("always")
                try:
                    row["backends"][name] = {"ms": _time_call(call, runs, device)}
                except RuntimeError as exc:  # torch found no kernel: its warnings say why
                    reasons = [str(w.message) for w in caught] or [str(exc).splitlines()[0]]
                    row["backends"][name] = {"refused": " ".join(" ".join(reasons).split())[:300]}
        row["fast"] = next((n for n in FAST_SDPA if "ms" in row["backends"][n]), "MATH")
        out[key] = row
    first.clear()
    return out


def stock_attention(warm: SDPARecorder, replay: dict[str, dict], timed: SDPARecorder, forwards: int) -> dict:
    """Attention time of one stock step: in situ (median per call shape over the timed forwards x calls per
    forward) and replayed (each call shape alone x calls per forward), with each shape's backends."""
    in_situ = timed.times()
    rows = []
    for key, times in warm.times().items():
        calls, situ = len(times), in_situ.get(key, [])
        rows.append({
            "shape": key, "calls": calls, "in_situ_ms": statistics.median(situ) if situ else None,
            "in_situ_calls": len(situ), "expected_in_situ_calls": calls * forwards, **replay[key],
        })
    return {
        "calls": sum(r["calls"] for r in rows),
        "in_situ_ms": sum(r["calls"] * (r["in_situ_ms"] or 0.0) for r in rows),
        "replay_ms": sum(r["calls"] * r["default_ms"] for r in rows),
        "shapes": rows,
    }
