"""`vidsparse bench`: one denoising step of full-size video transformers, stock diffusers against vidsparse.

Each model is built from its published config with random weights (the model's own init), directly on the GPU
in the run's dtype: nothing is downloaded, and a 14B model never passes through the CPU or float32. It then
runs one transformer forward (one denoising step) on random inputs shaped as its diffusers pipeline feeds them,
the same inputs for every variant:

    stock                 diffusers' own processors, with torch's default SDPA backend choice
    stock, fast SDPA      the same forward under `sdpa_kernel([cuDNN, flash, efficient], set_priority=True)`:
                          torch runs the first backend of the list that accepts each call. HunyuanVideo passes
                          a boolean text-padding mask, which flash refuses; the backend that ran each call shape
                          is reported, and the math backend joins the list only if no fast one accepts a shape.
    vidsparse dense       `vidsparse.apply(transformer, "dense")`: vidsparse's processors, stock attention calls
    each --methods entry  `vidsparse.apply(transformer, SparseConfig(...))`, warm-up steps dropped (see below)

Per variant: one warm-up forward (it compiles the Triton kernels) whose output is compared with stock's (max abs
and relative L2 error), then the median of N timed forwards (CUDA events, all under `torch.inference_mode()`),
peak memory over the timed forwards, and for vidsparse the realised attention density from `handle.report()`.

The attention share of the stock step is measured two ways: CUDA events around every
`F.scaled_dot_product_attention` call during the stock timed forwards (median per call shape x calls per step),
and each call shape replayed alone on the inputs captured in the warm-up. The replay also times each fast SDPA
backend alone on that call, which is how the backend of the fast-SDPA variant is known.

Methods (`--methods`, a comma list): a `SparseConfig` preset name (`spatial`, `temporal`), optionally with
fields replaced, `NAME:FIELD=VALUE,FIELD=VALUE` (`spatial:frames=2,q_block=64`). `density=D` is a bench-only
field: it picks the window (spatial frames, temporal radius) whose mask density on the model's token layout is
closest to D. A benchmark of one step times a sparse step, so the presets' `warmup_steps` are set to 0 (and a
method that asks for warm-up steps is refused).

Between variants `handle.remove()` must restore the stock processors and hooks exactly; after the last removal
the stock forward runs again and is compared with the first (`--recheck each`: after every removal). With
`--budget-s`, the timed forwards are cut (to one per variant at least) so the run ends in time; models run in
the order given, so put the expensive ones last.

`--dry-run` builds a tiny version of every model family (2 heads, 1-2 layers) in float32 on the CPU, with the
Triton kernels in the interpreter, and runs the whole flow: it tests the benchmark, it measures nothing.

Example::

    vidsparse bench --models cogvideox-5b,hunyuanvideo --methods spatial,spatial:density=0.1,temporal
    vidsparse bench --dry-run --out /tmp/bench
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import platform
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .config import PRESETS, SparseConfig
from .layout import TokenLayout

logger = logging.getLogger(__name__)

__all__ = [
    "FAST_SDPA", "MODELS", "BenchError", "MethodSpec", "ModelSpec", "Video", "add_arguments", "add_parser",
    "build_transformer", "mask_density", "method_config", "parse_methods", "run",
]

GIB = 2**30
# Every model here patches 2 x 2 after its VAE's 8x spatial compression.
PIXEL_MULTIPLE = 16
# The fast SDPA list, in priority order (torch.nn.attention.SDPBackend names).
FAST_SDPA = ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION")
DRY_RUN_BLOCK = 16  # mask blocks of the tiny models: half a tiny frame
DRY_RUN_NAMES = ("bench-dry-run.md", "bench-dry-run.json")
NAMES = ("bench.md", "bench.json")


class BenchError(ValueError):
    """A usage error: an unknown model or method, a bad size, no GPU."""


# ---------------------------------------------------------------------------------------------- models
@dataclass(frozen=True)
class Video:
    """A generation size in pixel space, as a user gives it to the pipeline."""

    frames: int
    height: int
    width: int

    def latent(self, patch_t: int = 1) -> tuple[int, int, int]:
        """(T, H, W) of the latent the pipeline feeds the transformer: the VAEs compress time 4x (first frame
        kept) and space 8x, and CogVideoX1.5's pipeline pads T to a multiple of its temporal patch."""
        t = (self.frames - 1) // 4 + 1
        return t + (-t % patch_t), self.height // 8, self.width // 8

    def __str__(self) -> str:
        return f"{self.frames} frames at {self.height}x{self.width}"


@dataclass(frozen=True)
class ModelSpec:
    """How to build one transformer and feed it one denoising step.

    Attributes:
        cls_name: the diffusers transformer class.
        config: its full-size config (the class defaults fill the rest); `tiny` overrides it for --dry-run.
        video, quick_video: the default generation size, and the smaller published one (--quick).
        text, tiny_text: (text tokens, of which padding at the end).
        inputs: `(transformer, video, text, batch, device, dtype, generator) -> forward kwargs`.
        steps_timed: default timed forwards per variant.
        source: where the config comes from.
    """

    cls_name: str
    config: dict
    tiny: dict
    video: Video
    quick_video: Video
    text: tuple[int, int]
    tiny_text: tuple[int, int]
    inputs: Callable
    steps_timed: int
    source: str


TINY_VIDEO = Video(17, 64, 128)  # latent 5 x 8 x 16 -> grid 5 x 4 x 8 = 160 video tokens, 32 a frame


def _randn(gen, device, dtype, *shape) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, device=device).to(dtype)


