"""Quality against realised attention density on the yardstick: every sparse method swept over one knob, compared at
equal density on the same prompts and seeds.

    python yardstick/sweep.py [--device cuda] [--prompts N] [--steps 20] [--quick] [--out yardstick]

The yardstick pipeline (`vidsparse.app.models`) is loaded once, in float32 (`--dtype`), with its config's `generate`
settings (`vidsparse/app/configs/yardstick.yaml`). The prompts are the first N of
`search/prompts/yardstick-eval.txt`, each with seed 0. Dense ("dense": the stock computation) runs once per prompt;
then every setting of every method is installed with `vidsparse.apply`, generates the same prompts and seeds, and is
removed. A setting is the config's method entry with one knob overridden (`SWEEPS`); the config's warm-up (5 dense
steps of 20, q_block / k_block 32) keeps its share of the steps when `--steps` differs, as in `vidsparse compare`.

For every setting:
- density: `handle.report()["density"]`, the realised density over every step and replaced layer of every prompt,
  the dense warm-up included (a dense call counts 1). For "delta" a refresh step counts 1 as well;
- PSNR and SSIM of the decoded video against dense (`vidsparse.app.metrics`): the mean over every frame of every prompt,
  and the worst frame;
- seconds: the wall time of the setting's generations (on the CPU, the sparse methods run a PyTorch fallback, so
  times measure nothing there).
For "profile" the per-head choice counts are summed over the run, and the share of spatial / temporal / dense
choices the planner made during the sparse steps is kept; the setting fraction 0.3, eps 0.5 gives the top-level
`profile_mix`, which forces the same mix at full size elsewhere.

Writes into --out: `sweep.json` (rewritten after every run, so a stopped sweep keeps what it measured), `SWEEP.md`
(a table per method, the best PSNR under density budgets, profile against the better of spatial and temporal at
equal density) and `sweep.png` (PSNR and SSIM against density). A setting that raises is recorded with its error and
the sweep goes on. `--quick` (1 prompt, 8 steps, 2 settings per method) checks the script on a CPU in a few minutes.

Run it from the repository root, with this checkout's vidsparse importable (an editable install of it, or
`PYTHONPATH=.`); the JSON records which vidsparse ran.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger("yardstick.sweep")

PROMPTS_FILE = Path("search/prompts/yardstick-eval.txt")
SEED = 0
# method -> (the yardstick config's method entry, the settings: each overrides one knob of that entry)
SWEEPS: dict[str, tuple[str, list[dict]]] = {
    "spatial": ("spatial", [{"frames": f} for f in (0, 1, 2, 3)]),
    "temporal": ("temporal", [{"radius": r} for r in (0, 1, 2, 4, 6)]),
    "static": ("static", [{"eps": e} for e in (0.05, 0.1, 0.2, 0.3, 0.4)]),
    "profile": ("profile", [{"fraction": f, "eps": e} for f in (0.1, 0.2, 0.3, 0.45) for e in (0.2, 0.5)]),
    "delta": ("delta", [{"top_keys": t} for t in (0.05, 0.1, 0.2, 0.3)]),
    "hybrid": ("hybrid", [{"eps": e} for e in (0.05, 0.1, 0.2, 0.3, 0.5)] + [{"density": d} for d in (0.15, 0.3)]),
    # hybrid stacked with diffusers' FirstBlockCache (`transformer.enable_cache`) at three thresholds
    "hybrid+fbc": ("hybrid", [{"eps": 0.2, "first_block_cache": t} for t in (0.05, 0.1, 0.2)]),
}
STEP_CACHE = "first_block_cache"  # a setting key that is not a method option: the step cache stacked on the method
# --quick: two settings per method, spread over its range (profile's includes the mix setting)
QUICK_SETTINGS = {
    "spatial": [{"frames": 0}, {"frames": 2}],
    "temporal": [{"radius": 1}, {"radius": 4}],
    "static": [{"eps": 0.1}, {"eps": 0.3}],
    "profile": [{"fraction": 0.1, "eps": 0.2}, {"fraction": 0.3, "eps": 0.5}],
    "delta": [{"top_keys": 0.05}, {"top_keys": 0.2}],
    "hybrid": [{"eps": 0.1}, {"density": 0.3}],
    "hybrid+fbc": [{"eps": 0.2, "first_block_cache": 0.1}],
}
QUICK_STEPS, QUICK_PROMPTS = 8, 1
MIX_SETTING = {"fraction": 0.3, "eps": 0.5}  # the profile setting whose mix is the top-level `profile_mix`
PROFILE_LABELS = ("spatial", "temporal", "dense")
HYBRID_MIX_SETTING = {"eps": 0.2}  # the hybrid setting whose choices are the top-level `hybrid_mix`
HYBRID_LABELS = ("static", "spatial", "temporal", "delta", "dense")
BUDGETS = (0.4, 0.6)
FIXED = ("spatial", "temporal")  # the fixed patterns profile chooses between, per head


# ---------------------------------------------------------------------------------------- setup
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="weights and activations (default: %(default)s, for a clean comparison)")
    p.add_argument("--prompts", type=int, default=4,
                   help=f"the first N prompts of {PROMPTS_FILE} (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the config's, 20)")
    p.add_argument("--method", action="append", choices=tuple(SWEEPS),
                   help="sweep only this method (repeat; default: all)")
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK_PROMPTS} prompt, {QUICK_STEPS} steps, 2 settings per method: a check of the script")
    p.add_argument("--out", default="yardstick", help="output folder (default: %(default)s)")
    args = p.parse_args(argv)
    if args.quick:
        args.prompts = QUICK_PROMPTS
        args.steps = args.steps or QUICK_STEPS
    if args.prompts < 1 or (args.steps is not None and args.steps < 1):
        p.error("--prompts and --steps must be at least 1")
    return args


def read_prompts(n: int) -> list[str]:
    lines = [line.strip() for line in PROMPTS_FILE.read_text().splitlines()]
    prompts = [line for line in lines if line and not line.startswith("#")]
    if n > len(prompts):
        logger.warning("--prompts %d: %s has only %d prompts; using them all", n, PROMPTS_FILE, len(prompts))
    return prompts[:n]


def load_pipeline(device: str, dtype: torch.dtype):
    """The yardstick pipeline and its model config, as `vidsparse compare` loads them."""
    from vidsparse.app.models import load_builtin
    from vidsparse.app.configs import apply_scheduler_config, load_model_config

    cfg = load_model_config("yardstick")
    pipe, _ = load_builtin("yardstick")
    apply_scheduler_config(pipe, cfg)
    pipe = pipe.to(device)
    if pipe.transformer.dtype != dtype:  # the built-in is float32; cast only for another dtype
        pipe = pipe.to(dtype=dtype)
    return pipe, cfg


def method_plan(cfg, entry: str, steps: int, name: str, setting: dict | None = None):
    """A `MethodPlan` of the config's method `entry` with `setting` over its fields, for a run of `steps` steps.

    As `vidsparse compare` plans it: the config's warm-up keeps its share of the steps when `steps` differs from the
    config's own (`round(warmup_steps * steps / config_steps)`), and a warm-up that covers every step is noted.
    """
    from vidsparse.app.configs import method_config
    from vidsparse.app.configs import MethodPlan

    config = method_config(cfg, entry)
    options = {k: v for k, v in (setting or {}).items() if k != STEP_CACHE}
    plan = MethodPlan(name, config.replace(**options) if options else config)
    config_steps = cfg.generate.get("num_inference_steps")
    warmup = plan.config.warmup_steps
    if config.method != "dense" and warmup and config_steps and steps != config_steps:
        scaled = round(warmup * steps / config_steps)
        plan.notes.append(f"warm-up scaled with the steps: {warmup} dense steps of {config_steps} become {scaled} "
                          f"of {steps}")
        plan.config = plan.config.replace(warmup_steps=scaled)
    if config.method != "dense" and plan.config.warmup_steps >= steps:
        plan.dense_throughout = True
        plan.notes.append(f"ran dense throughout: its {plan.config.warmup_steps} warm-up steps cover all {steps}")
    return plan


def sweep_plans(cfg, steps: int, methods: list[str], quick: bool) -> list[tuple[str, dict, object]]:
    """(method, setting, MethodPlan) of every run but dense, in sweep order."""
    runs = []
    for method in methods:
        entry, settings = SWEEPS[method]
        for setting in (QUICK_SETTINGS[method] if quick else settings):
            runs.append((method, setting, method_plan(cfg, entry, steps, f"{method} {_setting_text(setting)}",
                                                      setting)))
    return runs


def shown_config(config) -> dict:
    """A SparseConfig's flat fields, its pattern file relative to the repository when inside it."""
    fields = config.to_dict()
    if fields.get("patterns"):
        path, root = Path(fields["patterns"]).resolve(), Path(__file__).resolve().parents[1]
        fields["patterns"] = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    return fields


