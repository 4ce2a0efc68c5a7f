"""Full-size step times of the `profile` and `delta` methods, their overheads, and mask and cache memory.

Run on a CUDA GPU from the repository root (bf16, random weights built on the GPU, nothing downloaded):

    python pipelines/bench_methods.py --models hunyuanvideo        # -> pipelines/BENCH_METHODS_hunyuanvideo.{md,json}
    python pipelines/bench_methods.py --models cogvideox-5b
    python pipelines/bench_methods.py --dry-run                     # CPU: tiny models, the whole flow, a temp folder

Per model, in one process, one denoising step of the transformer (the pipeline's inputs at the model config's size):
- `stock`: diffusers as shipped; `vidsparse dense`: vidsparse's own kernel at density 1 (the fastest dense here);
- `profile`: Sparse VideoGen's online profiling. Random weights make every head diffuse, so the planner's choice is
  replaced by a fixed per-head draw with the mix of choices the yardstick measured (`--profile-mix`, read from
  yardstick/sweep.json when present); the real profiling still runs at every call, so its cost is in the time;
- `delta refresh` and `delta`: the cached-delta method's refresh step (column selection, the rest, their merge, cache
  store) and delta step (top_keys of the columns recomputed), with the whole cache on the GPU, and a delta step with
  `--cache-budget` GiB on the GPU and the rest offloaded to host memory; peak GPU memory of each;
- `hybrid refresh`, `hybrid choosing step` and `hybrid step`: the hybrid method's three kinds of step (every head
  refreshed; sampled rows measured, choices made and the plan built; the plan reused), its choices forced to the
  mix the yardstick measured (`--hybrid-mix`, from yardstick/sweep.json's `hybrid_mix`), its static candidate the
  yardstick's searched patterns dealt out to the model;
- peak host memory (RSS) beside each GPU peak, both counted from the start of the variant: a variant's rows share
  them (delta's refresh and step, the hybrid's three rows), and stock's host peak includes building the model;
- the implied 50-step totals: the measured dense, refresh, delta and hybrid step times times each method's schedule,
  warm-up steps included, and the share of the hybrid's time spent choosing;
- attention-level overheads at the model's shape: profiling (`ProfilePlanner.choose` and the plan) and the token
  permutations against the attention that runs, and the static method's stored mask memory for every layer.

Each variant checks its output against stock first (finite, relative error), warms up once, then takes the median
of `--runs` timed steps (CUDA events around the forward, synchronised).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
log = logging.getLogger("bench_methods")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, runs: int, device) -> list[float]:
    times = []
    for _ in range(runs):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def _rel(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


def _mix(args) -> dict:
    if args.profile_mix:
        s, t, d = (float(x) for x in args.profile_mix.split(","))
        return {"spatial": s, "temporal": t, "dense": d, "source": "--profile-mix"}
    sweep = ROOT / "yardstick" / "sweep.json"
    if sweep.exists():
        data = json.loads(sweep.read_text())
        mix = data.get("profile_mix")
        if mix:
            return {**{k: float(mix[k]) for k in ("spatial", "temporal", "dense")}, "source": "yardstick/sweep.json"}
    return {"spatial": 0.4, "temporal": 0.3, "dense": 0.3, "source": "default (no yardstick sweep found)"}


class _ForcedMix:
    """Wraps a ProfilePlanner: runs its real choice (so the profiling cost is measured), then returns a fixed
    seeded per-(layer, head) draw with the given mix of spatial / temporal / dense."""

    def __init__(self, planner, mix: dict, seed: int = 0):
        self.planner, self.mix, self.seed, self._draws = planner, mix, seed, {}
        self.choose = planner.choose
        planner.choose = self._choose

    def _choose(self, ctx, probe):
        real = self.choose(ctx, probe)
        key = (ctx.layer, tuple(real.shape), str(real.device))
        if key not in self._draws:
            gen = torch.Generator().manual_seed(self.seed + ctx.layer)
            p = torch.tensor([self.mix["spatial"], self.mix["temporal"], self.mix["dense"]])
            self._draws[key] = torch.multinomial(p, real.numel(), replacement=True, generator=gen).view(
                real.shape).to(real.device)
        return self._draws[key]


def _hybrid_mix(args) -> dict:
    from vidsparse.app.bench.forced import hybrid_mix

    return hybrid_mix(args.hybrid_mix, ROOT / "yardstick" / "sweep.json")


def hybrid_schedule(steps: int, refresh_steps, every: int) -> dict:
    """How many of `steps` steps a hybrid run refreshes, chooses and reuses its choice (refresh steps, and any
    step before the first cache, refresh; the first step after a refresh and every `every`-th after it choose)."""
    counts = {"refresh": 0, "choose": 0, "reuse": 0}
    since = None
    for step in range(steps):
        if step in refresh_steps or since is None and step == 0:
            counts["refresh"] += 1
            since = 0
            continue
        counts["choose" if since % every == 0 else "reuse"] += 1
        since += 1
    return counts


def bench_model(name: str, args, mix: dict, out: dict, save) -> None:
    import vidsparse
    from vidsparse import SparseConfig
    from vidsparse.app.bench.catalogue import MODELS, TINY_VIDEO, build_transformer
    from vidsparse.app.runinfo import host_peak_gib, reset_host_peak

    spec = MODELS[name]
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    tiny = args.dry_run
    video = TINY_VIDEO if tiny else spec.video
    text = spec.tiny_text if tiny else spec.text
    started = time.perf_counter()
    transformer = build_transformer(spec, tiny, device, dtype)
    batch = 2 if name.startswith("cogvideox") else 1  # CogVideoX batches its CFG branches; HunyuanVideo is distilled
    gen = torch.Generator(device=device).manual_seed(0)
    inputs = spec.inputs(transformer, video, text, batch, device, dtype, gen)
    entry = out.setdefault("models", {}).setdefault(name, {"video": str(video), "batch": batch, "variants": {}})
    entry["build_s"] = round(time.perf_counter() - started, 1)
    q_block = 32 if tiny else 128

    def forward():
        with torch.no_grad():
            return transformer(**inputs)[0]

    def record(label, times, output, reference, extra=None):
        row = {"median_s": statistics.median(times), "times_s": [round(t, 4) for t in times],
               "rel_err_vs_stock": None if reference is None else _rel(output, reference),
               "finite": bool(torch.isfinite(output).all()),
               "host_peak_gib": host_peak_gib()}  # since the variant's start where Linux resets it, else the process
        row.update(extra or {})
        entry["variants"][label] = row
        log.info("%s %s: %.3f s (%s)", name, label, row["median_s"], {k: v for k, v in row.items() if k != "times_s"})
        save()

    runs = 1 if tiny else args.runs
    wanted = set(args.variants.split(","))

    def fresh():  # drop the previous variant's caches before the next one measures memory
        gc.collect()
        reset_host_peak()
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            entry["baseline_gb"] = torch.cuda.memory_allocated(device) / 2**30

    # stock: the warm-up step's output is the reference of every variant
    stock = None
    if "stock" in wanted:
        stock = forward()
        record("stock", _time(forward, runs, device), stock, None)
    # the rest, each through vidsparse
    dense_cfg = SparseConfig.make("spatial", frames=10_000, q_block=q_block, k_block=q_block)
    variants = [("vidsparse dense", dense_cfg, None)] if "dense" in wanted else []
    profile_cfg = SparseConfig.make("profile", fraction=0.25, q_block=q_block, k_block=q_block)
    if "profile" in wanted:
        variants.append(("profile", profile_cfg, "forced"))
    if "dynamic" in wanted:  # this call's q and k choose the blocks; --dynamic-density caps them (max_density)
        variants.append(("dynamic", SparseConfig.make("dynamic", top_p=args.dynamic_top_p, q_block=q_block,
                                                      k_block=q_block, max_density=args.dynamic_density), None))
    for label, config, special in variants:
        if time.perf_counter() - started > args.budget_s:
            entry["variants"][label] = {"skipped": "time budget"}
            continue
        fresh()
        handle = vidsparse.apply(transformer, config)
        if special == "forced":
            _ForcedMix(handle.runtimes[0].planner, mix)
        first = forward()
        handle.reset()
        times = _time(lambda: (forward(), handle.reset()), runs, device)
        report = handle.report()
        record(label, times, first, stock, {
            "density": report["density"], "fallbacks": report["fallbacks"],
            "peak_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None})
        handle.remove()
        del handle
    # delta: refresh steps and delta steps, the whole cache on the GPU, then with a budget
    for label, budget in (("delta", None), ("delta, offloaded", int(args.cache_budget * 2**30))):
        if ("delta" if budget is None else "offload") not in wanted:
            continue
        if time.perf_counter() - started > args.budget_s:
            entry["variants"][label] = {"skipped": "time budget"}
            continue
        config = SparseConfig.make("delta", top_keys=args.top_keys, refresh_steps=[0], q_block=q_block,
                                   voxel=[2, 4, 4] if tiny else [4, 4, 8], cache_budget=budget)
        fresh()
        handle = vidsparse.apply(transformer, config)
        refresh_out = forward()  # step 0: refresh
        delta_out = forward()    # step 1: delta
        if label == "delta":
            handle.reset()
            times = _time(lambda: (forward(), handle.reset()), runs, device)  # each a step 0: refresh
            record("delta refresh", times, refresh_out, stock,
                   {"peak_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None})
            forward()  # refresh again, so that the timed steps are delta steps
        else:
            forward()  # a delta step (step 2) before timing: the offloaded caches make their first round trip
        handle.runtimes[0].layers.clear()  # the density of the delta steps alone
        times = _time(forward, runs, device)
        report = handle.report()
        planner = report["transformers"][0]["planner"].get("delta_cache", {})
        record(label + " step", times, delta_out, stock, {
            "density": report["density"], "fallbacks": report["fallbacks"],
            "peak_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
            "offloaded_layers": len(planner.get("offloaded", [])),
            "uncached_layers": len(planner.get("uncached", [])),
            "cache_peak_device_gb": planner.get("peak_device_bytes", 0) / 2**30,
            "baseline_gb": entry.get("baseline_gb")})
        handle.remove()
        del handle, refresh_out, delta_out
    if "hybrid" in wanted:
        hybrid_variant(transformer, name, args, entry, forward, record, stock, fresh, started, device, q_block, tiny)
    if "attention" in wanted:
        fresh()
        entry["attention"] = attention_overheads(transformer, name, device, dtype, q_block, tiny, mix)
    save()
    entry["schedules_50_steps"] = schedules(entry["variants"])
    save()
    del transformer
    if device.type == "cuda":
        torch.cuda.empty_cache()


def hybrid_variant(transformer, name, args, entry, forward, record, stock, fresh, started, device, q_block, tiny):
    """The hybrid method's refresh, choosing and reusing steps, its heads' choices forced to the yardstick's mix
    (`--hybrid-mix`); the static candidate's patterns are the yardstick's searched ones dealt out to this model."""
    import vidsparse
    from vidsparse import SparseConfig
    from vidsparse.app.bench.forced import ForcedMixHybrid
    from vidsparse.app.report import choice_shares

    if time.perf_counter() - started > args.budget_s:
        entry["variants"]["hybrid step"] = {"skipped": "time budget"}
        return
    mix = _hybrid_mix(args)
    entry["hybrid_mix"] = mix
    patterns = transplanted_patterns(transformer, name, q_block, tiny, device)
    config = SparseConfig.make("hybrid", patterns=patterns, top_keys=args.top_keys, refresh_steps=[0],
                               every=args.hybrid_every, q_block=q_block, k_block=q_block,
                               cache_budget=None if args.hybrid_cache_budget is None else int(
                                   args.hybrid_cache_budget * 2**30),
                               voxel=[2, 4, 4] if tiny else [4, 4, 8])
    fresh()
    handle = vidsparse.apply(transformer, config, planner=ForcedMixHybrid(config, mix))
    refresh_out = forward()  # step 0: refresh, every head
    choose_out = forward()   # step 1: measures, chooses, builds the plan
    forward()                # step 2: reuses it (warm)
    handle.reset()
    sync = lambda: torch.cuda.synchronize(device) if device.type == "cuda" else None  # noqa: E731
    times = {"refresh": [], "choose": [], "reuse": []}
    runs = 1 if tiny else args.runs
    for _ in range(runs):  # each round: a fresh generation of refresh, choose, reuse
        handle.reset()
        for label in ("refresh", "choose", "reuse"):
            sync()
            t0 = time.perf_counter()
            forward()
            sync()
            times[label].append(time.perf_counter() - t0)
    handle.runtimes[0].layers.clear()
    reuse_out = forward()  # step 3 of the last round: a reusing step, its density alone
    if args.trace_hybrid and device.type == "cuda":  # where a reusing step's time goes: the top GPU and CPU ops
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            forward()
            sync()
        entry["hybrid_trace"] = prof.key_averages().table(sort_by="cuda_time_total", row_limit=20)
        log.info("%s", entry["hybrid_trace"])
    report = handle.report()
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    record("hybrid refresh", times["refresh"], refresh_out, stock, {"peak_gb": peak})
    record("hybrid choosing step", times["choose"], choose_out, stock)
    record("hybrid step", times["reuse"], reuse_out, stock, {
        "density": report["density"], "fallbacks": report["fallbacks"], "peak_gb": peak,
        "choices": choice_shares(report)})
    handle.remove()
    del handle, refresh_out, choose_out, reuse_out


def transplanted_patterns(transformer, name, q_block, tiny, device) -> str:
    """A pattern file for this model: the yardstick's searched patterns dealt out to its layers and heads."""
    from vidsparse.app.bench import forced
    from vidsparse.core.layout import TokenLayout

    if name == "hunyuanvideo":
        grid, text_len, position = ((5, 4, 8), 16, "end") if tiny else ((33, 45, 80), 256, "end")
    else:
        grid, text_len, position = ((5, 4, 8), 16, "start") if tiny else ((13, 30, 45), 226, "start")
    layout = TokenLayout(*grid, text_len=text_len, text_position=position)
    return forced.transplanted_patterns(transformer, layout, q_block, device, Path(tempfile.mkdtemp()))


