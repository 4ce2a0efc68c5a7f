"""Step benchmark: one full-size transformer forward (one denoising step) with stock diffusers attention,
with `vidsparse.apply(transformer, "dense")` and with vidsparse's spatial window at about 15% density,
all in one process on the same inputs.

Run on a CUDA GPU from the repository root, with vidsparse importable (`pip install -e .` or `PYTHONPATH=.`);
bf16, random weights built on the GPU from the published configs, nothing is downloaded:

    python pipelines/bench_step.py                       # both models -> pipelines/BENCH_STEP.md + bench_step.json
    python pipelines/bench_step.py --models cogvideox-5b --steps-timed 5
    python pipelines/bench_step.py --quick               # HunyuanVideo at 544x960 instead of 720x1280
    python pipelines/bench_step.py --dry-run             # CPU: tiny models in float32, the whole flow, no GPU

Shapes (pixel space; the latents are what the pipelines feed the transformer):
- hunyuanvideo: 129 frames at 720x1280 -> latent [B, 16, 33, 90, 160], 256 text tokens of which the last 100 are
  padding (encoder_attention_mask), pooled projections, embedded guidance 6.0 * 1000 as HunyuanVideoPipeline passes.
- cogvideox-5b: 49 frames at 480x720 -> latent [B, 13, 16, 60, 90], 226 text tokens, RoPE from
  CogVideoXPipeline._prepare_rotary_positional_embeddings itself.

Method. Per model, one model is built at a time and freed before the next. Per variant: one warm-up forward,
whose output is compared with the stock output, then the median of N forwards timed with CUDA events, all
under torch.inference_mode(); peak memory is over the timed forwards. The attention share of the stock step
is measured two ways, both reported: CUDA events around every F.scaled_dot_product_attention call during the
stock timed forwards (median per call shape x calls per step), and each distinct call shape replayed alone on
inputs captured in the warm-up (median of 3 runs x calls per step). Between variants `handle.remove()` must restore the
stock processors and hooks exactly; after the last removal the stock forward is run again and compared
with the first (`--recheck each` does so after every removal). The timed forwards are cut short (to one per
variant at least) when `--budget-s` would be passed; CogVideoX runs first so that a cut falls on HunyuanVideo.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
GIB = 2**30


# ---------------------------------------------------------------------------- models
@dataclass(frozen=True)
class Video:
    """A generation size in pixel space, as a user gives it to the pipeline."""

    frames: int
    height: int
    width: int

    def latent(self) -> tuple[int, int, int]:
        """(T, H, W) of the latent: both VAEs compress time 4x (first frame kept) and space 8x."""
        return (self.frames - 1) // 4 + 1, self.height // 8, self.width // 8


@dataclass(frozen=True)
class ModelSpec:
    """How to build one transformer and feed it one denoising step.

    `config` is the full-size config; `tiny` overrides it for the CPU dry run. `text` is (text tokens, of
    which padding at the end), `tiny_text` the same for the dry run. `inputs(transformer, video, text, batch,
    device, dtype, generator)` returns the forward's keyword arguments.
    """

    cls_name: str
    config: dict
    tiny: dict
    video: Video
    quick_video: Video
    tiny_video: Video
    text: tuple[int, int]
    tiny_text: tuple[int, int]
    inputs: Callable
    steps_timed: int
    source: str


def hunyuan_inputs(transformer, video: Video, text: tuple[int, int], batch: int, device, dtype, gen) -> dict:
    """One step as HunyuanVideoPipeline feeds it: latents in the model dtype, a float32 timestep, the text
    mask in the model dtype, guidance 6.0 * 1000."""
    cfg = transformer.config
    t, h, w = video.latent()
    tokens, padded = text
    mask = torch.ones(batch, tokens, device=device, dtype=dtype)
    mask[:, tokens - padded:] = 0  # the prompt is shorter than the tokenizer's max length
    return {
        "hidden_states": torch.randn(batch, cfg.in_channels, t, h, w, generator=gen, device=device).to(dtype),
        "timestep": torch.full((batch,), 900.0, device=device),
        "encoder_hidden_states": torch.randn(batch, tokens, cfg.text_embed_dim, generator=gen, device=device).to(dtype),
        "encoder_attention_mask": mask,
        "pooled_projections": torch.randn(batch, cfg.pooled_projection_dim, generator=gen, device=device).to(dtype),
        "guidance": torch.full((batch,), 6.0, device=device, dtype=dtype) * 1000.0,
        "return_dict": False,
    }


def cogvideox_inputs(transformer, video: Video, text: tuple[int, int], batch: int, device, dtype, gen) -> dict:
    """One step as CogVideoXPipeline feeds it, RoPE from the pipeline's own method."""
    from diffusers import CogVideoXPipeline

    cfg = transformer.config
    t, h, w = video.latent()
    pipe_like = SimpleNamespace(vae_scale_factor_spatial=8, transformer=transformer)
    rotary = None
    if cfg.use_rotary_positional_embeddings:
        prepare = CogVideoXPipeline._prepare_rotary_positional_embeddings
        rotary = prepare(pipe_like, video.height, video.width, t, device)
    return {
        "hidden_states": torch.randn(batch, t, cfg.in_channels, h, w, generator=gen, device=device).to(dtype),
        "encoder_hidden_states": torch.randn(
            batch, text[0], cfg.text_embed_dim, generator=gen, device=device
        ).to(dtype),
        "timestep": torch.full((batch,), 900, device=device, dtype=torch.long),
        "image_rotary_emb": rotary,
        "return_dict": False,
    }