def cogvideox_inputs(transformer, video: Video, text, batch: int, device, dtype, gen) -> dict:
    """One step as CogVideoXPipeline feeds it: latents [B, T, C, H, W] (T padded for 1.5), text first, and RoPE
    (5b, 1.5) from the pipeline's own `_prepare_rotary_positional_embeddings`."""
    from types import SimpleNamespace

    from diffusers import CogVideoXPipeline

    cfg = transformer.config
    t, h, w = video.latent(cfg.patch_size_t or 1)
    rotary = None
    if cfg.use_rotary_positional_embeddings:
        pipe_like = SimpleNamespace(vae_scale_factor_spatial=8, transformer=transformer)
        prepare = CogVideoXPipeline._prepare_rotary_positional_embeddings
        rotary = prepare(pipe_like, video.height, video.width, t, device)
    return {
        "hidden_states": _randn(gen, device, dtype, batch, t, cfg.in_channels, h, w),
        "encoder_hidden_states": _randn(gen, device, dtype, batch, text[0], cfg.text_embed_dim),
        "timestep": torch.full((batch,), 900, device=device, dtype=torch.long),
        "image_rotary_emb": rotary,
        "return_dict": False,
    }


def hunyuan_inputs(transformer, video: Video, text, batch: int, device, dtype, gen) -> dict:
    """One step as HunyuanVideoPipeline feeds it: latents [B, C, T, H, W], a float32 timestep, the text mask in
    the model dtype (the prompt is shorter than the tokenizer's length: the last tokens are padding), pooled
    CLIP projections and embedded guidance 6.0 x 1000."""
    cfg = transformer.config
    t, h, w = video.latent()
    tokens, padded = text
    mask = torch.ones(batch, tokens, device=device, dtype=dtype)
    mask[:, tokens - padded :] = 0
    return {
        "hidden_states": _randn(gen, device, dtype, batch, cfg.in_channels, t, h, w),
        "timestep": torch.full((batch,), 900.0, device=device),
        "encoder_hidden_states": _randn(gen, device, dtype, batch, tokens, cfg.text_embed_dim),
        "encoder_attention_mask": mask,
        "pooled_projections": _randn(gen, device, dtype, batch, cfg.pooled_projection_dim),
        "guidance": torch.full((batch,), 6.0, device=device, dtype=dtype) * 1000.0,
        "return_dict": False,
    }


def wan_inputs(transformer, video: Video, text, batch: int, device, dtype, gen) -> dict:
    """One step as WanPipeline feeds it: latents [B, C, T, H, W] and the UMT5 embeddings (512 tokens), which
    reach only the cross-attention."""
    cfg = transformer.config
    t, h, w = video.latent()
    return {
        "hidden_states": _randn(gen, device, dtype, batch, cfg.in_channels, t, h, w),
        "timestep": torch.full((batch,), 900.0, device=device),
        "encoder_hidden_states": _randn(gen, device, dtype, batch, text[0], cfg.text_dim),
        "return_dict": False,
    }


_COGVIDEOX_TINY = {"num_attention_heads": 2, "num_layers": 2, "text_embed_dim": 32, "time_embed_dim": 32,
                   "sample_width": 12, "sample_height": 8, "sample_frames": 17, "max_text_seq_length": 16}