def schedules(v: dict) -> dict:
    """50-step totals implied by the measured step times and each method's schedule, warm-up included."""
    get = lambda k: v.get(k, {}).get("median_s")  # noqa: E731
    stock, dense, profile = get("stock"), get("vidsparse dense"), get("profile")
    refresh, delta = get("delta refresh"), get("delta step")
    out = {}
    if stock:
        out["stock"] = 50 * stock
    if stock and profile:
        out["profile (12 dense warm-up steps + 38 profiled)"] = 12 * stock + 38 * profile
    if refresh and delta:
        out["delta (refresh at 0, 1, 10, 40; 46 delta steps)"] = 4 * refresh + 46 * delta
    h_refresh, h_choose, h_reuse = get("hybrid refresh"), get("hybrid choosing step"), get("hybrid step")
    planning = {}
    if h_refresh and h_choose and h_reuse:
        for every in (4, 8):  # the measured steps under two choosing intervals
            n = hybrid_schedule(50, (0, 1, 10, 40), every)
            key = (f"hybrid, every {every} (refresh at 0, 1, 10, 40; {n['choose']} choosing, {n['reuse']} reusing "
                   "steps)")
            out[key] = n["refresh"] * h_refresh + n["choose"] * h_choose + n["reuse"] * h_reuse
            planning[f"hybrid, every {every}: share of time choosing (choosing minus reusing steps)"] = (
                n["choose"] * max(0.0, h_choose - h_reuse) / out[key])
    if stock:
        for key in [k for k in out if k != "stock"]:
            out[key + " speedup vs stock"] = out["stock"] / out[key]
            if dense:
                out[key + " speedup vs vidsparse dense"] = 50 * dense / out[key]
    out.update(planning)
    return out


