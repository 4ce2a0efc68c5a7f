"""One benchmark run: every variant of every model, its checks, and the per-model result rows."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import statistics
import time
from dataclasses import dataclass

import torch

from ...methods.config import SparseConfig
from ..report import choice_shares
from ...core.layout import TokenLayout
from .catalogue import MODELS, ModelSpec, Video, build_transformer
from .methods import MethodSpec, bench_method_config, window_text
from .report import fmt_number
from .timing import FAST_SDPA, SDPARecorder, fast_sdpa, replay_calls, run_forward, stock_attention, sync, time_forwards

logger = logging.getLogger(__name__)

__all__ = ["Options", "Variant", "bench_model", "install_state", "passed"]

GIB = 2**30
DRY_RUN_BLOCK = 16  # mask blocks of the tiny models: half a tiny frame


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
    """What `apply` may change and `remove` must put back: processors (by identity; read off the attention modules
    where the transformer has no `attn_processors`, as Cosmos and Mochi), diffusers hooks and instance-level
    forwards."""
    from ...pipelines.apply import attn_processors

    return {
        "processors": {name: id(p) for name, p in attn_processors(transformer).items()},
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


@dataclass
class Variant:
    """One way of running the forward.

    Attributes:
        name: its label in the tables.
        config: what `vidsparse.apply` gets; None keeps the stock processors.
        sdpa: SDPBackend names the forward runs under (`fast_sdpa`); None leaves torch's default choice.
        untimed: forwards before the timed ones (the first compiles the kernels); the last one's output is the
            one compared with stock. A cached method's later steps are timed after its refresh and choosing steps.
    """

    name: str
    config: SparseConfig | None = None
    sdpa: tuple[str, ...] | None = None
    untimed: int = 1


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
    fast_sdpa: bool = True  # run the "stock, fast SDPA" variant

    def video(self, spec: ModelSpec) -> Video:
        base = spec.tiny_video if self.tiny else spec.quick_video if self.quick else spec.video
        frames, height, width = self.size
        return Video(frames or base.frames, height or base.height, width or base.width)


def bench_model(name: str, opts: Options, progress) -> dict:
    """Every variant of one model; the model is freed before returning."""
    from ...pipelines import adapter_for

    spec, device = MODELS[name], opts.device
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    transformer = build_transformer(spec, opts.tiny, device, opts.dtype)
    sync(device)
    build_s = time.perf_counter() - start
    video = opts.video(spec)
    gen = torch.Generator(device=device).manual_seed(0)
    text_tokens = spec.tiny_text if opts.tiny else spec.text  # (tokens, of which padding)
    inputs = spec.inputs(transformer, video, text_tokens, opts.batch, device, opts.dtype, gen)
    adapter = adapter_for(transformer)
    text = text_tokens[0] if adapter.text_position else 0
    layout = TokenLayout(*_grid(adapter, transformer, inputs), text, adapter.text_position or "start")
    block = DRY_RUN_BLOCK if opts.tiny else None
    fast = Variant("stock, fast SDPA", sdpa=FAST_SDPA)
    variants = [Variant("stock"), *([fast] if opts.fast_sdpa else []), Variant("vidsparse dense", SparseConfig())]
    variants += [Variant(m.text, bench_method_config(m, layout, block, device), untimed=m.untimed)
                 for m in opts.methods]
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
                check["stock_rerun"] = _errors(run_forward(transformer, inputs), ref)
            row["restore_checks"].append(check)
        del out
        row["variants"].append(entry)
        logger.info("%s", _describe(entry, row["variants"][0]))
        progress.update(1)
    del transformer, inputs, ref
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def _grid(adapter, transformer, inputs: dict) -> tuple[int, int, int]:
    """The latent grid after patchify as the step hook reads it: off the forward's arguments (LTX's flattened
    tokens) or off `hidden_states`."""
    if adapter.grid_from_arguments is not None:
        grid = adapter.grid_from_arguments(transformer, inputs)
        if grid is None:
            raise ValueError(f"{adapter.name}: the bench's inputs give no latent grid (the arguments the adapter reads)")
        return grid
    return adapter.latent_grid(transformer, inputs["hidden_states"])


def _run_variant(transformer, inputs: dict, variant: Variant, runs: int, opts: Options) -> tuple[dict, torch.Tensor]:
    """Warm-up (its output is returned), then the timed forwards; for vidsparse also the report and removal."""
    import vidsparse

    device, stock = opts.device, variant.config is None and variant.sdpa is None
    handle = None if variant.config is None else vidsparse.apply(transformer, variant.config)
    context = fast_sdpa(variant.sdpa) if variant.sdpa else contextlib.nullcontext()
    with context:
        warmups = []
        for i in range(variant.untimed):
            start = time.perf_counter()
            # Stock: the warm-up captures each attention call shape's inputs, to replay them alone.
            with SDPARecorder(device, capture=True) if stock else contextlib.nullcontext() as warm:
                out = run_forward(transformer, inputs)
            sync(device)
            warmups.append(time.perf_counter() - start)
            if i + 1 < variant.untimed:
                del out
        warmup_s = warmups[-1]
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
            times = time_forwards(transformer, inputs, n, device)
    entry = {
        "name": variant.name, "config": None if variant.config is None else dataclasses.asdict(variant.config),
        "window": window_text(variant.config), "sdpa": list(variant.sdpa) if variant.sdpa else None,
        "ms": statistics.median(times), "times_ms": times, "warmup_s": warmups[0], "untimed_s": warmups,
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
        entry["report"]["choices"] = choice_shares(report)  # the per-head method map, summed
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
        line += (f"  x{stock['ms'] / entry['ms']:.2f}  err max {fmt_number(err['max_abs'], '.2e')} "
                 f"rel {fmt_number(err['rel_l2'], '.2e')}")
    if "backends" in entry:
        line += "  backends " + ", ".join(f"{k} x{v}" for k, v in entry["backends"].items())
    if "report" in entry:
        rep = entry["report"]
        line += (f"  {entry['window']}  density {rep['density']:.3f}  layers {rep['layers']}  "
                 f"fallbacks {len(rep['fallbacks'])}")
    if not entry["finite"]:
        line += "  NON-FINITE OUTPUT"
    return line


def passed(rows: list[dict]) -> bool:
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