MODELS: dict[str, ModelSpec] = {
    # HunyuanVideoTransformer3DModel's defaults are the 13B model (diffusers 0.42.1 source: 24 heads x 128,
    # 20 dual-stream + 40 single-stream blocks, 2 refiner layers, text 4096, pooled 768, guidance embeds).
    "hunyuanvideo": ModelSpec(
        cls_name="HunyuanVideoTransformer3DModel",
        config={},
        tiny=dict(num_attention_heads=2, num_layers=1, num_single_layers=1, num_refiner_layers=1,
                  text_embed_dim=32, pooled_projection_dim=16),
        video=Video(129, 720, 1280), quick_video=Video(129, 544, 960), tiny_video=Video(17, 128, 128),
        text=(256, 100), tiny_text=(16, 6), inputs=hunyuan_inputs, steps_timed=3,
        source="diffusers 0.42.1 HunyuanVideoTransformer3DModel defaults (the 13B hunyuanvideo-community config)",
    ),
    # THUDM/CogVideoX-5b transformer/config.json (diffusers 0.31 export; its non-default keys are
    # num_attention_heads 48, num_layers 42, use_rotary_positional_embeddings true), cross-checked with
    # diffusers' scripts/convert_cogvideox_to_diffusers.py ("For 5B, it is 42 / 48 / True"). The rest are
    # CogVideoXTransformer3DModel's defaults, which that config.json repeats.
    "cogvideox-5b": ModelSpec(
        cls_name="CogVideoXTransformer3DModel",
        config=dict(
            num_attention_heads=48, attention_head_dim=64, in_channels=16, out_channels=16, flip_sin_to_cos=True,
            freq_shift=0, time_embed_dim=512, text_embed_dim=4096, num_layers=42, dropout=0.0, attention_bias=True,
            sample_width=90, sample_height=60, sample_frames=49, patch_size=2, temporal_compression_ratio=4,
            max_text_seq_length=226, activation_fn="gelu-approximate", timestep_activation_fn="silu",
            norm_elementwise_affine=True, norm_eps=1e-5, spatial_interpolation_scale=1.875,
            temporal_interpolation_scale=1.0, use_rotary_positional_embeddings=True,
            use_learned_positional_embeddings=False,
        ),
        tiny=dict(num_attention_heads=2, num_layers=2, text_embed_dim=32, time_embed_dim=32,
                  sample_width=16, sample_height=16, sample_frames=17, max_text_seq_length=16),
        video=Video(49, 480, 720), quick_video=Video(49, 480, 720), tiny_video=Video(17, 128, 128),
        text=(226, 0), tiny_text=(16, 0), inputs=cogvideox_inputs, steps_timed=5,
        source="THUDM/CogVideoX-5b transformer/config.json; diffusers scripts/convert_cogvideox_to_diffusers.py",
    ),
}


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build(spec: ModelSpec, tiny: bool, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The transformer with the model's own random init, created directly on `device` in `dtype`
    (a 13B model never passes through the CPU or float32)."""
    import diffusers

    cls = getattr(diffusers, spec.cls_name)
    config = {**spec.config, **(spec.tiny if tiny else {})}
    torch.manual_seed(0)
    with torch.device(device), default_dtype(dtype):
        model = cls(**config)
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.device.type != device.type or (t.is_floating_point() and t.dtype != dtype) for t in tensors):
        model = model.to(device=device, dtype=dtype)
    return model.eval().requires_grad_(False)


def grid(spec: ModelSpec, transformer, video: Video) -> tuple[int, int, int]:
    """(T, H, W) after patchify."""
    t, h, w = video.latent()
    p, p_t = transformer.config.patch_size, getattr(transformer.config, "patch_size_t", None) or 1
    return t // p_t, h // p, w // p


def nominal_spatial_density(grid_thw, text: int, frames: int) -> float:
    """Token-level density of the spatial window: video rows see their frame +-`frames` and the text,
    text rows see everything. Block rounding and padded text are left out: vidsparse reports the real one."""
    t, h, w = grid_thw
    hw = h * w
    s = t * hw + text
    video_rows = sum((min(t - 1, i + frames) - max(0, i - frames) + 1) * hw + text for i in range(t)) * hw
    return (video_rows + text * s) / (s * s)


def choose_frames(grid_thw, text: int, target: float) -> int:
    return min(range(grid_thw[0]), key=lambda f: abs(nominal_spatial_density(grid_thw, text, f) - target))


# ---------------------------------------------------------------------------- timing
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Start/stop marks: CUDA events on a GPU (no sync in between), perf_counter on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def __enter__(self):
        if self.cuda:
            self.start.record()
        else:
            self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.end.record()
        else:
            self.t1 = time.perf_counter()

    def ms(self) -> float:
        """Valid after a sync."""
        return self.start.elapsed_time(self.end) if self.cuda else (self.t1 - self.t0) * 1e3


def forward(transformer, inputs: dict) -> torch.Tensor:
    with torch.inference_mode():
        return transformer(**inputs)[0]


def time_forwards(transformer, inputs: dict, runs: int, device: torch.device) -> list[float]:
    """CUDA-event time of `runs` forwards, queued back to back; the caller has warmed up."""
    watches = []
    for _ in range(runs):
        with Stopwatch(device) as w:
            forward(transformer, inputs)
        watches.append(w)
    sync(device)
    return [w.ms() for w in watches]


def time_call(fn, runs: int, device: torch.device) -> float:
    fn()
    sync(device)
    watches = []
    for _ in range(runs):
        with Stopwatch(device) as w:
            fn()
        watches.append(w)
    sync(device)
    return statistics.median(w.ms() for w in watches)


class SDPARecorder:
    """Times every F.scaled_dot_product_attention call while installed, per call shape, and can keep the
    first call of each shape so that it can be replayed alone. Stock diffusers processors and its native
    attention backend look the function up on torch.nn.functional at call time, so rebinding it there
    for the span of some forwards sees every call; it is put back on exit."""

    def __init__(self, device: torch.device, capture: bool):
        self.device, self.capture = device, capture
        self.calls: list[tuple[str, Stopwatch]] = []
        self.first: dict[str, tuple[tuple, dict]] = {}

    @staticmethod
    def key(args, kwargs) -> str:
        q = kwargs.get("query", args[0] if args else None)
        k = kwargs.get("key", args[1] if len(args) > 1 else None)
        mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
        m = "none" if mask is None else f"{tuple(mask.shape)} {mask.dtype}"
        return f"q{tuple(q.shape)} k{tuple(k.shape)} {q.dtype} mask {m}"

    def __enter__(self):
        self.original = F.scaled_dot_product_attention

        def timed(*args, **kwargs):
            key = self.key(args, kwargs)
            if self.capture and key not in self.first:
                self.first[key] = (args, kwargs)
            with Stopwatch(self.device) as w:
                out = self.original(*args, **kwargs)
            self.calls.append((key, w))
            return out

        F.scaled_dot_product_attention = timed
        return self

    def __exit__(self, *exc):
        F.scaled_dot_product_attention = self.original

    def times(self) -> dict[str, list[float]]:
        """Per call shape, the ms of every call (valid after a sync)."""
        shapes: dict[str, list[float]] = {}
        for key, w in self.calls:
            shapes.setdefault(key, []).append(w.ms())
        return shapes

    def replay(self, runs: int) -> dict[str, float]:
        """Per captured call shape, the median ms of that call run alone; then frees the captured q, k, v."""
        out = {key: time_call(lambda: self.original(*args, **kwargs), runs, self.device)
               for key, (args, kwargs) in self.first.items()}
        self.first.clear()
        return out


def stock_attention(warm: SDPARecorder, replay: dict[str, float], timed: SDPARecorder, forwards: int) -> dict:
    """Attention time of one stock step: in situ (median per call shape over the timed forwards x calls per
    forward) and replayed (each call shape alone on the warm-up's captured inputs x calls per forward)."""
    in_situ = timed.times()
    rows = []
    for key, times in warm.times().items():
        calls = len(times)
        situ = in_situ.get(key, [])
        rows.append({
            "shape": key, "calls": calls, "in_situ_ms": statistics.median(situ) if situ else None,
            "in_situ_calls": len(situ), "expected_in_situ_calls": calls * forwards, "replay_ms": replay[key],
        })
    return {
        "calls": sum(r["calls"] for r in rows),
        "in_situ_ms": sum(r["calls"] * (r["in_situ_ms"] or 0.0) for r in rows),
        "replay_ms": sum(r["calls"] * r["replay_ms"] for r in rows),
        "shapes": rows,
    }


# ---------------------------------------------------------------------------- checks
def errors(out: torch.Tensor, ref: torch.Tensor) -> dict:
    diff = out.float() - ref.float()
    return {
        "max_abs": diff.abs().max().item(),
        "rel_l2": (diff.norm() / ref.float().norm().clamp_min(1e-30)).item(),
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


def output_stats(out: torch.Tensor) -> dict:
    x = out.float()
    return {"finite": bool(torch.isfinite(x).all()), "rms": x.pow(2).mean().sqrt().item()}


# ---------------------------------------------------------------------------- one model
@dataclass
class Variant:
    name: str
    config: object  # what vidsparse.apply gets; None = stock processors


@dataclass
class Args:
    device: torch.device
    dtype: torch.dtype
    tiny: bool
    batch: int
    runs: int | None
    video: Callable
    frames_override: int | None
    target: float
    block: int | None
    recheck: str
    replay_runs: int
    deadline: float  # time.perf_counter() value by which the timed forwards should be done


def bench_model(name: str, a: Args) -> dict:
    import vidsparse

    spec = MODELS[name]
    device = a.device
    video = a.video(spec)
    runs = a.runs or spec.steps_timed
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    transformer = build(spec, a.tiny, device, a.dtype)
    sync(device)
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in transformer.parameters())
    weights_gib = torch.cuda.memory_allocated(device) / GIB if device.type == "cuda" else None
    gen = torch.Generator(device=device).manual_seed(0)
    inputs = spec.inputs(transformer, video, spec.tiny_text if a.tiny else spec.text, a.batch, device, a.dtype, gen)
    thw = grid(spec, transformer, video)
    text = inputs["encoder_hidden_states"].shape[1]
    seq = thw[0] * thw[1] * thw[2] + text
    cfg = transformer.config
    heads = cfg.num_attention_heads
    head_dim = cfg.attention_head_dim
    frames = a.frames_override if a.frames_override is not None else choose_frames(thw, text, a.target)
    blocks = {"q_block": a.block, "k_block": a.block} if a.block else {}
    variants = [
        Variant("stock", None),
        Variant("vidsparse dense", "dense"),
        Variant(f"vidsparse spatial frames={frames}",
                vidsparse.SparseConfig(method="spatial", frames=frames, **blocks)),
        # a window over every frame: density 1 through the Triton kernel rather than the stock SDPA call
        Variant("vidsparse kernel density 1", vidsparse.SparseConfig(method="spatial", frames=thw[0], **blocks)),
    ]
    row = {
        "model": name, "class": spec.cls_name, "config_source": spec.source, "params": params,
        "build_s": build_s, "weights_gib": weights_gib, "video": vars(video),
        "latent": list(inputs["hidden_states"].shape),
        "grid": list(thw), "text_tokens": text, "seq_len": seq, "heads": heads, "head_dim": head_dim, "batch": a.batch,
        "runs": runs, "spatial_frames": frames, "nominal_spatial_density": nominal_spatial_density(thw, text, frames),
        "variants": [], "restore_checks": [],
    }
    print(f"{name}: {spec.cls_name} {params / 1e9:.2f}B params built in {build_s:.1f} s, latent "
          f"{row['latent']}, grid {list(thw)}, {seq:,} tokens, {heads}x{head_dim}", flush=True)

    state0 = install_state(transformer)
    ref = None
    for variant in variants:
        handle = None if variant.config is None else vidsparse.apply(transformer, variant.config)
        t0 = time.perf_counter()
        stock = variant.config is None
        # Stock: the warm-up captures each attention call shape's inputs, to replay them alone later.
        with SDPARecorder(device, capture=True) if stock else contextlib.nullcontext() as warm:
            out = forward(transformer, inputs)  # warm-up (compiles vidsparse's kernels); its output is checked
        sync(device)
        warmup_s = time.perf_counter() - t0
        replay = warm.replay(a.replay_runs) if stock else None  # before the timed forwards: frees q, k, v
        # The device kills a command at its time limit: fit the timed forwards into what is left (at least one).
        n = min(runs, max(1, int((a.deadline - time.perf_counter()) / warmup_s)))
        if n < runs:
            print(f"  {variant.name}: {n} timed forwards instead of {runs} to stay within --budget-s", flush=True)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        # Stock: the timed forwards also time each attention call in situ (two event records per call).
        with SDPARecorder(device, capture=False) if stock else contextlib.nullcontext() as timed:
            times = time_forwards(transformer, inputs, n, device)
        attention = stock_attention(warm, replay, timed, n) if stock else None
        del warm
        entry = {
            "name": variant.name, "config": None if variant.config is None else str(variant.config),
            "ms": statistics.median(times), "times_ms": times, "warmup_s": warmup_s,
            "peak_gib": torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None,
            "output": output_stats(out),
        }
        if stock:
            ref = out
            entry["attention"] = attention
            entry["attention_share_in_situ"] = attention["in_situ_ms"] / entry["ms"]
            entry["attention_share_replay"] = attention["replay_ms"] / entry["ms"]
        else:
            entry["error_vs_stock"] = errors(out, ref)
            entry["report"] = handle.report()
            handle.remove()
            check = {"after": variant.name, "state_restored": install_state(transformer) == state0}
            if a.recheck == "each" or variant is variants[-1]:
                check["stock_rerun"] = errors(forward(transformer, inputs), ref)
            row["restore_checks"].append(check)
        del out
        row["variants"].append(entry)
        print(describe(entry, row["variants"][0]), flush=True)

    del transformer, inputs, ref
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def describe(entry: dict, stock: dict) -> str:
    line = f"  {entry['name']:32s} {entry['ms']:10.1f} ms"
    if entry["peak_gib"] is not None:
        line += f"  peak {entry['peak_gib']:6.1f} GiB"
    if "attention" in entry:
        att = entry["attention"]
        line += (f"  attention {att['calls']} calls: in situ {att['in_situ_ms']:.1f} ms "
                 f"({100 * entry['attention_share_in_situ']:.0f}%), replayed {att['replay_ms']:.1f} ms "
                 f"({100 * entry['attention_share_replay']:.0f}%)")
    else:
        e, r = entry["error_vs_stock"], entry["report"]
        line += (f"  x{stock['ms'] / entry['ms']:.2f}  err max {e['max_abs']:.2e} rel {e['rel_l2']:.2e}  "
                 f"density {r['density']:.3f}  layers {r['layers']}  fallbacks {len(r['fallbacks'])}")
    if not entry["output"]["finite"]:
        line += "  NON-FINITE OUTPUT"
    return line


# ---------------------------------------------------------------------------- reporting
def environment(argv, device: torch.device) -> dict:
    import diffusers
    import triton

    import vidsparse

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "triton": triton.__version__, "diffusers": diffusers.__version__,
        "vidsparse": vidsparse.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "command": "python " + " ".join(shlex.quote(x) for x in ["pipelines/bench_step.py", *argv]),
    }


def summary_rows(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        stock, dense, spatial, kernel = (r["variants"] + [None] * 4)[:4]
        if spatial is None:
            continue
        kernel = kernel or {"ms": float("nan"), "error_vs_stock": {"max_abs": float("nan"), "rel_l2": float("nan")}}
        out.append({
            "model": r["model"], "tokens": r["seq_len"], "stock_ms": stock["ms"], "dense_ms": dense["ms"],
            "spatial_ms": spatial["ms"], "dense_speedup": stock["ms"] / dense["ms"],
            "spatial_speedup": stock["ms"] / spatial["ms"], "dense_rel_l2": dense["error_vs_stock"]["rel_l2"],
            "dense_max_abs": dense["error_vs_stock"]["max_abs"], "spatial_rel_l2": spatial["error_vs_stock"]["rel_l2"],
            "spatial_frames": r["spatial_frames"], "spatial_density": spatial["report"]["density"],
            "kernel_ms": kernel["ms"], "kernel_speedup": stock["ms"] / kernel["ms"],
            "kernel_max_abs": kernel["error_vs_stock"]["max_abs"], "kernel_rel_l2": kernel["error_vs_stock"]["rel_l2"],
            "attention_share": stock["attention_share_in_situ"],
            "restored": all(c["state_restored"] for c in r["restore_checks"])
            and all(c["stock_rerun"]["rel_l2"] < 1e-3 for c in r["restore_checks"] if "stock_rerun" in c),
        })
    return out


def table(summary: list[dict]) -> list[str]:
    lines = [
        "| model | tokens | stock ms | dense ms | spatial ms | dense x | spatial x | dense err max / rel | "
        "spatial rel err | spatial frames / density | kernel d=1 ms (x) | kernel d=1 err max / rel | "
        "attention share (stock) | restored |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(
            f"| {s['model']} | {s['tokens']:,} | {s['stock_ms']:.1f} | {s['dense_ms']:.1f} | {s['spatial_ms']:.1f} | "
            f"{s['dense_speedup']:.2f}x | {s['spatial_speedup']:.2f}x | "
            f"{s['dense_max_abs']:.1e} / {s['dense_rel_l2']:.1e} | "
            f"{s['spatial_rel_l2']:.1e} | {s['spatial_frames']} / {s['spatial_density']:.3f} | "
            f"{s['kernel_ms']:.1f} ({s['kernel_speedup']:.2f}x) | {s['kernel_max_abs']:.1e} / {s['kernel_rel_l2']:.1e} | "
            f"{100 * s['attention_share']:.0f}% | {s['restored']} |"
        )
    return lines


def write_results(env: dict, rows: list[dict], out_dir: Path) -> list[str]:
    summary = summary_rows(rows)
    payload = {**env, "summary": summary, "models": rows}
    (out_dir / "bench_step.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    lines = [
        "# Step benchmark: one transformer forward, stock diffusers vs vidsparse",
        "",
        f"Produced by `{env['command']}` on {env['date']}.",
        f"Device {env['device']}, torch {env['torch']}, triton {env['triton']}, diffusers {env['diffusers']}, "
        f"vidsparse {env['vidsparse']}, CUDA {env['cuda']}.",
        "",
        "Full-size transformers with random weights (the models' own init), built on the device; one denoising "
        "step (one forward) on the same random inputs for every variant. Times are medians of CUDA-event timings "
        "after one warm-up forward, under torch.inference_mode(). Errors compare the output latent with the stock "
        "one (max abs, relative L2). Density is vidsparse's realised mean attention density over replaced layers "
        "and calls. Attention share: CUDA events around every stock F.scaled_dot_product_attention call during "
        "the timed forwards, median per call shape x calls per step, over the stock step time; also each call "
        "shape replayed alone on captured inputs.",
        "",
        "## Summary",
        "",
        *table(summary),
    ]
    for r in rows:
        lines += [
            "",
            f"## {r['model']}: {r['class']}, {r['params'] / 1e9:.2f}B parameters",
            "",
            f"- config: {r['config_source']}",
            f"- video {r['video']['frames']} frames at {r['video']['height']}x{r['video']['width']} -> latent "
            f"{r['latent']}, grid (T, H, W) {r['grid']}, {r['text_tokens']} text tokens, {r['seq_len']:,} tokens, "
            f"{r['heads']} heads x {r['head_dim']}, batch {r['batch']}; {r['runs']} timed forwards per variant",
            f"- build {r['build_s']:.1f} s" + (f", weights {r['weights_gib']:.1f} GiB" if r["weights_gib"] else ""),
            f"- spatial window: frames={r['spatial_frames']} (nominal token-level density "
            f"{r['nominal_spatial_density']:.3f})",
            "",
            "| variant | ms / step | all runs ms | warm-up s | peak GiB | vs stock | max abs err | rel L2 err | "
            "density | "
            "layers | fallbacks |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        stock = r["variants"][0]
        for v in r["variants"]:
            peak = f"{v['peak_gib']:.1f}" if v["peak_gib"] is not None else "-"
            runs = ", ".join(f"{t:.1f}" for t in v["times_ms"])
            if "report" in v:
                e, rep = v["error_vs_stock"], v["report"]
                rest = (f"{stock['ms'] / v['ms']:.2f}x | {e['max_abs']:.2e} | {e['rel_l2']:.2e} | "
                        f"{rep['density']:.3f} | "
                        f"{rep['layers']} | {', '.join(rep['fallbacks']) or 'none'}")
            else:
                rest = "1.00x | - | - | 1.000 | - | -"
            flag = "" if v["output"]["finite"] else " (non-finite output)"
            lines.append(f"| {v['name']}{flag} | {v['ms']:.1f} | {runs} | {v['warmup_s']:.1f} | {peak} | {rest} |")
        att, share = stock["attention"], stock["attention_share_in_situ"]
        limit = f"{1 / (1 - share):.1f}x" if share < 1 else "unbounded"
        lines += [
            "",
            f"Stock attention: {att['calls']} SDPA calls per step, {att['in_situ_ms']:.1f} ms in situ "
            f"({100 * share:.0f}% of the step), {att['replay_ms']:.1f} ms replayed alone "
            f"({100 * stock['attention_share_replay']:.0f}%); with attention free the step would be {limit} faster.",
            "",
            "| SDPA call shape | calls per step | in situ ms (median) | replayed ms (median) |",
            "|---|---|---|---|",
        ]
        for s in att["shapes"]:
            situ = f"{s['in_situ_ms']:.2f}" if s["in_situ_ms"] is not None else "-"
            lines.append(f"| {s['shape']} | {s['calls']} | {situ} | {s['replay_ms']:.2f} |")
        lines += ["", "Removal: " + "; ".join(
            f"after {c['after']}: processors and hooks restored {c['state_restored']}"
            + (f", stock rerun max abs {c['stock_rerun']['max_abs']:.1e} (bitwise {c['stock_rerun']['bitwise_equal']})"
               if "stock_rerun" in c else "")
            for c in r["restore_checks"]
        )]
    (out_dir / "BENCH_STEP.md").write_text("\n".join(lines) + "\n")
    return table(summary)


# ---------------------------------------------------------------------------- main
def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # The cheap model first: if HunyuanVideo (about 30 s a forward at 720p) runs out of time, CogVideoX is done.
    parser.add_argument("--models", default="cogvideox-5b,hunyuanvideo", help=f"comma list of {', '.join(MODELS)}")
    parser.add_argument("--steps-timed", type=int, default=None,
                        help="timed forwards per variant after the warm-up (default: hunyuanvideo 3, cogvideox-5b 5)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for BENCH_STEP.md and bench_step.json "
                        "(default pipelines/; a temp folder with --dry-run)")
    parser.add_argument("--frames", type=int, default=None, help="video frames, pixel space (every model selected)")
    parser.add_argument("--height", type=int, default=None, help="video height in pixels (every model selected)")
    parser.add_argument("--width", type=int, default=None, help="video width in pixels (every model selected)")
    parser.add_argument("--batch", type=int, default=1, help="batch size of the forward (a CFG step is 2)")
    parser.add_argument("--quick", action="store_true", help="HunyuanVideo at 544x960 (67,576 tokens) instead of 720p")
    parser.add_argument("--target-density", type=float, default=0.15, help="picks the spatial window's frames")
    parser.add_argument("--spatial-frames", type=int, default=None,
                        help="the spatial window's frames, overriding the pick")
    parser.add_argument("--recheck", choices=("last", "each"), default="last",
                        help="rerun the stock forward after the last removal only, or after each")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="wall-clock budget: timed forwards are cut (to one per variant at least) to end by then")
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU, float32, tiny models (2 heads, 1-2 layers) and tiny latents: tests the flow")
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {list(MODELS)}")
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("the benchmark needs a CUDA GPU (or use --dry-run)")
    return args, models


def main(argv=None) -> int:
    start = time.perf_counter()
    argv = sys.argv[1:] if argv is None else argv
    args, models = parse(argv)
    if args.dry_run:
        # The Triton kernels can only run in the interpreter on the CPU, and triton reads this when it is
        # first imported (diffusers imports it), so it is set before diffusers and vidsparse are imported.
        os.environ.setdefault("TRITON_INTERPRET", "1")
    device = torch.device("cpu" if args.dry_run else "cuda")

    def video_for(spec: ModelSpec) -> Video:
        base = spec.tiny_video if args.dry_run else spec.quick_video if args.quick else spec.video
        return Video(args.frames or base.frames, args.height or base.height, args.width or base.width)

    a = Args(
        device=device, dtype=torch.float32 if args.dry_run else torch.bfloat16, tiny=args.dry_run,
        batch=args.batch, runs=args.steps_timed or (1 if args.dry_run else None), video=video_for,
        frames_override=args.spatial_frames, target=args.target_density, block=32 if args.dry_run else None,
        recheck="each" if args.dry_run else args.recheck, replay_runs=1 if args.dry_run else 3,
        deadline=start + args.budget_s,
    )
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="bench_step_dry_")) if args.dry_run else HERE)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = environment(argv, device)
    rows, lines = [], []
    for name in models:
        rows.append(bench_model(name, a))
        lines = write_results(env, rows, out_dir)  # a run cut short still leaves what it measured
    print(f"\nwrote {out_dir / 'BENCH_STEP.md'} and {out_dir / 'bench_step.json'}\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
