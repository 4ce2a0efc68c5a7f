"""Whole-loop benchmark: every denoising step of HunyuanVideo 720p x 129 frames, in order, stock against one method.

Run on a CUDA GPU from the repository root (bf16, random weights built on the GPU, nothing downloaded):

    python pipelines/bench_loop.py --method delta                     # -> pipelines/LOOP_hunyuanvideo_delta.{json,md}
    python pipelines/bench_loop.py --method hybrid --force-mix --stock-steps 0 \\
        --stock-from pipelines/LOOP_hunyuanvideo_delta.json           # the hybrid, the yardstick's mix forced
    python pipelines/bench_loop.py --dry-run --steps 6                # CPU: the tiny model, the whole flow

What runs, in one process:
- the transformer of `vidsparse.app.bench.catalogue` (the model's own random init, built on the GPU in bf16) at the
  model config's size (`vidsparse/app/configs/hunyuanvideo.yaml`: 1280 x 720, 129 frames -> latents 33 x 90 x 160
  -> 119,056 tokens with the text), driven directly as `HunyuanVideoPipeline.__call__` drives it: random float32
  latents, random text embeddings (256 tokens, the last 100 padding), random pooled projections, the pipeline's
  sigmas (`linspace(1, 0, steps + 1)[:-1]`) through its `retrieve_timesteps` on a FlowMatchEulerDiscreteScheduler
  with the config's `model.scheduler` settings (shift 7.0), the embedded guidance `guidance_scale x 1000` (the
  model is guidance-distilled: one forward per step, in `cache_context("cond")`), and `scheduler.step` after every
  forward. `--true-cfg-scale S` (> 1) adds the pipeline's true CFG: a second forward per step in
  `cache_context("uncond")` on other random text embeddings. No text encoder or VAE is built.
- stock diffusers first: the first `--stock-steps` steps of the loop (default 3), each timed, reported as a
  per-step median; `--stock-all` runs every step. (`--stock-steps 0 --stock-from FILE` takes the stock figures of
  an earlier run's JSON instead.) A stock 720p step takes about 31 s on an H200, so all 50 do not fit one
  10-minute call.
- then the method (`--method`, a preset of the model config, default delta; `KEY=VALUE` arguments override the
  config, e.g. `methods.delta.top_keys=0.07`) through `vidsparse.apply`, its schedule for `--steps` steps from
  `vidsparse.app.configs.plan_method`, every step of the loop in order with the planner's real choices. With
  `--force-mix` (hybrid only) the real measurement and choice still run at every choosing step, but the heads run
  a fixed seeded draw with the mix the yardstick measured (`--hybrid-mix`, else yardstick/sweep.json's
  `hybrid_mix`), the static candidate's patterns being the yardstick's dealt out to this model
  (`vidsparse.app.bench.forced`): random weights make every head diffuse, so the real choices say nothing about
  a trained model's.

Each step is timed on the host around the forward(s) and `scheduler.step`, synchronised before and after, and
labelled with its kind as the runtime reports it: `warm-up` (the method's dense warm-up steps), `dense`, `refresh`
(a layer refreshed its cached delta), `choosing` (a layer made a new plan: hybrid, profile, dynamic), `reusing` (every
layer reused its plan), `delta` (the cached delta), `sparse` (a fixed mask); stock steps are `stock`. A step's
time includes any Triton compilation its kernels need on first use.

`--time-limit-s` (default 570 s, from the start of the process; 0: none) stops the loop cleanly before a step whose
expected time (the slowest measured step of its expected kind) would pass it; the results then say so, give the
ratio over the steps that ran and an estimate of the whole loop. The results are written after every step, to
`--out` (default: this folder; a temp folder for --dry-run): LOOP_<model>_<label>.json and .md, and LOOP_<model>.md,
the table of every LOOP_<model>_*.json in the folder. They hold per-step times and kinds, peak GPU memory
(`torch.cuda.max_memory_allocated` and `max_memory_reserved`, stock and method separately), peak host RSS, the
total, and the ratio against stock (stock's per-step median x steps / the method's total, labelled as such),
stamped with date, GPU, versions and the exact command.

PYTORCH_CUDA_ALLOC_CONF is set to `expandable_segments:True` where it is not set (before CUDA is initialised):
the delta caches come and go in large pieces, and fragmentation otherwise costs gigabytes at 720p.

`--dry-run` builds the tiny HunyuanVideo (vidsparse.app.bench.catalogue) in float32 on the CPU, with the Triton
kernels in the interpreter and the tiny-hunyuanvideo config's presets, and runs the whole flow in seconds: it tests
the benchmark, it measures nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ALLOC_CONF = "expandable_segments:True"
GIB = 2**30
log = logging.getLogger("bench_loop")


# ---------------------------------------------------------------------------------------------- memory


def _host_peak() -> float:
    from vidsparse.app.runinfo import host_peak_gib  # lazily: torch is imported after the allocator's setting

    return host_peak_gib()


def _gpu_peaks(torch, device) -> dict:
    if device.type != "cuda":
        return {"peak_allocated_gib": None, "peak_reserved_gib": None}
    return {"peak_allocated_gib": torch.cuda.max_memory_allocated(device) / GIB,
            "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / GIB}


def _fresh_peaks(torch, device) -> bool:
    """Free what the last phase left cached and start its peaks again; whether the host peak was reset."""
    import gc

    from vidsparse.app.runinfo import reset_host_peak

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    return reset_host_peak()


# ---------------------------------------------------------------------------------------------- step kinds


def step_kind(runtime, step: int, branch: str, warmup_steps: int) -> str:
    """What step `step` of `branch` was, as the runtime recorded it (read right after the branch's forward)."""
    if not runtime.sparse_steps.get((branch, step)):
        return "warm-up" if step < warmup_steps else "dense"
    if step in runtime.refreshed:
        return "refresh"
    layers = list(runtime.state.layers.values())
    planned = [s for s in layers if s.plan is not None]
    if planned:  # a planner that keeps its plan: made this step (since 1) or reused
        return "choosing" if any(s.since == 1 for s in planned) else "reusing"
    return "delta" if any(s.delta is not None for s in layers) else "sparse"


def expected_kind(config, step: int) -> str | None:
    """The kind the config's schedule says a step will be (warm-up, refresh), None where only the run says."""
    if step < config.warmup_steps:
        return "warm-up"
    o = config.options
    every = getattr(o, "refresh_every", 0)
    if step in getattr(o, "refresh_steps", ()) or (every and step % every == 0):
        return "refresh"
    return None


def _estimate(rows: list[dict], kind: str | None, fallback: float) -> float:
    """The expected seconds of a step of `kind`: the slowest measured step of that kind; for an unknown kind the
    slowest step of the kinds no schedule names; then the slowest step of any kind; then `fallback`."""
    fixed = ("warm-up", "refresh")
    for pick in ((lambda r: r["kind"] == kind) if kind else (lambda r: r["kind"] not in fixed), lambda r: True):
        times = [r["seconds"] for r in rows if pick(r)]
        if times:
            return max(times)
    return fallback


def _density_sums(runtime) -> tuple[float, int]:
    """(density-weighted head calls, head calls) over every layer so far (reads device tensors: a sync)."""
    weighted, calls = 0.0, 0
    for s in runtime.layers.values():
        weighted += sum(s.head_dense) + (float(s.head_density.sum()) if s.head_density is not None else 0.0)
        calls += sum(s.head_calls)
    return weighted, calls


# ---------------------------------------------------------------------------------------------- the loop


class Loop:
    """The model, its inputs and the pipeline's denoising loop over them (see the module docstring)."""

    def __init__(self, args, cfg, torch, device, dtype):
        from vidsparse.app.bench.catalogue import MODELS, TINY_VIDEO, build_transformer
        from vidsparse.app.bench.inputs import Video

        self.torch, self.device, self.dtype = torch, device, dtype
        self.cfg = cfg
        self.spec = MODELS[args.model]
        gen = self.cfg.generate
        self.video = TINY_VIDEO if args.dry_run else Video(gen.num_frames, gen.height, gen.width)
        start = time.perf_counter()
        self.transformer = build_transformer(self.spec, args.dry_run, device, dtype)
        _sync(torch, device)
        self.build_s = time.perf_counter() - start
        self.weights_gib = torch.cuda.memory_allocated(device) / GIB if device.type == "cuda" else None
        rng = torch.Generator(device=device).manual_seed(args.seed)
        text = self.spec.tiny_text if args.dry_run else self.spec.text
        inputs = self.spec.inputs(self.transformer, self.video, text, 1, device, dtype, rng)
        inputs["guidance"] = torch.full_like(inputs["guidance"], float(gen.get("guidance_scale", 6.0)) * 1000.0)
        self.latents = inputs.pop("hidden_states").float()  # the pipeline keeps its latents in float32
        for key in ("timestep", "return_dict"):
            inputs.pop(key)
        self.branches = {"cond": inputs}
        self.true_cfg = args.true_cfg_scale
        if self.true_cfg > 1:  # the negative prompt's embeddings: other random text, the same padding
            negative = self.spec.inputs(self.transformer, self.video, text, 1, device, dtype, rng)
            self.branches["uncond"] = {**inputs, **{k: negative[k] for k in (
                "encoder_hidden_states", "encoder_attention_mask", "pooled_projections")}}
        from vidsparse.pipelines import adapter_for

        adapter = adapter_for(self.transformer)
        self.grid = adapter.latent_grid(self.transformer, self.latents)
        self.text_len = inputs["encoder_hidden_states"].shape[1]
        self.text_position = adapter.text_position
        from diffusers import FlowMatchEulerDiscreteScheduler
        from omegaconf import OmegaConf

        # one scheduler for every loop, as a pipeline has: vidsparse's step hook reads its step count
        settings = OmegaConf.to_container(cfg.model.get("scheduler") or OmegaConf.create({}), resolve=True)
        self.scheduler = FlowMatchEulerDiscreteScheduler(**settings)

    def target(self):
        """What `vidsparse.apply` is given: the transformer and the scheduler, as a pipeline holds them."""
        from types import SimpleNamespace

        return SimpleNamespace(transformer=self.transformer, scheduler=self.scheduler)

    def layout(self):
        from vidsparse.core.layout import TokenLayout

        return TokenLayout(*self.grid, self.text_len, self.text_position)

    def timesteps(self, steps: int):
        """The scheduler set for a new loop and its timesteps, as HunyuanVideoPipeline sets them."""
        import numpy as np
        from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import retrieve_timesteps

        sigmas = np.linspace(1.0, 0.0, steps + 1)[:-1]
        timesteps, _ = retrieve_timesteps(self.scheduler, steps, self.device, sigmas=sigmas)
        self.scheduler.set_begin_index(0)
        return self.scheduler, timesteps

    def run(self, steps: int, limit: int, deadline: float | None, on_step, kind_of, expect_s) -> dict:
        """Steps 0 .. limit-1 of a `steps`-step loop; `on_step(row, latents)` after each. Stops before a step whose
        expected time `expect_s(step, rows)` would pass `deadline` (perf_counter seconds). Returns how it ended."""
        torch, device = self.torch, self.device
        scheduler, timesteps = self.timesteps(steps)
        latents, rows = self.latents.clone(), []
        for i, t in enumerate(timesteps[:limit]):
            expected = expect_s(i, rows)
            if deadline is not None and time.perf_counter() + expected > deadline:
                return {"latents": latents, "rows": rows, "stopped": {
                    "before_step": i, "expected_step_s": expected,
                    "reason": f"the time limit: step {i} was expected to take {expected:.1f} s, and "
                              f"{max(0.0, deadline - time.perf_counter()):.1f} s were left"}}
            _sync(torch, device)
            start = time.perf_counter()
            with torch.no_grad():
                latent_in = latents.to(self.dtype)
                timestep = t.expand(latents.shape[0]).to(latents.dtype)
                with self.transformer.cache_context("cond"):
                    noise = self.transformer(hidden_states=latent_in, timestep=timestep, **self.branches["cond"],
                                             return_dict=False)[0]
                kind = kind_of(i, "cond")
                if "uncond" in self.branches:
                    with self.transformer.cache_context("uncond"):
                        negative = self.transformer(hidden_states=latent_in, timestep=timestep,
                                                    **self.branches["uncond"], return_dict=False)[0]
                    noise = negative + self.true_cfg * (noise - negative)
                latents = scheduler.step(noise, t, latents, return_dict=False)[0]
            _sync(torch, device)
            row = {"step": i, "timestep": float(t), "kind": kind, "seconds": time.perf_counter() - start,
                   "gpu_allocated_gib": torch.cuda.memory_allocated(device) / GIB if device.type == "cuda" else None}
            rows.append(row)
            on_step(row, latents)
        return {"latents": latents, "rows": rows, "stopped": None}


def _sync(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rel(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


def _summary(rows: list[dict]) -> dict:
    """Per kind: steps, total and median seconds."""
    kinds: dict = {}
    for r in rows:
        kinds.setdefault(r["kind"], []).append(r["seconds"])
    return {k: {"steps": len(v), "total_s": sum(v), "median_s": statistics.median(v)} for k, v in kinds.items()}


# ---------------------------------------------------------------------------------------------- phases


def stock_phase(loop: Loop, args, result: dict, deadline, save, t0) -> object | None:
    """The stock steps (or an earlier run's figures); the latents after them, to compare the method's with."""
    torch, device = loop.torch, loop.device
    if args.stock_from is not None:
        earlier = json.loads(Path(args.stock_from).read_text())
        result["stock"] = {**earlier["stock"], "from": str(args.stock_from),
                           "from_meta": {k: earlier["meta"].get(k) for k in ("date", "device", "command")}}
    steps = args.steps if args.stock_all else min(args.stock_steps, args.steps)
    if steps == 0:
        return None
    stock = result["stock"] = {"steps_asked": steps, "rows": []}
    stock["host_peak_scope"] = "stock steps" if _fresh_peaks(torch, device) else "process"

    def on_step(row, latents):
        row["elapsed_s"] = time.perf_counter() - t0
        stock["rows"].append(row)
        _finish(stock, loop, torch, device)
        log.info("stock step %d: %.2f s", row["step"], row["seconds"])
        save()

    ran = loop.run(args.steps, steps, deadline, on_step, lambda i, b: "stock",
                   lambda i, rows: _estimate(rows, "stock", 0.0))
    stock["stopped"] = ran["stopped"]
    _finish(stock, loop, torch, device)
    stock["finite"] = bool(torch.isfinite(ran["latents"]).all())
    save()
    return ran["latents"] if ran["rows"] and not ran["stopped"] else None


def _finish(phase: dict, loop: Loop, torch, device) -> None:
    rows = phase["rows"]
    phase["steps_ran"] = len(rows)
    phase["total_s"] = sum(r["seconds"] for r in rows)
    phase["median_s"] = statistics.median(r["seconds"] for r in rows) if rows else None
    phase["kinds"] = _summary(rows)
    phase.update(_gpu_peaks(torch, device))
    phase["host_peak_rss_gib"] = _host_peak()


def method_phase(loop: Loop, plan, args, result: dict, deadline, save, t0, stock_latents) -> None:
    """The method's loop through `vidsparse.apply` (`plan`: its MethodPlan for this run's steps)."""
    import vidsparse
    from vidsparse.app.bench.forced import ForcedMixHybrid, hybrid_mix, transplanted_patterns
    from vidsparse.app.report import choice_shares

    torch, device = loop.torch, loop.device
    config, planner = plan.config, None
    method = result["method"] = {"name": args.method, "label": _label(args), "notes": list(plan.notes), "rows": []}
    if args.force_mix:
        mix = hybrid_mix(args.hybrid_mix, ROOT / "yardstick" / "sweep.json")
        if mix.get("static"):
            folder = Path(tempfile.mkdtemp(prefix="bench_loop_patterns_"))
            config = config.replace(patterns=transplanted_patterns(loop.transformer, loop.layout(),
                                                                   config.options.q_block, device, folder))
        planner = ForcedMixHybrid(config, mix)
        method["forced_mix"] = mix
        method["notes"].append("random weights: the hybrid's real choice runs at every choosing step, then its heads "
                               "run a fixed seeded draw with forced_mix")
    method["config"] = config.to_dict()
    method["host_peak_scope"] = "method loop" if _fresh_peaks(torch, device) else "process"
    handle = vidsparse.apply(loop.target(), config, planner=planner)
    runtime = handle.runtimes[0]
    sums = [(0.0, 0)]

    def kind_of(step, branch):
        return step_kind(runtime, step, branch, config.warmup_steps)

    def on_step(row, latents):
        weighted, calls = _density_sums(runtime)
        before = sums[-1]
        sums.append((weighted, calls))
        row["density"] = (weighted - before[0]) / max(1, calls - before[1])
        row["sparse_calls"] = sum(n for (b, s), n in runtime.sparse_steps.items() if s == row["step"])
        row["elapsed_s"] = time.perf_counter() - t0
        method["rows"].append(row)
        _finish(method, loop, torch, device)
        result["ratio"] = ratios(result, args.steps, config)
        log.info("%s step %d (%s): %.2f s, density %.3f", method["label"], row["step"], row["kind"], row["seconds"],
                 row["density"])
        if stock_latents is not None and row["step"] == stock_latents[0] - 1:
            method["rel_err_vs_stock"] = {"after_steps": stock_latents[0], "value": _rel(latents, stock_latents[1])}
        save()

    fallback = (result.get("stock") or {}).get("median_s") or 0.0
    try:
        ran = loop.run(args.steps, args.steps, deadline, on_step, kind_of,
                       lambda i, rows: _estimate(rows, expected_kind(config, i), fallback))
        report = handle.report()
    finally:
        handle.remove()
    method["stopped"] = ran["stopped"]
    _finish(method, loop, torch, device)
    method["finite"] = bool(torch.isfinite(ran["latents"]).all())
    method["report"] = {"density": report["density"], "fallbacks": report["fallbacks"],
                        "choices": choice_shares(report), "schedule": report["transformers"][0]["schedule"],
                        "planner": report["transformers"][0]["planner"]}
    result["ratio"] = ratios(result, args.steps, config)
    save()


def _label(args) -> str:
    return args.method + ("-forced-mix" if args.force_mix else "") + (f"-cfg{args.true_cfg_scale:g}"
                                                                       if args.true_cfg_scale > 1 else "")


def ratios(result: dict, steps: int, config) -> dict:
    """The method's speed against stock, each ratio saying what it is made of."""
    stock, method = result.get("stock") or {}, result["method"]
    ran, total = method["steps_ran"], method["total_s"]
    out = {"method_steps_ran": ran, "of_steps": steps, "method_total_s": total}
    median = stock.get("median_s")
    if median and total:
        out["stock_median_s"] = median
        out["stock_steps_measured"] = stock.get("steps_ran")
        out["speedup_vs_stock_median"] = median * ran / total
        out["speedup_vs_stock_median_means"] = (f"stock's per-step median ({stock.get('steps_ran')} measured steps) "
                                                f"x {ran} steps / the method's total over those {ran} steps")
    if stock.get("steps_ran") == steps and method["steps_ran"] == steps and not stock.get("from"):
        out["speedup_vs_stock_total"] = stock["total_s"] / total
    if 0 < ran < steps:  # stopped early, or still running
        rows = method["rows"]
        rest = 0.0
        for step in range(ran, steps):
            kind = expected_kind(config, step)
            same = [r["seconds"] for r in rows
                    if (r["kind"] == kind if kind else r["kind"] not in ("warm-up", "refresh"))]
            rest += statistics.median(same) if same else max(r["seconds"] for r in rows) if rows else 0.0
        out["estimated_total_s"] = total + rest
        out["estimated_total_means"] = (f"the {ran} measured steps + the other {steps - ran} at the median of their "
                                        "expected kind (warm-up and refresh steps from the config's schedule, the "
                                        "others at the median of the measured steps of other kinds): an estimate")
        if median:
            out["estimated_speedup_vs_stock_median"] = median * steps / out["estimated_total_s"]
    return out


# ---------------------------------------------------------------------------------------------- reports


def markdown(result: dict) -> str:
    meta, setup = result["meta"], result["setup"]
    method, stock, ratio = result.get("method") or {}, result.get("stock") or {}, result.get("ratio") or {}
    guidance = (f"true CFG {setup['true_cfg_scale']}" if setup["true_cfg_scale"] > 1
                else "embedded guidance (one forward per step)")
    lines = [f"# {setup['model']} whole loop: {method.get('label', '?')} against stock", "",
             f"Command: `{meta['command']}`", "",
             f"Date {meta['date']}; device {meta['device']}; "
             + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
             + f"; PYTORCH_CUDA_ALLOC_CONF={meta['alloc_conf']}.", "",
             f"Input: {setup['video']} -> latents {setup['latent']}, grid {setup['grid']}, {setup['text_tokens']} text "
             f"tokens, {setup['tokens']:,} tokens; {setup['steps']} steps, "
             f"{guidance}; "
             f"random weights ({setup['dtype']}), built in {setup['build_s']:.1f} s.", ""]
    for note in method.get("notes", []):
        lines.append(f"- {note}")
    for phase in (stock, method):
        if phase.get("stopped"):
            lines.append(f"- **{'stock' if phase is stock else method['label']} stopped early**, before step "
                         f"{phase['stopped']['before_step']}: {phase['stopped']['reason']}.")
    if stock.get("from"):
        lines.append(f"- stock's figures come from {stock['from']} ({stock['from_meta'].get('date')}).")
    lines += ["", "| | steps | total | per kind: steps x median | peak GPU allocated / reserved | peak host RSS |",
              "|---|---|---|---|---|---|"]
    for name, phase in (("stock", stock), (method.get("label", "method"), method)):
        if not phase.get("kinds"):
            continue
        kinds = ", ".join(f"{k} {v['steps']} x {v['median_s']:.2f} s" for k, v in phase["kinds"].items())
        gpu = ("-" if phase.get("peak_allocated_gib") is None else
               f"{phase['peak_allocated_gib']:.1f} / {phase['peak_reserved_gib']:.1f} GiB")
        lines.append(f"| {name} | {phase['steps_ran']} | {phase['total_s']:.1f} s | {kinds} | {gpu} | "
                     f"{phase['host_peak_rss_gib']:.1f} GiB ({phase.get('host_peak_scope', 'process')}) |")
    if ratio:
        lines += [""]
        if "speedup_vs_stock_median" in ratio:
            lines.append(f"- **{ratio['speedup_vs_stock_median']:.2f}x vs stock, using stock's per-step median**: "
                         f"{ratio['speedup_vs_stock_median_means']}.")
        if "speedup_vs_stock_total" in ratio:
            lines.append(f"- {ratio['speedup_vs_stock_total']:.2f}x vs stock's own total over every step.")
        if "estimated_total_s" in ratio:
            lines.append(f"- estimated whole loop {ratio['estimated_total_s']:.1f} s"
                         + (f" ({ratio['estimated_speedup_vs_stock_median']:.2f}x vs stock's median x "
                            f"{ratio['of_steps']})" if "estimated_speedup_vs_stock_median" in ratio else "")
                         + f": {ratio['estimated_total_means']}.")
    if method.get("rel_err_vs_stock"):
        err = method["rel_err_vs_stock"]
        lines.append(f"- latents after {err['after_steps']} steps: relative L2 {err['value']:.3g} from stock's.")
    if method.get("report"):
        rep = method["report"]
        lines.append(f"- realised density {rep['density']:.3f}; choices {json.dumps(rep['choices'])}; fallbacks "
                     f"{rep['fallbacks'] or 'none'}; schedule {json.dumps(rep['schedule'])}.")
    lines += ["", "| step | timestep | kind | seconds | density | GPU allocated | elapsed |",
              "|---|---|---|---|---|---|---|"]
    for name, phase in (("stock ", stock), ("", method)):
        for r in phase.get("rows", []):
            alloc = "-" if r.get("gpu_allocated_gib") is None else f"{r['gpu_allocated_gib']:.1f} GiB"
            density = f"{r['density']:.3f}" if "density" in r else "-"
            lines.append(f"| {name}{r['step']} | {r['timestep']:.1f} | {r['kind']} | {r['seconds']:.2f} | {density} | "
                         f"{alloc} | {r['elapsed_s']:.0f} s |")
    return "\n".join(lines) + "\n"


def summary_markdown(model: str, folder: Path) -> str:
    """The table of every LOOP_<model>_*.json in `folder`."""
    lines = [f"# {model}: whole denoising loops", "",
             f"Every `LOOP_{model}_*.json` in this folder (`python pipelines/bench_loop.py`; each file names its "
             "command). Speedups use stock's per-step median x the steps that ran.", "",
             "| run | date | device | steps ran | total | speedup vs stock (median) | estimated whole loop | "
             "peak GPU allocated | stopped early |", "|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(folder.glob(f"LOOP_{model}_*.json")):
        r = json.loads(path.read_text())
        method, ratio = r.get("method") or {}, r.get("ratio") or {}
        if not method.get("rows"):
            continue
        speed = ratio.get("speedup_vs_stock_median")
        est = ratio.get("estimated_total_s")
        peak = method.get("peak_allocated_gib")
        lines.append(
            f"| [{method.get('label')}]({path.with_suffix('.md').name}) | {r['meta']['date'][:10]} | "
            f"{r['meta']['device']} | {method['steps_ran']}/{r['setup']['steps']} | {method['total_s']:.1f} s | "
            f"{'-' if speed is None else f'{speed:.2f}x'} | {'-' if est is None else f'{est:.1f} s'} | "
            f"{'-' if peak is None else f'{peak:.1f} GiB'} | {'yes' if method.get('stopped') else 'no'} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="pipelines/bench_loop.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="model config overrides, e.g. methods.delta.top_keys=0.07")
    parser.add_argument("--model", default="hunyuanvideo", choices=["hunyuanvideo"],
                        help="the catalogue model (HunyuanVideo only: its loop is the pipeline's)")
    parser.add_argument("--config", default=None,
                        help="the model config of the presets and the size (default: hunyuanvideo; "
                             "tiny-hunyuanvideo with --dry-run)")
    parser.add_argument("--method", default="delta", help="a method preset of the model config (default: delta)")
    parser.add_argument("--force-mix", action="store_true",
                        help="hybrid only: force its choices to the yardstick's mix (see the description)")
    parser.add_argument("--hybrid-mix", default=None,
                        help="static,spatial,temporal,delta,dense shares for --force-mix "
                             "(default: yardstick/sweep.json)")
    parser.add_argument("--steps", type=int, default=None,
                        help="denoising steps (default: the config's num_inference_steps, 50)")
    parser.add_argument("--stock-steps", type=int, default=3, help="stock steps timed (median); default 3")
    parser.add_argument("--stock-all", action="store_true", help="run every stock step")
    parser.add_argument("--stock-from", type=Path, default=None,
                        help="an earlier run's JSON whose stock figures to use (with --stock-steps 0)")
    parser.add_argument("--time-limit-s", type=float, default=570.0,
                        help="stop cleanly before passing this many seconds from the start (0: no limit)")
    parser.add_argument("--true-cfg-scale", type=float, default=1.0,
                        help="> 1: true CFG, two forwards per step (default 1: the embedded guidance alone)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dry-run", action="store_true", help="the tiny model on the CPU: tests the flow")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.config is None:
        args.config = "tiny-hunyuanvideo" if args.dry_run else "hunyuanvideo"
    for name in ("stock_steps", "steps"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "stock_steps" else 1):
            parser.error(f"--{name.replace('_', '-')} must be at least {0 if name == 'stock_steps' else 1}")
    return args


def main(argv=None) -> int:
    t0 = time.perf_counter()
    # Before torch initialises CUDA (importing torch does not; its allocator reads this at its first allocation).
    alloc_set_here = "PYTORCH_CUDA_ALLOC_CONF" not in os.environ
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", ALLOC_CONF)
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    from vidsparse.app.runinfo import environment, json_safe, use_interpreter_if_needed

    use_interpreter_if_needed(device)  # before triton is imported, on a CPU
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    deadline = t0 + args.time_limit_s if args.time_limit_s > 0 else None
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="bench_loop_")) if args.dry_run else HERE)
    out_dir.mkdir(parents=True, exist_ok=True)
    command = ["python", "pipelines/bench_loop.py", *(sys.argv[1:] if argv is None else argv)]
    result = {"meta": {**environment(command, device),
                       "alloc_conf": os.environ["PYTORCH_CUDA_ALLOC_CONF"] + (" (set by bench_loop)" if alloc_set_here
                                                                              else " (as given)"),
                       "time_limit_s": args.time_limit_s or None,
                       "note": "random weights, random latents and text embeddings; no text encoder or VAE"}}
    from vidsparse.app.configs import load_model_config, plan_method

    cfg = load_model_config(args.config, args.overrides)
    args.steps = args.steps or int(cfg.generate.num_inference_steps)
    plan = plan_method(cfg, args.method, args.steps, args.overrides)
    if args.force_mix and plan.config.method != "hybrid":
        raise SystemExit(f"--force-mix forces the hybrid's choices; method {args.method!r} is {plan.config.method!r}")
    loop = Loop(args, cfg, torch, device, dtype)
    result["setup"] = {
        "model": args.model, "config": args.config, "class": loop.spec.cls_name, "video": str(loop.video),
        "latent": list(loop.latents.shape), "grid": list(loop.grid), "text_tokens": loop.text_len,
        "tokens": loop.grid[0] * loop.grid[1] * loop.grid[2] + loop.text_len, "steps": args.steps,
        "true_cfg_scale": args.true_cfg_scale, "guidance": float(loop.branches["cond"]["guidance"][0]),
        "dtype": str(dtype).removeprefix("torch."), "build_s": loop.build_s, "weights_gib": loop.weights_gib,
        "params": sum(p.numel() for p in loop.transformer.parameters()),
    }
    label = _label(args)
    path = out_dir / f"LOOP_{args.model}_{label}.json"

    def save():
        path.write_text(json.dumps(json_safe(result), indent=1))
        path.with_suffix(".md").write_text(markdown(result))
        (out_dir / f"LOOP_{args.model}.md").write_text(summary_markdown(args.model, out_dir))

    log.info("%s: %s, %s tokens, built in %.1f s", args.model, loop.video, f"{result['setup']['tokens']:,}",
             loop.build_s)
    save()
    stock_latents = stock_phase(loop, args, result, deadline, save, t0)
    compare = None if stock_latents is None else (result["stock"]["steps_ran"], stock_latents)
    method_phase(loop, plan, args, result, deadline, save, t0, compare)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