# ---------------------------------------------------------------------------------------- measuring
def quality(dense: list[np.ndarray], videos: list[np.ndarray]) -> dict:
    """PSNR and SSIM against dense over every frame of every case: mean, worst frame, and each case's mean."""
    from vidsparse.app.metrics import psnr_per_frame, ssim_per_frame

    psnr = [psnr_per_frame(d, v) for d, v in zip(dense, videos)]
    ssim = [ssim_per_frame(d, v) for d, v in zip(dense, videos)]
    all_psnr, all_ssim = np.concatenate(psnr), np.concatenate(ssim)
    return {
        "psnr_mean": _mean(all_psnr), "psnr_worst": float(all_psnr.min()),
        "ssim_mean": float(all_ssim.mean()), "ssim_worst": float(all_ssim.min()),
        "psnr_per_case": [_mean(p) for p in psnr], "ssim_per_case": [float(s.mean()) for s in ssim],
    }


def _mean(values: np.ndarray) -> float:
    return math.inf if np.isposinf(values).any() else float(values.mean())


def profile_mix(report: dict, warmup_layers: int) -> dict:
    """A profile run's head choices: counts summed over its whole run, and the shares during the sparse steps.

    `report["heads"]["choices"]` holds, per replaced layer and head, how many calls ran each label; "dense" there
    also counts the warm-up (steps and layers), which never asks the planner. Every call gives each head one count
    in all, so the sparse calls' share is `sparse_calls x heads`, and the warm-up's dense counts are the rest.
    `planner` is the planner's own choices (sparse calls only, the warm-up layers left out): the mix to force at full
    size. `all_layers` counts the warm-up layers' heads as dense at the sparse steps too.
    """
    choices = report["heads"]["choices"]  # [layer][head] -> {label: calls}
    heads = len(choices[0])
    layers = len(choices)
    totals = {label: sum(c.get(label, 0.0) for layer in choices for c in layer) for label in PROFILE_LABELS}
    other = sorted({label for layer in choices for c in layer for label in c} - set(PROFILE_LABELS))
    calls, sparse_calls = report["calls"], report["sparse_calls"]
    counted = sum(totals.values())
    if other or any(len(layer) != heads for layer in choices) or abs(counted - calls * heads) > 1e-3 * counted:
        raise ValueError(f"unexpected head choices: labels {other}, {counted} counts for {calls} calls x {heads} "
                         "heads")
    sparse_heads = sparse_calls * heads
    planner = {"spatial": totals["spatial"], "temporal": totals["temporal"],
               "dense": totals["dense"] - (calls - sparse_calls) * heads}
    # the warm-up layers' calls at the sparse steps: as many per layer as the planned layers had
    warm_layer_heads = warmup_layers * heads * sparse_calls / max(1, layers - warmup_layers)
    all_layers = {**planner, "dense": planner["dense"] + warm_layer_heads}

    def shares(counts, total):
        return {k: v / total for k, v in counts.items()} if total else None

    return {
        "choices": choices,  # per layer and head, summed over every prompt of the run, warm-up included
        "totals": totals,
        "sparse_calls": sparse_calls, "calls": calls, "heads_per_layer": heads, "warmup_layers": warmup_layers,
        "planner": shares(planner, sparse_heads),
        "all_layers": shares(all_layers, sparse_heads + warm_layer_heads),
    }