def attention_overheads(transformer, name, device, dtype, q_block, tiny, mix) -> dict:
    """At this model's attention shape: profiling and permutation costs against the attention itself, and the
    stored mask memory of the static method over every layer (a transplanted yardstick pattern file)."""
    from vidsparse import SparseConfig
    from vidsparse.app.configs import resolve_patterns
    from vidsparse.core.layout import TokenLayout
    from vidsparse.core.pattern_file import PatternFile
    from vidsparse.core.state import LayerState
    from vidsparse.runtime.runtime import SparseRuntime
    from vidsparse.core.plan import PlanContext, Probe
    from vidsparse.methods.base import planner_for
    from vidsparse.methods.static import StaticPlanner

    cfg = transformer.config
    heads, d = cfg.num_attention_heads, cfg.attention_head_dim
    if name == "hunyuanvideo":
        grid, text_len, position = ((5, 4, 8), 16, "end") if tiny else ((33, 45, 80), 256, "end")
    else:
        grid, text_len, position = ((5, 4, 8), 16, "start") if tiny else ((13, 30, 45), 226, "start")
    layout = TokenLayout(*grid, text_len=text_len, text_position=position)
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(1, heads, layout.seq_len, d, generator=gen, device=device, dtype=dtype) for _ in range(3))
    config = SparseConfig.make("profile", fraction=0.25, q_block=q_block, k_block=q_block)
    planner = planner_for(config)
    _ForcedMix(planner, mix)
    runtime = SparseRuntime(config, planner, name, position)
    runs = 1 if tiny else 5
    ctx = PlanContext(5, 20, None, layout, heads, device, state=LayerState())
    probe = Probe(q, k, v, layout)
    plan = planner.plan(ctx, probe)  # builds the tables once
    runtime.execute(plan, q, k, v, layout)
    plan_s = statistics.median(_time(lambda: planner.plan(ctx, probe), runs, device))
    exec_s = statistics.median(_time(lambda: runtime.execute(plan, q, k, v, layout), runs, device))
    group = plan.groups[0]
    perms = runtime.executor.permutations(group.orders, layout, device)
    from vidsparse.kernels import permute_tokens

    perm_s = statistics.median(_time(lambda: [permute_tokens(x, perms, group.order_index) for x in (q, k, v)]
                                     + [permute_tokens(q, perms, group.order_index, inverse=True)], runs, device))
    result = {"layout": [*grid, text_len], "rows_per_frame": config.options.rows_per_frame,
              "profile_plan_s": plan_s, "profile_execute_s": exec_s, "permutations_s": perm_s,
              "profile_plus_permutations_share": (plan_s + perm_s) / (plan_s + exec_s),
              "profile_every_2_plus_permutations_share": (plan_s / 2 + perm_s) / (plan_s / 2 + exec_s),
              "profile_density": float(group.density.float().mean())}
    # static: every layer's masks at this layout, from the yardstick's searched patterns dealt out to this model
    layers = sum(1 for key in transformer.attn_processors if not key.startswith("context_embedder.")
                 and (".attn1." in key or not name.startswith("wan")))
    source = PatternFile.load(resolve_patterns("yardstick"))
    transplanted = source.transplant(transformer, layers, heads, layout, q_block, q_block, device=device)
    path = Path(tempfile.mkdtemp()) / "transplanted.safetensors"
    transplanted.save(path)
    static = StaticPlanner(SparseConfig.make("static", patterns=str(path)))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for layer in range(layers):
        static.plan(PlanContext(layer, 20, None, layout, heads, device, state=LayerState()), None)
    result.update({"static_layers": layers, "static_distinct_patterns": len(static._rows),
                   "static_stored_mask_mb": static.stored_bytes() / 2**20,
                   "full_width_one_layer_mask_mb": heads * (-(-layout.seq_len // q_block)) ** 2 * 4 / 2**20})
    log.info("%s attention: %s", name, result)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pipelines/bench_methods.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="hunyuanvideo")
    parser.add_argument("--runs", type=int, default=2, help="timed steps per variant (median)")
    parser.add_argument("--top-keys", type=float, default=0.05)
    parser.add_argument("--cache-budget", type=float, default=8.0, help="GiB of delta cache on the GPU, offloaded run")
    parser.add_argument("--profile-mix", default=None, help="spatial,temporal,dense shares (default: the yardstick's)")
    parser.add_argument("--budget-s", type=float, default=480.0, help="skip remaining variants past this")
    parser.add_argument("--variants", default="stock,dense,profile,delta,offload,hybrid,attention",
                        help="which to run (default: all): stock, dense, profile, delta, offload, hybrid, attention")
    parser.add_argument("--hybrid-mix", default=None,
                        help="static,spatial,temporal,delta,dense shares forced on the hybrid (default: the yardstick's)")
    parser.add_argument("--dynamic-top-p", type=float, default=0.9, help="the dynamic variant's top_p")
    parser.add_argument("--dynamic-density", type=float, default=1.0,
                        help="the dynamic variant's max_density (e.g. the density the long yardstick measured)")
    parser.add_argument("--hybrid-every", type=int, default=4, help="the hybrid's steps between choices")
    parser.add_argument("--hybrid-cache-budget", type=float, default=None,
                        help="GiB of the hybrid's delta cache on the GPU (default: no limit); the rest goes to host memory")
    parser.add_argument("--trace-hybrid", action="store_true", help="profile one reusing hybrid step (CUDA)")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from vidsparse.app.runinfo import environment

    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="bench_methods_")) if args.dry_run else HERE)
    out_dir.mkdir(parents=True, exist_ok=True)
    mix = _mix(args)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    command = ["python", "pipelines/bench_methods.py", *(sys.argv[1:] if argv is None else argv)]
    for name in args.models.split(","):
        result = {"meta": {**environment(command, device), "profile_mix": mix,
                           "note": "random weights; profile's choices forced to profile_mix"}}
        path = out_dir / f"BENCH_METHODS_{name}.json"

        def save():
            path.write_text(json.dumps(result, indent=1, default=str))
            (out_dir / f"BENCH_METHODS_{name}.md").write_text(markdown(name, result))

        bench_model(name, args, mix, result, save)
        save()
        print(f"wrote {path}")
    return 0