MODELS: dict[str, ModelSpec] = {
    # THUDM/CogVideoX-2b transformer/config.json: 30 heads x 64, 30 layers, no RoPE (3-D sin/cos positions added
    # to the tokens, spatial_interpolation_scale 1.875), learned positions off; the other keys are
    # CogVideoXTransformer3DModel's defaults (sample 60 x 90 x 49, patch 2, text 4096 x 226 tokens, time 512).
    # diffusers scripts/convert_cogvideox_to_diffusers.py: "For CogVideoX-2B, num_layers is 30 ...
    # num_attention_heads is 30 ... use_rotary_positional_embeddings is False".
    "cogvideox-2b": ModelSpec(
        cls_name="CogVideoXTransformer3DModel",
        config={"num_attention_heads": 30, "attention_head_dim": 64, "num_layers": 30,
                "use_rotary_positional_embeddings": False, "use_learned_positional_embeddings": False},
        tiny=_COGVIDEOX_TINY,
        video=Video(49, 480, 720), quick_video=Video(49, 480, 720),
        text=(226, 0), tiny_text=(16, 0), inputs=cogvideox_inputs, steps_timed=5,
        source="THUDM/CogVideoX-2b transformer/config.json; diffusers scripts/convert_cogvideox_to_diffusers.py",
    ),
    # THUDM/CogVideoX-5b transformer/config.json (non-default keys: 48 heads, 42 layers, RoPE on), cross-checked
    # with diffusers' convert_cogvideox_to_diffusers.py ("For 5B, it is 42 / 48 / True").
    "cogvideox-5b": ModelSpec(
        cls_name="CogVideoXTransformer3DModel",
        config={"num_attention_heads": 48, "attention_head_dim": 64, "num_layers": 42,
                "use_rotary_positional_embeddings": True, "use_learned_positional_embeddings": False},
        tiny=_COGVIDEOX_TINY,
        video=Video(49, 480, 720), quick_video=Video(49, 480, 720),
        text=(226, 0), tiny_text=(16, 0), inputs=cogvideox_inputs, steps_timed=5,
        source="THUDM/CogVideoX-5b transformer/config.json; diffusers scripts/convert_cogvideox_to_diffusers.py",
    ),
    # THUDM/CogVideoX1.5-5B transformer/config.json: the 5B body (48 heads x 64, 42 layers, RoPE) with 2 x 2 x 2
    # patches (patch_size_t 2, patch_bias false) and RoPE bounded by sample 300 x 300 x 81, as diffusers'
    # convert_cogvideox_to_diffusers.py writes for version "1.5". Model card: 1360 x 768, 81 frames.
    "cogvideox1.5-5b": ModelSpec(
        cls_name="CogVideoXTransformer3DModel",
        config={"num_attention_heads": 48, "attention_head_dim": 64, "num_layers": 42, "patch_size": 2,
                "patch_size_t": 2, "patch_bias": False, "sample_height": 300, "sample_width": 300,
                "sample_frames": 81, "use_rotary_positional_embeddings": True,
                "use_learned_positional_embeddings": False},
        tiny={**_COGVIDEOX_TINY, "sample_height": 32, "sample_width": 32},  # the RoPE bound only
        video=Video(81, 768, 1360), quick_video=Video(81, 768, 1360),
        text=(226, 0), tiny_text=(16, 0), inputs=cogvideox_inputs, steps_timed=3,
        source="THUDM/CogVideoX1.5-5B transformer/config.json; diffusers convert_cogvideox_to_diffusers.py (1.5)",
    ),
    # Wan-AI/Wan2.1-T2V-14B-Diffusers transformer/config.json, which is WanTransformer3DModel's defaults:
    # 40 heads x 128 (dim 5120), 40 layers, ffn 13824, text 4096, freq 256, in/out 16 channels, patch (1, 2, 2),
    # QK RMS norm across heads, cross-attention norm; the Wan2.1 README's table gives the same 14B numbers.
    # Resolutions from the README: 720P (1280 x 720) and 480P (832 x 480), 81 frames. Text: 512 UMT5 tokens.
    "wan2.1-14b": ModelSpec(
        cls_name="WanTransformer3DModel",
        config={"patch_size": (1, 2, 2), "num_attention_heads": 40, "attention_head_dim": 128, "in_channels": 16,
                "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 13824, "num_layers": 40,
                "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6},
        tiny={"num_attention_heads": 2, "num_layers": 1, "ffn_dim": 64, "text_dim": 32, "freq_dim": 32},
        video=Video(81, 720, 1280), quick_video=Video(81, 480, 832),
        text=(512, 0), tiny_text=(16, 0), inputs=wan_inputs, steps_timed=3,
        source="Wan-AI/Wan2.1-T2V-14B-Diffusers transformer/config.json (= WanTransformer3DModel defaults); "
        "Wan2.1 README",
    ),
    # HunyuanVideoTransformer3DModel's defaults are the 13B model (hunyuanvideo-community/HunyuanVideo):
    # 24 heads x 128, 20 dual-stream + 40 single-stream blocks, 2 refiner layers, text 4096, pooled 768,
    # guidance embedding. 720p x 129 frames from the official sample script; 544 x 960 is its 540p size.
    "hunyuanvideo": ModelSpec(
        cls_name="HunyuanVideoTransformer3DModel",
        config={},
        tiny={"num_attention_heads": 2, "num_layers": 1, "num_single_layers": 1, "num_refiner_layers": 1,
              "text_embed_dim": 32, "pooled_projection_dim": 16},
        video=Video(129, 720, 1280), quick_video=Video(129, 544, 960),
        text=(256, 100), tiny_text=(16, 6), inputs=hunyuan_inputs, steps_timed=3,
        source="diffusers HunyuanVideoTransformer3DModel defaults (the 13B hunyuanvideo-community config)",
    ),
}


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_transformer(spec: ModelSpec, tiny: bool, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The transformer with the model's own random init (seed 0), created directly on `device` in `dtype`, with
    the dtypes `from_pretrained(torch_dtype=dtype)` gives: the class's `_keep_in_fp32_modules` (Wan's norms, time
    embedder and RoPE) in float32, everything else in `dtype`. The caller's random state is left as it was."""
    import diffusers

    cls = getattr(diffusers, spec.cls_name)
    config = {**spec.config, **(spec.tiny if tiny else {})}
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device.type == "cuda" else []):
        torch.manual_seed(0)
        with torch.device(device), _default_dtype(dtype):
            model = cls(**config)
    keep = cls._keep_in_fp32_modules
    with torch.no_grad():
        if keep:  # from_pretrained loads these parameters in float32 and leaves the buffers as built
            tensors = [p for name, p in model.named_parameters() if any(part in keep for part in name.split("."))]
            target = torch.float32
        else:  # from_pretrained's model.to(torch_dtype), which also casts buffers built in float32
            tensors, target = [*model.parameters(), *model.buffers()], dtype
        # (ModelMixin.to(dtype) would warn about fp32 modules even for classes that have none)
        for tensor in tensors:
            if tensor.is_floating_point() and tensor.dtype != target:
                tensor.data = tensor.data.to(target)
    return model.to(device).eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------- methods
@dataclass(frozen=True)
class MethodSpec:
    """One `--methods` entry: a SparseConfig preset with fields replaced, and optionally a target density
    that picks the window per model.

    Attributes:
        text: the entry as written, e.g. "spatial:frames=2,q_block=64".
        preset: the `vidsparse.PRESETS` name.
        fields: SparseConfig fields to replace.
        density: the bench-only `density=` target, or None.
    """

    text: str
    preset: str
    fields: tuple[tuple[str, int], ...] = ()
    density: float | None = None


_WINDOW = {"spatial": "frames", "temporal": "radius"}