def run_one(pipe, plan, cases: list[dict], kwargs: dict, dense: list[np.ndarray] | None,
            first_block_cache: float | None = None) -> dict:
    """Generate every case with one plan; its row (quality against `dense` unless this is dense) and the videos.
    `first_block_cache`: stack diffusers' FirstBlockCache at this threshold on the transformer for the run."""
    from vidsparse.app.runs import run_method

    if first_block_cache is not None:
        from diffusers.hooks import FirstBlockCacheConfig

        pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=first_block_cache))
    try:
        result = run_method(pipe, plan, cases, kwargs)
    finally:
        if first_block_cache is not None:
            pipe.transformer.disable_cache()
    report = result.report
    row = {
        "density": float(report["density"]), "seconds": result.seconds_total,
        "sparse_calls": report["sparse_calls"], "calls": report["calls"],
        "fallbacks": report["fallbacks"], "notes": plan.notes,
    }
    if dense is not None:
        row.update(quality(dense, result.videos))
    if plan.config.method == "profile":
        row["profile"] = profile_mix(report, plan.config.warmup_layers)
    if plan.config.method == "hybrid":
        row["hybrid"] = hybrid_mix(report)
    return row, result.videos


def hybrid_mix(report: dict) -> dict:
    """A hybrid run's head choices at its choosing (non-refresh, non-warm-up) calls: the share of each candidate,
    summed over every layer, head and prompt; and the share of calls that were refreshes."""
    counts = {}
    for layer in report["heads"]["choices"]:
        for head in layer:
            for label, n in head.items():
                counts[label] = counts.get(label, 0.0) + n
    chosen = {k: counts.get(k, 0.0) for k in HYBRID_LABELS}
    # "dense" counts also hold the warm-up's dense calls, which never reached the planner
    heads = sum(len(layer) for layer in report["heads"]["choices"]) / max(1, len(report["heads"]["choices"]))
    chosen["dense"] -= (report["calls"] - report["sparse_calls"]) * heads
    total = sum(chosen.values())
    return {"counts": counts, "planner": {k: v / total for k, v in chosen.items()} if total > 0 else None,
            "refresh_share": counts.get("refresh", 0.0) / max(1e-9, total + counts.get("refresh", 0.0))}