def markdown(name: str, result: dict) -> str:
    meta = result["meta"]
    lines = [f"# {name}: profile, delta and hybrid at full size", "", f"Command: `{meta['command']}`", "",
             f"Environment: {json.dumps({k: v for k, v in meta.items() if k not in ('command',)}, default=str)}", ""]
    entry = result.get("models", {}).get(name, {})
    stock = entry.get("variants", {}).get("stock", {}).get("median_s")
    dense = entry.get("variants", {}).get("vidsparse dense", {}).get("median_s")
    lines += [f"Input: {entry.get('video')}, batch {entry.get('batch')}", "",
              "| variant | step (median) | vs stock | vs vidsparse dense | density | rel. err vs stock | peak GPU GB | "
              "peak host GiB |",
              "|---|---|---|---|---|---|---|---|"]
    for label, row in entry.get("variants", {}).items():
        if "median_s" not in row:
            lines.append(f"| {label} | {row} | | | | | | |")
            continue
        t = row["median_s"]
        ratio = lambda base: f"{base / t:.2f}x" if base else "-"  # noqa: E731
        lines.append(
            f"| {label} | {t:.3f} s | {ratio(stock)} | {ratio(dense)} | "
            f"{row.get('density', 1.0):.3f} | {row['rel_err_vs_stock'] if row['rel_err_vs_stock'] is None else round(row['rel_err_vs_stock'], 4)} | "
            f"{row.get('peak_gb') if row.get('peak_gb') is None else round(row['peak_gb'], 1)} | "
            f"{'-' if row.get('host_peak_gib') is None else round(row['host_peak_gib'], 1)} |")
    if "schedules_50_steps" in entry:
        lines += ["", "50-step totals implied by the measured steps:", ""]
        lines += [f"- {k}: " + (f"{v:.2f}x" if "speedup" in k else f"{100 * v:.1f}%" if "share" in k else f"{v:.2f} s")
                  for k, v in entry["schedules_50_steps"].items()]
    if "hybrid_trace" in entry:
        lines += ["", "A reusing hybrid step under torch.profiler (`--trace-hybrid`):", "", "```", entry["hybrid_trace"],
                  "```"]
    if "attention" in entry:
        lines += ["", "Attention-level overheads and mask memory:", "", "```", json.dumps(entry["attention"], indent=1),
                  "```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