def parse_methods(text: str) -> list[MethodSpec]:
    """`spatial,temporal:radius=1,q_block=64` -> two MethodSpecs; `FIELD=VALUE` items after a method belong to it.

    Raises BenchError for an unknown preset or field, a bad value, or a method that asks for warm-up steps.
    """
    groups: list[list[str]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if "=" in item and ":" not in item:
            if not groups:
                raise BenchError(f"--methods: {item!r} comes before any method name")
            groups[-1].append(item)
        else:
            groups.append([item])
    return [_method_spec(group) for group in groups]


def _method_spec(group: list[str]) -> MethodSpec:
    label = ",".join(group)
    name, _, first = group[0].partition(":")
    sparse = [p for p in PRESETS if p != "dense"]
    if name not in sparse:
        raise BenchError(f"--methods {label!r}: unknown method {name!r}; choose from {sparse} (dense always runs)")
    fields, density = {}, None
    for item in ([first] if first else []) + group[1:]:
        key, _, value = item.partition("=")
        try:
            number = float(value) if key == "density" else _number(value)
        except ValueError:
            raise BenchError(f"--methods {label!r}: bad value for {key}: {value!r}") from None
        if key != "density":
            fields[key] = number
        elif 0.0 < number <= 1.0:
            density = number
        else:
            raise BenchError(f"--methods {label!r}: density must be in (0, 1]; got {value}")
    if fields.get("warmup_steps"):
        raise BenchError(f"--methods {label!r}: one step is timed, and it must be a sparse one: drop warmup_steps")
    if density is not None and _WINDOW.get(name) in fields:
        raise BenchError(f"--methods {label!r}: give {_WINDOW[name]} or density, not both")
    try:
        SparseConfig.preset(name).replace(warmup_steps=0, **fields)
    except ValueError as exc:
        raise BenchError(f"--methods {label!r}: {exc}") from exc
    return MethodSpec(label, name, tuple(sorted(fields.items())), density)


def _number(value: str):
    """A --methods value: an int, else a float, else the string itself (SparseConfig.from_dict validates it)."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def method_config(spec: MethodSpec, layout: TokenLayout, block: int | None, device) -> SparseConfig:
    """The method's SparseConfig on this model: the preset without warm-up steps, the spec's fields, `block` as
    the block sizes the spec does not set, and for a `density=` target the window whose mask density on
    `layout` is closest to it (density grows with the window, so the search stops once past the target)."""
    fields = dict(spec.fields)
    if block is not None:
        fields.setdefault("q_block", block)
        fields.setdefault("k_block", block)
    config = SparseConfig.preset(spec.preset).replace(warmup_steps=0, **fields)
    if spec.density is None:
        return config
    key = _WINDOW[config.method]
    widest = layout.frames - 1 if key == "frames" else max(layout.height, layout.width) - 1
    best, best_gap = config, float("inf")
    for width in range(widest + 1):
        candidate = config.replace(**{key: width})
        density = mask_density(candidate, layout, device)
        if abs(density - spec.density) < best_gap:
            best, best_gap = candidate, abs(density - spec.density)
        if density >= spec.density:
            break
    return best


def mask_density(config: SparseConfig, layout: TokenLayout, device) -> float:
    """Density of the mask vidsparse's planner builds for `config` on `layout` (what the report will realise)."""
    from .planner import PlanContext, planner_for

    plan = planner_for(config).plan(PlanContext(config.warmup_layers, config.warmup_steps, None, layout, 1, device), None)
    group = plan.groups[0]
    return 1.0 if group.mask is None else group.mask.density()


def _window(config: SparseConfig | None) -> str:
    if config is None or config.method == "dense":
        return "-"
    key = _WINDOW[config.method]
    return f"{key}={getattr(config, key)}, blocks {config.q_block}x{config.k_block}"


# ---------------------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
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


def _forward(transformer, inputs: dict) -> torch.Tensor:
    with torch.inference_mode():
        return transformer(**inputs)[0]


def _time_forwards(transformer, inputs: dict, runs: int, device: torch.device) -> list[float]:
    """ms of `runs` forwards queued back to back; the caller has warmed up."""
    watches = []
    for _ in range(runs):
        with Stopwatch(device) as watch:
            _forward(transformer, inputs)
        watches.append(watch)
    _sync(device)
    return [w.ms() for w in watches]


def _time_call(fn, runs: int, device: torch.device) -> float:
    """Median ms of `runs` calls after one untimed call (which raises if the call cannot run)."""
    fn()
    _sync(device)
    watches = []
    for _ in range(runs):
        with Stopwatch(device) as watch:
            fn()
        watches.append(watch)
    _sync(device)
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


# ---------------------------------------------------------------------------------------------- checks
def _errors(out: torch.Tensor, ref: torch.Tensor) -> dict:
    """Max abs and relative L2 error of `out` against `ref`; None where an output is not finite."""
    diff = out.float() - ref.float()
    max_abs, rel_l2 = diff.abs().max().item(), (diff.norm() / ref.float().norm().clamp_min(1e-30)).item()
    return {
        "max_abs": max_abs if math.isfinite(max_abs) else None,
        "rel_l2": rel_l2 if math.isfinite(rel_l2) else None,
        "bitwise_equal": bool(torch.equal(out, ref)),
    }


def install_state(transformer) -> dict:
    """What `apply` may change and `remove` must put back: processors (by identity), diffusers hooks and
    instance-level forwards."""
    return {
        "processors": {name: id(p) for name, p in transformer.attn_processors.items()},
        "hooks": sorted(
            f"{name}:{hook}" for name, m in transformer.named_modules()
            if getattr(m, "_diffusers_hook", None) is not None for hook in m._diffusers_hook.hooks
        ),
        # diffusers' HookRegistry leaves the module's own bound forward as an instance attribute after its
        # last hook goes: that counts as restored, anything else does not.
        "forwards": sorted(
            name for name, m in transformer.named_modules()
            if getattr(m.forward, "__func__", None) is not type(m).forward or m.forward.__self__ is not m
        ),
    }


def _finite(out: torch.Tensor) -> bool:
    return bool(torch.isfinite(out).all())


# ---------------------------------------------------------------------------------------------- one model
@dataclass
class Variant:
    """One way of running the forward.

    Attributes:
        name: its label in the tables.
        config: what `vidsparse.apply` gets; None keeps the stock processors.
        sdpa: SDPBackend names the forward runs under (`fast_sdpa`); None leaves torch's default choice.
    """

    name: str
    config: SparseConfig | None = None
    sdpa: tuple[str, ...] | None = None


@dataclass
class Options:
    """The parsed command line, resolved."""

    models: list[str]
    methods: list[MethodSpec]
    device: torch.device
    dtype: torch.dtype
    tiny: bool
    batch: int
    runs: int | None
    size: tuple[int | None, int | None, int | None]  # --frames, --height, --width
    quick: bool
    recheck: str
    replay_runs: int
    deadline: float | None  # time.perf_counter() value by which the timed forwards should be done

    def video(self, spec: ModelSpec) -> Video:
        base = TINY_VIDEO if self.tiny else spec.quick_video if self.quick else spec.video
        frames, height, width = self.size
        return Video(frames or base.frames, height or base.height, width or base.width)


def bench_model(name: str, opts: Options, progress) -> dict:
    """Every variant of one model; the model is freed before returning."""
    from .pipelines import adapter_for

    spec, device = MODELS[name], opts.device
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    transformer = build_transformer(spec, opts.tiny, device, opts.dtype)
    _sync(device)
    build_s = time.perf_counter() - start
    video = opts.video(spec)
    gen = torch.Generator(device=device).manual_seed(0)
    inputs = spec.inputs(transformer, video, spec.tiny_text if opts.tiny else spec.text, opts.batch, device,
                         opts.dtype, gen)
    adapter = adapter_for(transformer)
    text = inputs["encoder_hidden_states"].shape[1] if adapter.text_position else 0
    layout = TokenLayout(*adapter.latent_grid(transformer, inputs["hidden_states"]), text,
                         adapter.text_position or "start")
    block = DRY_RUN_BLOCK if opts.tiny else None
    fast = Variant("stock, fast SDPA", sdpa=FAST_SDPA)
    variants = [Variant("stock"), fast, Variant("vidsparse dense", SparseConfig())]
    variants += [Variant(m.text, method_config(m, layout, block, device)) for m in opts.methods]
    cfg = transformer.config
    row = {
        "model": name, "class": spec.cls_name, "config_source": spec.source,
        "params": sum(p.numel() for p in transformer.parameters()), "build_s": build_s,
        "weights_gib": torch.cuda.memory_allocated(device) / GIB if device.type == "cuda" else None,
        "dtype": str(opts.dtype).removeprefix("torch."), "video": dataclasses.asdict(video),
        "latent": list(inputs["hidden_states"].shape), "grid": [layout.frames, layout.height, layout.width],
        "text_tokens": text, "seq_len": layout.seq_len, "heads": cfg.num_attention_heads,
        "head_dim": cfg.attention_head_dim, "batch": opts.batch, "runs": opts.runs or spec.steps_timed,
        "variants": [], "restore_checks": [],
    }
    logger.info("%s: %s %.2fB params built in %.1f s; %s -> latent %s, grid %s, %d text tokens, %s tokens, %dx%d",
                name, spec.cls_name, row["params"] / 1e9, build_s, video, row["latent"], row["grid"], text,
                f"{layout.seq_len:,}", row["heads"], row["head_dim"])

    state0, ref = install_state(transformer), None
    for variant in variants:
        entry, out = _run_variant(transformer, inputs, variant, row["runs"], opts)
        if ref is None:  # the first variant, stock
            ref = out
            if any(shape["fast"] == "MATH" for shape in entry["attention"]["shapes"]):  # no fast backend runs it
                fast.sdpa = FAST_SDPA + ("MATH",)
        else:
            entry["error_vs_stock"] = _errors(out, ref)
        if variant is fast:
            entry["backends"] = _fast_backends(row["variants"][0]["attention"])
        if variant.config is not None:
            check = {"after": variant.name, "state_restored": install_state(transformer) == state0}
            if opts.recheck == "each" or variant is variants[-1]:
                check["stock_rerun"] = _errors(_forward(transformer, inputs), ref)
            row["restore_checks"].append(check)
        del out
        row["variants"].append(entry)
        logger.info("%s", _describe(entry, row["variants"][0]))
        progress.update(1)
    del transformer, inputs, ref
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def _run_variant(transformer, inputs: dict, variant: Variant, runs: int, opts: Options) -> tuple[dict, torch.Tensor]:
    """Warm-up (its output is returned), then the timed forwards; for vidsparse also the report and removal."""
    import vidsparse

    device, stock = opts.device, variant.config is None and variant.sdpa is None
    handle = None if variant.config is None else vidsparse.apply(transformer, variant.config)
    context = fast_sdpa(variant.sdpa) if variant.sdpa else contextlib.nullcontext()
    with context:
        start = time.perf_counter()
        # Stock: the warm-up captures each attention call shape's inputs, to replay them alone.
        with SDPARecorder(device, capture=True) if stock else contextlib.nullcontext() as warm:
            out = _forward(transformer, inputs)
        _sync(device)
        warmup_s = time.perf_counter() - start
        replay = replay_calls(warm.first, opts.replay_runs, device) if stock else None
        n = runs
        if opts.deadline is not None:  # fit the timed forwards into what is left (at least one)
            n = min(runs, max(1, int((opts.deadline - time.perf_counter()) / max(warmup_s, 1e-3))))
            if n < runs:
                logger.info("  %s: %d timed forwards instead of %d to stay within --budget-s", variant.name, n, runs)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        # Stock: the timed forwards also time each attention call in situ (two event records per call).
        with SDPARecorder(device, capture=False) if stock else contextlib.nullcontext() as timed:
            times = _time_forwards(transformer, inputs, n, device)
    entry = {
        "name": variant.name, "config": None if variant.config is None else dataclasses.asdict(variant.config),
        "window": _window(variant.config), "sdpa": list(variant.sdpa) if variant.sdpa else None,
        "ms": statistics.median(times), "times_ms": times, "warmup_s": warmup_s,
        "peak_gib": torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None,
        "finite": _finite(out),
    }
    if stock:
        entry["attention"] = stock_attention(warm, replay, timed, n)
        entry["attention_share_in_situ"] = entry["attention"]["in_situ_ms"] / entry["ms"]
        entry["attention_share_replay"] = entry["attention"]["replay_ms"] / entry["ms"]
    if handle is not None:
        report = handle.report()
        entry["report"] = {key: report[key] for key in ("density", "layers", "calls", "sparse_calls", "fallbacks")}
        handle.remove()
    return entry, out


def _fast_backends(attention: dict) -> dict[str, int]:
    """Calls per step by the backend the fast-SDPA variant ran them with."""
    counts: dict[str, int] = {}
    for shape in attention["shapes"]:
        counts[shape["fast"]] = counts.get(shape["fast"], 0) + shape["calls"]
    return counts


def _describe(entry: dict, stock: dict) -> str:
    line = f"  {entry['name']:28s} {entry['ms']:10.1f} ms"
    if entry["peak_gib"] is not None:
        line += f"  peak {entry['peak_gib']:6.1f} GiB"
    if "attention" in entry:
        att = entry["attention"]
        line += (f"  attention {att['calls']} calls: in situ {att['in_situ_ms']:.1f} ms "
                 f"({100 * entry['attention_share_in_situ']:.0f}%), replayed {att['replay_ms']:.1f} ms "
                 f"({100 * entry['attention_share_replay']:.0f}%)")
    else:
        err = entry["error_vs_stock"]
        line += (f"  x{stock['ms'] / entry['ms']:.2f}  err max {_num(err['max_abs'], '.2e')} "
                 f"rel {_num(err['rel_l2'], '.2e')}")
    if "backends" in entry:
        line += "  backends " + ", ".join(f"{k} x{v}" for k, v in entry["backends"].items())
    if "report" in entry:
        rep = entry["report"]
        line += (f"  {entry['window']}  density {rep['density']:.3f}  layers {rep['layers']}  "
                 f"fallbacks {len(rep['fallbacks'])}")
    if not entry["finite"]:
        line += "  NON-FINITE OUTPUT"
    return line


# ---------------------------------------------------------------------------------------------- reporting
def environment(command: list[str], device: torch.device, dry_run: bool) -> dict:
    import diffusers
    import triton

    from . import __version__

    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()})",
        "torch": torch.__version__, "triton": triton.__version__, "diffusers": diffusers.__version__,
        "vidsparse": __version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "command": shlex.join(command), "dry_run": dry_run,
    }