# ---------------------------------------------------------------------------------------- the sweep
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import vidsparse
    from vidsparse.app.configs import call_kwargs
    from vidsparse.app.runinfo import environment, json_safe

    here = Path(__file__).resolve().parents[1] / "vidsparse"
    if Path(vidsparse.__file__).resolve().parent != here:
        logger.warning("running %s's vidsparse, not this checkout's (%s): run with PYTHONPATH=.",
                       Path(vidsparse.__file__).parent, here)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prompts = read_prompts(args.prompts)
    cases = [{"prompt": p, "seed": SEED} for p in prompts]

    pipe, cfg = load_pipeline(device, getattr(torch, args.dtype))
    kwargs = call_kwargs(cfg)
    if args.steps:
        kwargs["num_inference_steps"] = args.steps
    steps = kwargs["num_inference_steps"]
    methods = args.method or list(SWEEPS)
    runs = sweep_plans(cfg, steps, methods, args.quick)

    results = {
        "meta": {**environment(["python", *sys.argv[:1], *argv], device), "vidsparse_path":
                 str(Path(vidsparse.__file__).parent), "dtype": args.dtype, "steps": steps, "generate": kwargs,
                 "prompts_requested": args.prompts, "quick": args.quick,
                 "density": "realised: every step and replaced layer of every prompt, the dense warm-up included "
                            "(a dense call counts 1; a delta refresh step counts 1)"},
        "cases": cases, "dense": None, "rows": [], "profile_mix": None, "hybrid_mix": None,
    }

    def save():
        (out / "sweep.json").write_text(json.dumps(json_safe(results), indent=1) + "\n")

    total = len(runs) + 1
    dense_plan = method_plan(cfg, "dense", steps, "dense")
    started = time.perf_counter()
    dense_row, dense_videos = run_one(pipe, dense_plan, cases, kwargs, None)
    results["dense"] = dense_row
    _progress(1, total, "dense", dense_row, time.perf_counter() - started)
    save()
    for i, (method, setting, plan) in enumerate(runs, start=2):
        row = {"method": method, "setting": setting, "config": shown_config(plan.config)}
        started = time.perf_counter()
        try:
            measured, _ = run_one(pipe, plan, cases, kwargs, dense_videos, setting.get(STEP_CACHE))
            if STEP_CACHE in setting:  # attention calls made against dense's: the share of layer calls not skipped
                measured["calls_kept"] = measured["calls"] / max(1, dense_row["calls"])
            row.update(measured)
        except Exception as exc:  # one failing setting is recorded, and the sweep goes on
            row["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            row["traceback"] = traceback.format_exc(limit=-3)
            row["seconds"] = time.perf_counter() - started
        results["rows"].append(row)
        if method == "profile" and setting == MIX_SETTING and "profile" in row:
            results["profile_mix"] = row["profile"]["planner"]
        if method == "hybrid" and setting == HYBRID_MIX_SETTING and "hybrid" in row:
            results["hybrid_mix"] = row["hybrid"]["planner"]
        _progress(i, total, plan.name, row, time.perf_counter() - started)
        save()
    if results["profile_mix"] is None and "profile" in methods:
        logger.warning("no profile_mix: the setting %s did not run or failed", MIX_SETTING)

    results = json.loads((out / "sweep.json").read_text())  # the rows as written: +-inf as strings
    (out / "SWEEP.md").write_text(markdown(results))
    plot(results, out / "sweep.png")
    print(f"wrote {out / 'sweep.json'}, {out / 'SWEEP.md'}, {out / 'sweep.png'}", file=sys.stderr)
    return 0


def _progress(i: int, total: int, name: str, row: dict, seconds: float) -> None:
    if "error" in row:
        what = f"FAILED: {row['error']}"
    elif "psnr_mean" in row:
        what = (f"density {row['density']:.3f}  PSNR {_db(row['psnr_mean'])} dB (worst {_db(row['psnr_worst'])})  "
                f"SSIM {row['ssim_mean']:.3f}")
    else:
        what = f"density {row['density']:.3f}"
    print(f"[{i}/{total}] {name}: {what}  {seconds:.1f} s", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------- the report
def _setting_text(setting: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in setting.items())


def _num(value) -> float:
    """A JSON number back as a float ("inf" strings included; None as NaN)."""
    return math.nan if value is None else float(value)


def _db(value) -> str:
    value = _num(value)
    return "inf" if math.isinf(value) else f"{value:.2f}"


def _rows(results: dict, method: str) -> list[dict]:
    """A method's measured rows, sorted by density."""
    rows = [r for r in results["rows"] if r["method"] == method and "error" not in r]
    return sorted(rows, key=lambda r: r["density"])


def interpolate(rows: list[dict], density: float) -> float | None:
    """PSNR of a method's curve at `density` by linear interpolation between its measured points; None outside
    their range (no extrapolation) or where a neighbouring point is not finite."""
    points = [(r["density"], _num(r["psnr_mean"])) for r in rows]
    if not points or not points[0][0] <= density <= points[-1][0]:
        return None
    for (d0, p0), (d1, p1) in zip(points, points[1:] + points[-1:]):
        if d0 <= density <= d1:
            if not (math.isfinite(p0) and math.isfinite(p1)):
                return None
            return p0 if d1 == d0 else p0 + (p1 - p0) * (density - d0) / (d1 - d0)
    return None


def markdown(results: dict) -> str:
    meta = results["meta"]
    dense = results["dense"]
    lines = [
        "# Quality against realised density on the yardstick",
        "",
        f"`{meta['command']}`, {meta['date']}, {meta['device']}, {meta['dtype']}; "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v) + ".",
        "",
        f"{len(results['cases'])} prompt(s) of `{PROMPTS_FILE}`, seed {SEED}, {meta['steps']} steps, "
        f"CFG {meta['generate'].get('guidance_scale')}. Every method against dense on the same prompts and seeds. "
        "Density is the realised density over every step and replaced layer of every prompt, the dense warm-up "
        "included (a dense call counts 1); for `delta` its refresh steps count 1 as well. PSNR and SSIM: the mean "
        "over every frame of every prompt, and the worst frame (`vidsparse.app.metrics`). Seconds: the wall time of all "
        "of a setting's generations (on a CPU the sparse methods run a PyTorch fallback: the times measure "
        "nothing there).",
        "",
        f"Dense: density {dense['density']:.3f}, {dense['seconds']:.1f} s.",
    ]
    if meta.get("quick"):
        lines += ["", "**`--quick`: a check of the script (1 prompt, few steps, 2 settings per method); these numbers "
                  "are not a measurement of the methods.**"]
    if len(results["cases"]) < meta.get("prompts_requested", 0):
        lines += ["", f"{meta['prompts_requested']} prompts were asked for; the prompt file has "
                  f"{len(results['cases'])}."]
    methods = list(dict.fromkeys(r["method"] for r in results["rows"]))
    for method in methods:
        lines += ["", f"## {method}", "", "| setting | density | PSNR dB | worst PSNR | SSIM | worst SSIM | s |",
                  "|---|---|---|---|---|---|---|"]
        for r in _rows(results, method):
            kept = f" (attention calls kept: {r['calls_kept']:.2f})" if "calls_kept" in r else ""
            lines.append(f"| {_setting_text(r['setting'])}{kept} | {r['density']:.3f} | {_db(r['psnr_mean'])} | "
                         f"{_db(r['psnr_worst'])} | {r['ssim_mean']:.3f} | {r['ssim_worst']:.3f} | "
                         f"{r['seconds']:.1f} |")
        for r in results["rows"]:
            if r["method"] == method and "error" in r:
                lines.append(f"| {_setting_text(r['setting'])} | failed: {r['error']} | | | | | |")
        notes = sorted({n for r in results["rows"] if r["method"] == method for n in r.get("notes", [])})
        lines += [""] + [f"Note: {n}." for n in notes] if notes else []
    lines += _budget_section(results, methods)
    if "profile" in methods:
        lines += _equal_density_section(results)
        lines += _mix_section(results)
    if "hybrid" in methods:
        lines += _pareto_section(results, [m for m in methods if not m.startswith("hybrid")])
    return "\n".join(lines) + "\n"


def _pareto_section(results: dict, others: list[str]) -> list[str]:
    """Hybrid against the best single method at each hybrid point's density, and what its heads chose."""
    curves = {m: _rows(results, m) for m in others}
    lines = ["", "## hybrid against the best single method at equal density (the Pareto front)", "",
             "Every other method's PSNR curve is interpolated linearly at each hybrid point's density (no "
             "extrapolation). Choices: the share of head choices at the hybrid's planned calls (refresh steps "
             "and the dense warm-up left out).", "",
             "| hybrid setting | density | PSNR | SSIM | best other at it | difference | verdict | static / spatial / "
             "temporal / delta / dense |", "|---|---|---|---|---|---|---|---|"]
    wins = losses = outside = 0
    for r in _rows(results, "hybrid"):
        d, own = r["density"], _num(r["psnr_mean"])
        known = {m: v for m in others if (v := interpolate(curves[m], d)) is not None}
        if not known:
            cell, diff, verdict = "none reaches it", "", "no claim"
            outside += 1
        else:
            best = max(known, key=known.get)
            delta = own - known[best]
            cell, diff = f"{best} {known[best]:.2f}", f"{delta:+.2f} dB"
            verdict = "hybrid on the front" if delta >= 0 else "**hybrid below**"
            wins, losses = wins + (delta >= 0), losses + (delta < 0)
        mix = (r.get("hybrid") or {}).get("planner") or {}
        shares = " / ".join(f"{mix.get(k, math.nan):.2f}" for k in HYBRID_LABELS)
        lines.append(f"| {_setting_text(r['setting'])} | {d:.3f} | {_db(r['psnr_mean'])} | {r['ssim_mean']:.3f} | "
                     f"{cell} | {diff} | {verdict} | {shares} |")
    lines += ["", f"Hybrid is at least as good as the best other method at {wins} of {wins + losses} comparable "
              f"point(s)" + (f"; {outside} lie outside every other curve's range." if outside else ".")]
    goal = [r for r in _rows(results, "hybrid") if r["density"] <= 0.4]
    met = [r for r in goal if _num(r["psnr_mean"]) >= 30 and r["ssim_mean"] >= 0.95]
    lines += ["", "Goal PSNR >= 30 dB and SSIM >= 0.95 at density <= 0.4: "
              + (f"met by {', '.join(_setting_text(r['setting']) for r in met)}." if met else
                 "not met: no hybrid setting reaches density 0.4." if not goal else
                 f"not met ({len(goal)} hybrid setting(s) at density <= 0.4; best PSNR there "
                 f"{max(_num(r['psnr_mean']) for r in goal):.2f} dB).")]
    return lines


def _budget_section(results: dict, methods: list[str]) -> list[str]:
    lines = ["", "## Best PSNR within a density budget", "",
             "| method | " + " | ".join(f"density <= {b}" for b in BUDGETS) + " |",
             "|---|" + "---|" * len(BUDGETS)]
    for method in methods:
        cells = []
        for budget in BUDGETS:
            within = [r for r in _rows(results, method) if r["density"] <= budget]
            if not within:
                least = min((r["density"] for r in _rows(results, method)), default=None)
                cells.append("none: no setting this sparse" + (f" (sparsest {least:.3f})" if least else ""))
                continue
            best = max(within, key=lambda r: _num(r["psnr_mean"]))
            cells.append(f"{_db(best['psnr_mean'])} dB ({_setting_text(best['setting'])}, "
                         f"density {best['density']:.3f})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def _equal_density_section(results: dict) -> list[str]:
    curves = {m: _rows(results, m) for m in FIXED}
    ranges = {m: (f"{rows[0]['density']:.3f}-{rows[-1]['density']:.3f}" if rows else "not measured")
              for m, rows in curves.items()}
    lines = ["", "## profile against the better of spatial and temporal, at equal density", "",
             "Each fixed pattern's PSNR curve is interpolated linearly at every profile point's density (no "
             f"extrapolation: spatial measured over density {ranges['spatial']}, temporal over {ranges['temporal']}).",
             "", "| profile setting | density | profile PSNR | spatial at it | temporal at it | difference | verdict |",
             "|---|---|---|---|---|---|---|"]
    wins = losses = outside = 0
    for r in _rows(results, "profile"):
        d, own = r["density"], _num(r["psnr_mean"])
        at = {m: interpolate(rows, d) for m, rows in curves.items()}
        known = {m: v for m, v in at.items() if v is not None}
        cell = {m: (f"{v:.2f}" if v is not None else "outside its range") for m, v in at.items()}
        if not known:
            verdict, diff = "no claim: no fixed-pattern curve reaches this density", ""
            outside += 1
        else:
            best = max(known, key=known.get)
            delta = own - known[best]
            diff = f"{delta:+.2f} dB vs {best}"
            if delta > 0:
                verdict = "profile better"
                wins += 1
            else:
                verdict = "**profile not better**"
                losses += 1
            if len(known) < len(FIXED):
                verdict += f" (only {best} reaches this density)"
        lines.append(f"| {_setting_text(r['setting'])} | {d:.3f} | {_db(r['psnr_mean'])} | {cell['spatial']} | "
                     f"{cell['temporal']} | {diff} | {verdict} |")
    compared = wins + losses
    if compared == 0:
        lines += ["", "No profile point falls within a fixed pattern's measured density range: the claim "
                  "\"profile beats spatial and temporal at equal density\" is not tested by this sweep."]
    elif losses == 0:
        lines += ["", f"Profile is better than the better fixed pattern at all {compared} comparable point(s)"
                  + (f"; {outside} lie outside both curves' ranges." if outside else ".")]
    else:
        lines += ["", f"The claim \"profile beats the better of spatial and temporal at equal density\" fails at "
                  f"{losses} of {compared} comparable point(s)"
                  + (f" ({outside} more lie outside both curves' ranges)." if outside else ".")]
    return lines


def _mix_section(results: dict) -> list[str]:
    lines = ["", "## profile: what the heads chose", "",
             "Shares of the head choices during the sparse steps (the planner's own choices; the warm-up layer left "
             "out), every prompt of a run counted.", "",
             "| profile setting | spatial | temporal | dense | density |", "|---|---|---|---|---|"]
    for r in _rows(results, "profile"):
        mix = r["profile"]["planner"] or {}
        lines.append(f"| {_setting_text(r['setting'])} | " + " | ".join(
            f"{mix.get(k, math.nan):.3f}" for k in PROFILE_LABELS) + f" | {r['density']:.3f} |")
    mix = results.get("profile_mix")
    lines += ["", (f"`profile_mix` (fraction {MIX_SETTING['fraction']}, eps {MIX_SETTING['eps']}): "
                   + ", ".join(f"{k} {mix[k]:.3f}" for k in PROFILE_LABELS)) if mix else
              f"`profile_mix` is missing: the setting {_setting_text(MIX_SETTING)} did not run or failed."]
    return lines


def plot(results: dict, path: Path) -> None:
    """PSNR and SSIM against realised density, one line per method, dense marked at density 1."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5), constrained_layout=True)
    FigureCanvasAgg(fig)
    ax_psnr, ax_ssim = fig.subplots(1, 2)
    methods = list(dict.fromkeys(r["method"] for r in results["rows"]))
    for i, method in enumerate(methods):
        rows = _rows(results, method)
        if not rows:
            continue
        density = [r["density"] for r in rows]
        psnr = [_num(r["psnr_mean"]) for r in rows]
        style = dict(marker="o", color=f"C{i}", label=method)
        finite = [(d, p) for d, p in zip(density, psnr) if math.isfinite(p)]
        if finite:
            ax_psnr.plot(*zip(*finite), **style)
        ax_ssim.plot(density, [r["ssim_mean"] for r in rows], **{**style, "label": None})
    ax_psnr.axvline(1.0, color="black", linestyle="--", linewidth=1, label="dense (density 1: PSNR inf, SSIM 1)")
    ax_ssim.axvline(1.0, color="black", linestyle="--", linewidth=1)
    ax_ssim.plot([1.0], [1.0], marker="*", markersize=12, color="black", linestyle="none")
    for ax, label in ((ax_psnr, "PSNR against dense (dB, mean over frames)"),
                      (ax_ssim, "SSIM against dense (mean over frames)")):
        ax.set_xlabel("realised attention density (warm-up included)")
        ax.set_ylabel(label)
        ax.set_xlim(0, 1.05)
        ax.grid(alpha=0.3)
    meta = results["meta"]
    fig.suptitle(f"yardstick: quality against density ({len(results['cases'])} prompt(s), seed {SEED}, "
                 f"{meta['steps']} steps{', --quick' if meta.get('quick') else ''})")
    fig.legend(*ax_psnr.get_legend_handles_labels(), loc="outside right upper")
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