def summary_rows(rows: list[dict]) -> list[dict]:
    """One row per (model, variant): time and speedups, error against stock, density, peak memory."""
    out = []
    for r in rows:
        stock = r["variants"][0]
        fast = next((v for v in r["variants"] if "backends" in v), None)
        for v in r["variants"]:
            err = v.get("error_vs_stock", {})
            out.append({
                "model": r["model"], "tokens": r["seq_len"], "variant": v["name"], "window": v["window"],
                "ms": v["ms"], "speedup_vs_stock": stock["ms"] / v["ms"],
                "speedup_vs_fast_sdpa": fast["ms"] / v["ms"] if fast else None,
                "rel_l2": err.get("rel_l2"), "max_abs": err.get("max_abs"),
                "density": v["report"]["density"] if "report" in v else 1.0, "peak_gib": v["peak_gib"],
                "attention_share": stock["attention_share_in_situ"], "finite": v["finite"],
            })
    return out


def _num(value, fmt: str, suffix: str = "") -> str:
    return "-" if value is None else format(value, fmt) + suffix


def summary_table(summary: list[dict]) -> list[str]:
    lines = [
        ("| model | tokens | variant | window | ms / step | vs stock | vs fast SDPA | rel L2 err | max abs err | "
         "density | peak GiB | stock attention share |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        flag = "" if s["finite"] else " (non-finite)"
        lines.append(
            f"| {s['model']} | {s['tokens']:,} | {s['variant']}{flag} | {s['window']} | {s['ms']:.1f} | "
            f"{s['speedup_vs_stock']:.2f}x | {_num(s['speedup_vs_fast_sdpa'], '.2f', 'x')} | "
            f"{_num(s['rel_l2'], '.1e')} | "
            f"{_num(s['max_abs'], '.1e')} | {s['density']:.3f} | {_num(s['peak_gib'], '.1f')} | "
            f"{100 * s['attention_share']:.0f}% |"
        )
    return lines


_METHOD_TEXT = (
    "Full-size transformers with random weights (the models' own init), built on the GPU; one denoising step "
    "(one forward) on the same random inputs for every variant. Times are medians of CUDA-event timings after "
    "one warm-up forward, under torch.inference_mode(); peak memory is over the timed forwards. Errors compare "
    "the output latent with stock's (max abs, relative L2). Density is vidsparse's realised mean attention "
    "density over replaced layers and calls (1 for stock). \"fast SDPA\" runs the stock forward under "
    "sdpa_kernel([" + ", ".join(FAST_SDPA) + "], set_priority=True); the backend of each call shape is the first "
    "of that list that runs it when replayed alone. Stock attention share: CUDA events around every stock "
    "F.scaled_dot_product_attention call during the timed forwards, median per call shape x calls per step, "
    "over the stock step time; also each call shape replayed alone on captured inputs."
)


def _model_section(r: dict) -> list[str]:
    stock = r["variants"][0]
    lines = [
        "",
        f"## {r['model']}: {r['class']}, {r['params'] / 1e9:.2f}B parameters",
        "",
        f"- config: {r['config_source']}",
        (f"- video {r['video']['frames']} frames at {r['video']['height']}x{r['video']['width']} -> latent "
         f"{r['latent']}, grid (T, H, W) {r['grid']}, {r['text_tokens']} text tokens in self-attention, "
         f"{r['seq_len']:,} tokens, {r['heads']} heads x {r['head_dim']}, batch {r['batch']}, {r['dtype']}; "
         f"{r['runs']} timed forwards per variant"),
        f"- build {r['build_s']:.1f} s" + (f", weights {r['weights_gib']:.1f} GiB" if r["weights_gib"] else ""),
        "",
        ("| variant | window | ms / step | all runs ms | warm-up s | peak GiB | vs stock | max abs err | "
         "rel L2 err | density | sparse calls / calls | fallbacks |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in r["variants"]:
        err, rep = v.get("error_vs_stock"), v.get("report")
        errs = f"{_num(err['max_abs'], '.2e')} | {_num(err['rel_l2'], '.2e')}" if err else "- | -"
        dens = (f"{rep['density']:.3f} | {rep['sparse_calls']} / {rep['calls']} | "
                f"{', '.join(rep['fallbacks']) or 'none'}"
                if rep else "1.000 | - | -")
        flag = "" if v["finite"] else " (non-finite output)"
        lines.append(
            f"| {v['name']}{flag} | {v['window']} | {v['ms']:.1f} | {', '.join(f'{t:.1f}' for t in v['times_ms'])} | "
            f"{v['warmup_s']:.1f} | {_num(v['peak_gib'], '.1f')} | {stock['ms'] / v['ms']:.2f}x | {errs} | {dens} |"
        )
    att, share = stock["attention"], stock["attention_share_in_situ"]
    limit = f"{1 / (1 - share):.1f}x" if share < 1 else "unbounded"
    fast = next((v for v in r["variants"] if "backends" in v), None)
    lines += [
        "",
        f"Stock attention: {att['calls']} SDPA calls per step, {att['in_situ_ms']:.1f} ms in situ "
        f"({100 * share:.0f}% of the step), {att['replay_ms']:.1f} ms replayed alone "
        f"({100 * stock['attention_share_replay']:.0f}%); with attention free the step would be {limit} faster."
        + ("" if fast is None else
           " Fast SDPA ran " + ", ".join(f"{k} ({n} calls)" for k, n in fast["backends"].items()) + "."),
        "",
        "| SDPA call shape | calls per step | in situ ms (median) | replayed ms, default | "
        + " | ".join(f"{b} ms" for b in FAST_SDPA) + " | fast SDPA ran |",
        "|---|---|---|---|" + "---|" * len(FAST_SDPA) + "---|",
    ]
    refusals = []
    for s in att["shapes"]:
        cells = [f"{b['ms']:.2f}" if "ms" in b else "refused" for b in s["backends"].values()]
        lines.append(f"| {s['shape']} | {s['calls']} | {_num(s['in_situ_ms'], '.2f')} | {s['default_ms']:.2f} | "
                     + " | ".join(cells) + f" | {s['fast']} |")
        refusals += [f"- {s['shape']}: {name} refused: {b['refused']}"
                     for name, b in s["backends"].items() if "refused" in b]
    lines += ["", *refusals] if refusals else []
    lines += ["", "Removal: " + "; ".join(
        f"after {c['after']}: processors and hooks restored {c['state_restored']}"
        + (f", stock rerun max abs {_num(c['stock_rerun']['max_abs'], '.1e')} "
           f"(bitwise {c['stock_rerun']['bitwise_equal']})"
           if "stock_rerun" in c else "")
        for c in r["restore_checks"]
    )]
    return lines


def write_results(env: dict, rows: list[dict], out_dir: Path, names: tuple[str, str]) -> list[str]:
    """Write the markdown and JSON reports; return the summary table's lines."""
    summary = summary_rows(rows)
    payload = {**env, "summary": summary, "models": rows}
    (out_dir / names[1]).write_text(json.dumps(payload, indent=1, allow_nan=False) + "\n")
    lines = [
        "# vidsparse bench: one denoising step, stock diffusers against vidsparse",
        "",
        f"Produced by `{env['command']}` on {env['date']}.",
        *(["", "**Dry run**: tiny models on the CPU. It tests the benchmark; its numbers measure nothing.", ""]
          if env["dry_run"] else []),
        (f"Device {env['device']}, torch {env['torch']}, triton {env['triton']}, diffusers {env['diffusers']}, "
         f"vidsparse {env['vidsparse']}, CUDA {env['cuda']}, python {env['python']}."),
        "",
        _METHOD_TEXT,
        "",
        "## Summary",
        "",
        *summary_table(summary),
    ]
    for r in rows:
        lines += _model_section(r)
    (out_dir / names[0]).write_text("\n".join(lines) + "\n")
    return summary_table(summary)


def _passed(rows: list[dict]) -> bool:
    """Removal restored the stock model, and no vidsparse variant made non-finite output where stock did not."""
    for r in rows:
        if not all(c["state_restored"] for c in r["restore_checks"]):
            return False
        reruns = [c["stock_rerun"]["rel_l2"] for c in r["restore_checks"] if "stock_rerun" in c]
        if any(e is None or e > 1e-3 for e in reruns):
            return False
        if r["variants"][0]["finite"] and not all(v["finite"] for v in r["variants"]):
            return False
    return True


# ---------------------------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The bench flags, on any parser (`add_parser` uses it, and so does pipelines/bench_step.py)."""
    parser.add_argument("--models", default=",".join(MODELS), metavar="LIST",
                        help=f"comma list of {', '.join(MODELS)}, run in this order (default: all, cheapest first)")
    parser.add_argument("--methods", default="spatial,temporal", metavar="LIST",
                        help="comma list of methods to time besides stock and vidsparse dense: preset names, each "
                        "optionally NAME:FIELD=VALUE,FIELD=VALUE with SparseConfig fields, or density=D to pick the "
                        "window whose mask density is closest to D, e.g. spatial:density=0.15,temporal:radius=1 "
                        "(default: %(default)s; warm-up steps are set to 0)")
    parser.add_argument("--frames", type=int, default=None, help="video frames in pixel space, every model "
                        "(default: each model's own: 49 CogVideoX, 81 CogVideoX1.5 and Wan, 129 HunyuanVideo)")
    parser.add_argument("--height", type=int, default=None,
                        help=f"video height in pixels, a multiple of {PIXEL_MULTIPLE}, every model "
                        "(default: each model's own)")
    parser.add_argument("--width", type=int, default=None,
                        help=f"video width in pixels, a multiple of {PIXEL_MULTIPLE}, every model "
                        "(default: each model's own)")
    parser.add_argument("--quick", action="store_true",
                        help="each model at its smaller published size: HunyuanVideo 544x960, Wan 480x832")
    parser.add_argument("--batch", type=int, default=1, help="batch size of the forward (default: %(default)s; a CFG "
                        "step of CogVideoX is 2)")
    parser.add_argument("--dtype", choices=("bfloat16", "float16"), default="bfloat16",
                        help="weights and activations (default: %(default)s; --dry-run uses float32)")
    parser.add_argument("--steps-timed", type=int, default=None, metavar="N",
                        help="timed forwards per variant after the warm-up (default: 5 for CogVideoX 2b and 5b, "
                        "3 for the others)")
    parser.add_argument("--recheck", choices=("last", "each"), default="last",
                        help="rerun the stock forward after the last removal only, or after each "
                        "(default: %(default)s)")
    parser.add_argument("--budget-s", type=float, default=None, metavar="S",
                        help="wall-clock budget: timed forwards are cut (to one per variant at least) to end by then")
    parser.add_argument("--out", type=Path, default=Path("bench"), metavar="DIR",
                        help="folder for bench.md and bench.json (--dry-run: bench-dry-run.*) (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU, float32, tiny models (2 heads, 1-2 layers) and a 17x64x128 video: tests the flow")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages too")
    parser.set_defaults(func=run, command_prefix=None, report_names=None)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `vidsparse bench` on the `vidsparse` command's subparsers."""
    parser = subparsers.add_parser(
        "bench",
        help="time one full-size denoising step: stock diffusers, fast SDPA, vidsparse dense and sparse methods",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Build each model's transformer at full size with random weights directly on the GPU (nothing is\n"
            "downloaded) and time one denoising step, on the same random inputs, as:\n"
            "  stock             diffusers' processors, torch's default SDPA backend\n"
            "  stock, fast SDPA  the same under sdpa_kernel([cuDNN, flash, efficient]); the backend that ran\n"
            "                    each call shape is reported (flash refuses HunyuanVideo's padding mask)\n"
            "  vidsparse dense   vidsparse.apply(transformer, 'dense')\n"
            "  each --methods    vidsparse.apply(transformer, SparseConfig(...)) without warm-up steps\n\n"
            "For each: median ms per step over N timed forwards after a warm-up, error against stock (max abs and\n"
            "relative L2 of the output latent), realised attention density, peak GPU memory; and the share of the\n"
            "stock step spent in attention.\n\n"
            "Models: " + ", ".join(MODELS) + ",\n"
            "each at its published default size unless --frames/--height/--width say otherwise.\n\n"
            "--dry-run runs the whole flow on tiny CPU versions of every model family (for CI)."
        ),
        epilog=(
            "Writes DIR/bench.md and DIR/bench.json, stamped with the date, device, versions and command.\n\n"
            "examples:\n"
            "  vidsparse bench --models cogvideox-5b\n"
            "  vidsparse bench --models hunyuanvideo --quick --methods spatial:density=0.15\n"
            "  vidsparse bench --models wan2.1-14b --height 480 --width 832 --methods spatial,temporal:radius=2\n"
            "  vidsparse bench --dry-run --out /tmp/bench                   # CPU, tiny models, seconds"
        ),
    )
    add_arguments(parser)
    return parser


def _options(args: argparse.Namespace) -> Options:
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise BenchError(f"--models: unknown {unknown or 'empty list'}; choose from {', '.join(MODELS)}")
    for flag in ("height", "width"):
        value = getattr(args, flag)
        if value is not None and (value <= 0 or value % PIXEL_MULTIPLE):
            raise BenchError(f"--{flag} {value} must be a positive multiple of {PIXEL_MULTIPLE} "
                             "(the VAE's 8x times the 2x2 patch)")
    for flag in ("frames", "batch", "steps_timed"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise BenchError(f"--{flag.replace('_', '-')} must be at least 1; got {value}")
    if not args.dry_run and not torch.cuda.is_available():
        raise BenchError(f"the benchmark needs a CUDA GPU (torch {torch.__version__} sees none); "
                         "--dry-run runs tiny models on the CPU")
    start = time.perf_counter()
    return Options(
        models=models, methods=parse_methods(args.methods),
        device=torch.device("cpu" if args.dry_run else "cuda"),
        dtype=torch.float32 if args.dry_run else getattr(torch, args.dtype), tiny=args.dry_run, batch=args.batch,
        runs=args.steps_timed or (1 if args.dry_run else None), size=(args.frames, args.height, args.width),
        quick=args.quick, recheck="each" if args.dry_run else args.recheck, replay_runs=1 if args.dry_run else 3,
        deadline=None if args.budget_s is None else start + args.budget_s,
    )


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Entry point of `vidsparse bench` (`args.func(args, argv)`); returns the exit status: 0, or 1 when removal
    did not restore the stock model or a vidsparse variant's output is not finite."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .cli import _invocation, _use_interpreter_if_needed

    opts = _options(args)
    if opts.device.type == "cpu":
        _use_interpreter_if_needed(opts.device)  # before triton is first imported (diffusers imports it)
    prefix = args.command_prefix or _invocation()
    names = args.report_names or (DRY_RUN_NAMES if args.dry_run else NAMES)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = environment([*prefix, *argv], opts.device, opts.tiny)
    rows, lines = [], []
    total = len(opts.models) * (3 + len(opts.methods))
    with logging_redirect_tqdm(loggers=[logging.getLogger("vidsparse")]), \
            tqdm(total=total, desc="bench", unit="variant", file=sys.stderr, disable=None) as progress:
        for name in opts.models:
            rows.append(bench_model(name, opts, progress))
            lines = write_results(env, rows, out_dir, names)  # a run cut short still leaves what it measured
    print("\n".join(lines))
    print(f"\nwrote {out_dir / names[0]} and {out_dir / names[1]}")
    return 0 if _passed(rows) else 1
