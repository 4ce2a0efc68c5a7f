"""Quality against realised attention density on both yardsticks: every sparse method swept over one knob, compared
with dense on the same prompts and seeds, per model, in one report.

    python yardstick/sweep.py [--models yardstick,yardstick-long] [--device cuda] [--budget-s S] [--out yardstick]
    python yardstick/sweep.py --device cuda --budget-s 320     the report's run: one H200 call of at most 6 minutes
    python yardstick/sweep.py --quick                  a check of the script on a CPU (the short model, minutes)
    python yardstick/sweep.py --quick --tiny           both models' paths on a CPU at 4 frames of 32 x 32

Models (`--models`, default both where the long yardstick's weights exist, else the short one with a note):
- `yardstick`: 9 frames of 64 x 64, a grid of 9 x 16 x 16 = 2,304 video tokens; its config's 20 steps, float32;
- `yardstick-long`: 16 frames of 128 x 128, 16 x 32 x 32 = 16,384 video tokens (weights in
  `vidsparse/yardstick/weights-long/`). 16 steps rather than its config's 20 (the fewest issue 20's targets allow) and
  bfloat16 on a CUDA device (float32 on a CPU), so that both models' sweep fits about 5 minutes of an H200: its
  attention costs about 50 times the short model's per step, and in float32 one generation of 20 steps takes 6.5 s
  there (`cuda_seconds_20_steps_cfg` in yardstick/long_card.json), 36 settings of 8 cases about half an hour.
Each model is loaded once with its config's scheduler (`vidsparse/app/configs/<model>.yaml`); `--steps` and `--dtype`
override both models' defaults.

Cases: the first `--prompts` (4) prompts of `search/prompts/yardstick-eval.txt` (two training-style, two held-out
combinations, none among the calibration prompts) times the `--seeds` (0,1): 8 videos per setting and model. Dense (the
stock computation) generates them once per model; then every setting of every method is installed with
`vidsparse.apply`, generates the same cases, and is removed. A setting is the config's method entry with one knob
overridden (`SWEEPS`, 5 settings a method); the config's warm-up (5 dense steps of 20) keeps its share of the steps
when the steps differ, as in `vidsparse compare`. `dynamic` is swept when this vidsparse registers it and the model
config has a `dynamic` section, and is skipped with a note otherwise. `hybrid+fbc` (hybrid stacked with diffusers'
FirstBlockCache) runs only when asked for (`--method hybrid+fbc`).

Batching: the methods that choose per batch element, or before the call (`PER_ELEMENT`), generate all cases of a
setting in one pipeline call (a batch of 8 prompts, 16 with CFG), which generates what one case at a time does, to
rounding. hybrid (whose choice per head is the worst batch element's), the step cache and dynamic with a drift check
run one case per call. Each is compared with the dense run of its own kind; the report gives the PSNR of the two dense
runs against each other, the rounding floor that batching puts under every comparison. `--no-batch` runs every
setting one case per call.

For every setting:
- density: `handle.report()["density"]`, the realised density over every step and replaced layer of every case, the
  dense warm-up included (a dense call counts 1). For "delta" a refresh step counts 1 as well;
- PSNR and SSIM of the decoded video against dense (`vidsparse.app.metrics`): the mean over every frame of every
  case, and the worst frame;
- seconds: the wall time of the setting's generations (on the CPU, the sparse methods run a PyTorch fallback, so
  times measure nothing there).
For "profile" and "hybrid" the per-head choices are kept. The short yardstick's profile setting fraction 0.3, eps 0.5
gives the top-level `profile_mix`, and its hybrid eps 0.2 the top-level `hybrid_mix`, which
`pipelines/bench_methods.py` forces at full size.

Time: settings run in rounds, each round one more setting of every method of every model, the ends of each knob's
range first, so a stopped sweep still has every curve's span. `--budget-s S` launches no setting that would end past
S seconds from the start (its expected time: the last setting of the same model and batching); what it skipped is
recorded, so a device call always returns a report.

Writes into --out: `sweep.json` (both models; rewritten after every setting, so a stopped sweep keeps what it
measured), `SWEEP.md` (per method a table with both models side by side, the best PSNR under density budgets per
model, profile against spatial and temporal, hybrid and dynamic against the others at equal density) and `sweep.png`
(PSNR and SSIM against density, a column per model, the Pareto front marked). A setting that raises is recorded with
its error and the sweep goes on.

`--tiny` runs every model at 4 frames of 32 x 32 through its own config (block sizes, voxels, refresh steps), a CPU
check of the flow. With it, and only with it, a missing long yardstick is stood in for by the short yardstick's
weights and pattern file, labelled as such in the json and the report: its numbers then measure nothing.

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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger("yardstick.sweep")

ROOT = Path(__file__).resolve().parents[1]
PROMPTS_FILE = ROOT / "search" / "prompts" / "yardstick-eval.txt"
PROMPTS_SHOWN = "search/prompts/yardstick-eval.txt"
SEEDS = (0, 1)


@dataclass(frozen=True)
class ModelSpec:
    """How the sweep runs one built-in yardstick.

    Attributes:
        name: the built-in and its model config (`vidsparse/app/configs/<name>.yaml`).
        steps: denoising steps (None: the config's).
        cuda_dtype: weights and activations on a CUDA device (a CPU runs float32).
        goal: issue 20's hybrid target: at least this PSNR (dB) and SSIM (None: no SSIM target) at density at most.
    """

    name: str
    steps: int | None
    cuda_dtype: str
    goal: tuple[float, float | None, float]


SPECS = {
    "yardstick": ModelSpec("yardstick", None, "float32", (28.0, None, 0.40)),
    "yardstick-long": ModelSpec("yardstick-long", 16, "bfloat16", (30.0, 0.95, 0.35)),
}
TINY = {"num_frames": 4, "height": 32, "width": 32}  # --tiny: every model at this size
# method -> (the model config's method entry, its settings in knob order: each overrides one knob of that entry)
SWEEPS: dict[str, tuple[str, list[dict]]] = {
    "spatial": ("spatial", [{"frames": f} for f in (0, 1, 2, 3, 4)]),
    "temporal": ("temporal", [{"radius": r} for r in (0, 1, 2, 4, 6)]),
    "static": ("static", [{"eps": e} for e in (0.05, 0.1, 0.2, 0.3, 0.4)]),
    "profile": ("profile", [{"fraction": f, "eps": 0.5} for f in (0.1, 0.2, 0.3, 0.45, 0.6)]),
    "delta": ("delta", [{"top_keys": t} for t in (0.05, 0.1, 0.2, 0.3, 0.4)]),
    "hybrid": ("hybrid", [{"eps": e} for e in (0.05, 0.1, 0.2, 0.3, 0.5)]),
    "dynamic": ("dynamic", [{"top_p": p} for p in (0.5, 0.7, 0.8, 0.9, 0.95)]),
    # each head's top_p from the search's curves, chosen again under each mean density budget
    "dynamic-calibrated": ("dynamic-calibrated", [{"density": d} for d in (0.15, 0.25, 0.35, 0.5, 0.7)]),
    # hybrid stacked with diffusers' FirstBlockCache (`transformer.enable_cache`) at three thresholds: on request
    "hybrid+fbc": ("hybrid", [{"eps": 0.2, "first_block_cache": t} for t in (0.05, 0.1, 0.2)]),
}
DEFAULT_METHODS = tuple(m for m in SWEEPS if m != "hybrid+fbc")
STEP_CACHE = "first_block_cache"  # a setting key that is not a method option: the step cache stacked on the method
# Methods whose choices are made per batch element or before the call: a batch of cases generates what the cases one
# at a time do, to rounding (float32 on a CPU, 4 x 32 x 32, 3 steps: at most 7e-5 of the pixel range apart; hybrid
# 0.44 apart, its choice being the worst batch element's).
PER_ELEMENT = frozenset({"dense", "spatial", "temporal", "static", "profile", "delta", "dynamic"})
QUICK_STEPS, QUICK_SETTINGS = 8, 2
MIX_SETTING = {"fraction": 0.3, "eps": 0.5}  # the profile setting whose mix is the top-level `profile_mix`
PROFILE_LABELS = ("spatial", "temporal", "dense")
HYBRID_MIX_SETTING = {"eps": 0.2}  # the hybrid setting whose choices are the top-level `hybrid_mix`
HYBRID_LABELS = ("static", "spatial", "temporal", "delta", "dense")  # and any candidate it adds ("dynamic", issue 20)
MIX_MODEL = "yardstick"  # the model whose mixes are the top-level ones (bench_methods.py reads them)
BUDGETS = (0.35, 0.4, 0.6)
FIXED = ("spatial", "temporal")  # the fixed patterns profile chooses between, per head
FIXED_METHODS = ("static", "spatial", "temporal")  # what issue 20 measures dynamic against


# ---------------------------------------------------------------------------------------- setup
def long_weights() -> Path:
    from vidsparse.yardstick import LONG_WEIGHTS_DIR

    return LONG_WEIGHTS_DIR / "transformer" / "diffusion_pytorch_model.safetensors"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", help="comma-separated built-ins, of " + ", ".join(SPECS) + " (default: both where the "
                   "long yardstick's weights exist, else yardstick)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="weights and activations (default: auto: float32 for yardstick; bfloat16 for yardstick-long on "
                        "CUDA, float32 on a CPU)")
    p.add_argument("--prompts", type=int, help=f"the first N prompts of {PROMPTS_SHOWN} (default: 4; --quick 1)")
    p.add_argument("--seeds", help="comma-separated seeds, each with every prompt (default: 0,1; --quick 0)")
    p.add_argument("--steps", type=int, help="denoising steps of every model (default: yardstick 20, "
                   f"yardstick-long {SPECS['yardstick-long'].steps}; --quick {QUICK_STEPS})")
    p.add_argument("--settings", type=int, help="the first N settings of each method, in sweep order (the ends of "
                   f"its range first; default: all 5; --quick {QUICK_SETTINGS})")
    p.add_argument("--method", action="append", choices=tuple(SWEEPS),
                   help="sweep only this method (repeat; default: " + ", ".join(DEFAULT_METHODS) + ")")
    p.add_argument("--batch", action=argparse.BooleanOptionalAction, default=True,
                   help="generate a setting's cases in one pipeline call where its method allows (default: on)")
    p.add_argument("--budget-s", type=float, help="launch no setting that would end past this many seconds from the "
                   "start; the skipped ones are recorded (default: no limit)")
    p.add_argument("--backend", choices=("auto", "triton", "sdpa", "reference"), default="auto",
                   help="every sparse method's backend (SparseConfig.backend; default: %(default)s, the Triton kernel "
                        "where it runs)")
    p.add_argument("--quick", action="store_true", help=f"1 prompt, seed 0, {QUICK_STEPS} steps, {QUICK_SETTINGS} "
                   "settings per method: a check of the script")
    p.add_argument("--tiny", action="store_true", help="every model at 4 frames of 32 x 32; a missing long yardstick "
                   "runs on the short one's weights, labelled (a CPU check of the flow)")
    p.add_argument("--out", default="yardstick", help="output folder (default: %(default)s)")
    args = p.parse_args(argv)
    args.prompts = args.prompts if args.prompts is not None else 1 if args.quick else 4
    args.steps = args.steps if args.steps is not None else QUICK_STEPS if args.quick else None
    args.settings = args.settings if args.settings is not None else QUICK_SETTINGS if args.quick else None
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [0] if args.quick else list(SEEDS)
    except ValueError:
        p.error(f"--seeds {args.seeds}: give comma-separated integers")
    if args.prompts < 1 or (args.steps is not None and args.steps < 1) or (args.settings is not None
                                                                           and args.settings < 1):
        p.error("--prompts, --steps and --settings must be at least 1")
    if args.budget_s is not None and args.budget_s <= 0:
        p.error("--budget-s must be positive")
    have_long = long_weights().is_file()
    args.notes = []
    if args.models:
        args.models = [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = [m for m in args.models if m not in SPECS]
        if unknown or not args.models:
            p.error(f"--models {','.join(unknown) or '(none)'}: give some of {', '.join(SPECS)}")
        if "yardstick-long" in args.models and not have_long and not args.tiny:
            p.error(f"--models yardstick-long: no weights at {long_weights().relative_to(ROOT)}; train them "
                    "(yardstick/long_session.sh), or add --tiny to check the flow on the short yardstick's weights")
    elif have_long or args.tiny:
        args.models = list(SPECS)
    else:
        args.models = ["yardstick"]
        args.notes.append(f"yardstick-long not swept: no weights at {long_weights().relative_to(ROOT)} (train them "
                          "with yardstick/long_session.sh)")
    return args


def read_prompts(n: int) -> list[str]:
    lines = [line.strip() for line in PROMPTS_FILE.read_text().splitlines()]
    prompts = [line for line in lines if line and not line.startswith("#")]
    if n > len(prompts):
        logger.warning("--prompts %d: %s has only %d prompts; using them all", n, PROMPTS_SHOWN, len(prompts))
    return prompts[:n]


@dataclass
class Model:
    """One model of the sweep: its pipeline, config, call arguments and its entry of the results."""

    spec: ModelSpec
    pipe: object
    cfg: object
    kwargs: dict
    standin: bool  # the short yardstick's weights and pattern file stand in for the long one's (--tiny only)
    backend: str  # every sparse method's SparseConfig.backend
    entry: dict  # this model's part of sweep.json
    dense: dict = field(default_factory=dict)  # "batched" / "per_case" -> the dense videos
    last_seconds: dict = field(default_factory=dict)  # batched -> seconds of the last setting run that way

    @property
    def name(self) -> str:
        return self.spec.name


def load_model(spec: ModelSpec, args, device: str, cases: list[dict]) -> Model:
    """A model's pipeline (as `vidsparse compare` loads it) and its json entry, on `device` in its dtype."""
    from vidsparse.app.configs import apply_scheduler_config, call_kwargs, load_model_config
    from vidsparse.app.models import load_builtin

    cfg = load_model_config(spec.name)
    standin = spec.name == "yardstick-long" and not long_weights().is_file()
    if standin:  # parse_args allows it with --tiny only
        from vidsparse.yardstick import WEIGHTS_DIR, load_yardstick

        pipe = load_yardstick()
        pipe.set_progress_bar_config(disable=True)
        weights = (f"{_shown(WEIGHTS_DIR)}: the short yardstick's, standing in for the absent long "
                   "weights (--tiny): these numbers measure nothing")
    else:
        from vidsparse.yardstick import LONG_WEIGHTS_DIR, WEIGHTS_DIR

        pipe, _ = load_builtin(spec.name)
        weights = _shown(LONG_WEIGHTS_DIR if spec.name == "yardstick-long" else WEIGHTS_DIR)
    apply_scheduler_config(pipe, cfg)
    dtype = args.dtype if args.dtype != "auto" else spec.cuda_dtype if device == "cuda" else "float32"
    pipe = pipe.to(device)
    if pipe.transformer.dtype != getattr(torch, dtype):  # the built-ins load in float32
        pipe = pipe.to(dtype=getattr(torch, dtype))
    kwargs = call_kwargs(cfg)
    kwargs["num_inference_steps"] = args.steps or spec.steps or kwargs["num_inference_steps"]
    if args.tiny:
        kwargs.update(TINY)
    grid = video_grid(pipe, kwargs)
    notes = []
    if spec.steps and not args.steps and spec.steps != cfg.generate.get("num_inference_steps"):
        notes.append(f"{spec.steps} steps, not the config's {cfg.generate.get('num_inference_steps')}: both models' "
                     "sweep fits the time (yardstick/sweep.py)")
    if standin:
        notes.append(weights)
    entry = {
        "meta": {"steps": kwargs["num_inference_steps"], "dtype": dtype, "generate": kwargs, "grid": grid,
                 "video_tokens": math.prod(grid), "weights": weights, "standin": standin, "tiny": args.tiny,
                 "notes": notes},
        "cases": cases, "dense": {}, "rows": [], "skipped": [], "profile_mix": None, "hybrid_mix": None,
    }
    return Model(spec, pipe, cfg, kwargs, standin, args.backend, entry)


def video_grid(pipe, kwargs: dict) -> list[int]:
    """The transformer's video token grid (t, h, w) for these call arguments."""
    scale = pipe.vae_scale_factor_spatial * pipe.transformer.config.patch_size
    frames = (kwargs["num_frames"] - 1) // pipe.vae_scale_factor_temporal + 1
    return [frames, kwargs["height"] // scale, kwargs["width"] // scale]


def method_plan(model: Model, entry: str, name: str, setting: dict | None = None):
    """A `MethodPlan` of the model config's method `entry` with `setting` over its fields, for this model's steps.

    As `vidsparse compare` plans it: the step schedule (warm-up, refresh steps, periods) keeps its share of the steps
    when the steps differ from the config's own (`SparseConfig.for_steps`), and a warm-up that covers every step is
    noted. With
    stand-in weights, a pattern file that does not exist is replaced by the short yardstick's (noted).
    """
    from vidsparse.app.configs import MethodPlan, method_config, resolve_patterns

    cfg, steps = model.cfg, model.kwargs["num_inference_steps"]
    config = method_config(cfg, entry)
    options = {k: v for k, v in (setting or {}).items() if k != STEP_CACHE}
    if model.backend != config.backend:
        options["backend"] = model.backend
    plan = MethodPlan(name, config.replace(**options) if options else config)
    patterns = plan.config.to_dict().get("patterns")
    if model.standin and patterns and not Path(patterns).is_file():
        plan.config = plan.config.replace(patterns=str(resolve_patterns("yardstick")))
        plan.notes.append(f"pattern file {patterns} absent: the short yardstick's stands in (--tiny)")
    if config.method != "dense" and plan.config.schedule_steps and steps != plan.config.schedule_steps:
        stated, of = plan.config.schedule, plan.config.schedule_steps
        plan.config = plan.config.for_steps(steps)  # the whole step schedule keeps its share, as in `compare`
        changed = [f"{k} {v} -> {plan.config.schedule[k]}" for k, v in stated.items()
                   if k != "stated_for" and plan.config.schedule[k] != v]
        if changed:
            plan.notes.append(f"step schedule scaled from {of} to {steps} steps: {'; '.join(changed)}")
    if config.method != "dense" and plan.config.warmup_steps >= steps:
        plan.dense_throughout = True
        plan.notes.append(f"ran dense throughout: its {plan.config.warmup_steps} warm-up steps cover all {steps}")
    return plan


def spread(n: int) -> list[int]:
    """0..n-1 with both ends first, then the midpoints of the gaps, widest first: [0, 4, 2, 1, 3] for 5."""
    order = list(dict.fromkeys([0, n - 1]))[:n]
    gaps = [(0, n - 1)] if n > 2 else []
    while gaps:
        lo, hi = gaps.pop(0)
        mid = (lo + hi) // 2
        if lo < mid < hi:
            order.append(mid)
            gaps += [(lo, mid), (mid, hi)]
    return order


def unavailable(method: str, cfg) -> str | None:
    """Why `method` cannot be swept on a model config, or None."""
    import vidsparse

    entry = SWEEPS[method][0]
    if entry not in cfg.methods:
        return f"the model config has no `methods.{entry}` section"
    kind = cfg.methods[entry].get("method", entry)
    if kind not in vidsparse.METHODS:
        return f"this vidsparse registers no `{kind}` method (vidsparse.METHODS)"
    return None


def schedule(models: list[Model], methods: list[str], settings: int | None) -> list[tuple]:
    """(model, method, setting, MethodPlan) of every run but dense, in rounds: each round one more setting of every
    method of every model, each method's settings in `spread` order."""
    queues = {}
    for model in models:
        for method in methods:
            why = unavailable(method, model.cfg)
            if why:
                note = f"{method} not swept: {why}"
                logger.warning("%s: %s", model.name, note)
                model.entry["meta"]["notes"].append(note)
                continue
            entry, knob = SWEEPS[method]
            chosen = [knob[i] for i in spread(len(knob))][:settings]
            queues[model.name, method] = [(model, method, s, method_plan(model, entry, f"{method} {_setting_text(s)}",
                                                                          s)) for s in chosen]
    runs = []
    for r in range(max((len(q) for q in queues.values()), default=0)):
        runs += [q[r] for q in queues.values() if r < len(q)]
    return runs


def batch_independent(config, setting: dict) -> bool:
    """Whether a batch of cases generates what the cases one at a time do (`PER_ELEMENT`): not for hybrid, the step
    cache (it skips a block for the whole batch) or dynamic's drift check (it reads the whole layer)."""
    if STEP_CACHE in setting or config.method not in PER_ELEMENT:
        return False
    return not (config.method == "dynamic" and config.to_dict().get("drift"))


def shown_config(config) -> dict:
    """A SparseConfig's flat fields, its pattern file relative to the repository when inside it."""
    fields = config.to_dict()
    if fields.get("patterns"):
        fields["patterns"] = _shown(fields["patterns"])
    return fields


def _shown(path) -> str:
    """A path relative to the repository when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# ---------------------------------------------------------------------------------------- measuring
def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def generate(pipe, cases: list[dict], kwargs: dict, batched: bool) -> list[np.ndarray]:
    """Every case's video as uint8 [F, H, W, 3]: in one pipeline call (`batched`), or one call per case. Each case's
    noise comes from its own CPU generator seeded with its seed, as `vidsparse compare` draws it."""
    videos = []
    for group in ([cases] if batched else [[c] for c in cases]):
        generators = [torch.Generator(device="cpu").manual_seed(c["seed"]) for c in group]
        with torch.inference_mode():
            frames = pipe(prompt=[c["prompt"] for c in group], generator=generators, output_type="np",
                          **kwargs).frames
        videos += [(np.clip(np.asarray(f, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
                   for f in frames]
    return videos


def run_one(model: Model, plan, batched: bool, dense: list[np.ndarray] | None,
            first_block_cache: float | None = None) -> tuple[dict, list[np.ndarray]]:
    """Generate every case of `model` with one plan; its row (quality against `dense` unless this is dense) and the
    videos. `first_block_cache`: stack diffusers' FirstBlockCache at this threshold on the transformer for the run."""
    import vidsparse

    pipe = model.pipe
    if first_block_cache is not None:
        from diffusers.hooks import FirstBlockCacheConfig

        pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=first_block_cache))
    try:
        handle = vidsparse.apply(pipe, plan.config)
        try:
            _sync()
            start = time.perf_counter()
            videos = generate(pipe, model.entry["cases"], model.kwargs, batched)
            _sync()
            seconds = time.perf_counter() - start
            report = handle.report()
        finally:
            handle.remove()
    finally:
        if first_block_cache is not None:
            pipe.transformer.disable_cache()
    row = {
        "density": float(report["density"]), "seconds": seconds, "batched": batched,
        "sparse_calls": report["sparse_calls"], "calls": report["calls"],
        "fallbacks": report["fallbacks"], "notes": plan.notes,
    }
    if dense is not None:
        row.update(quality(dense, videos))
    if plan.config.method == "profile":
        row["profile"] = profile_mix(report, plan.config.warmup_layers)
    if plan.config.method == "hybrid":
        row["hybrid"] = hybrid_mix(report)
    return row, videos


def quality(dense: list[np.ndarray], videos: list[np.ndarray]) -> dict:
    """PSNR and SSIM against dense over every frame of every case: mean, worst frame, and each case's mean.

    The PSNR "mean" is the PSNR of the mean squared error over the frames (finite unless every frame is identical),
    not the mean of per-frame PSNRs, which one identical frame makes infinite (the long yardstick's flat colours)."""
    from vidsparse.app.metrics import psnr_per_frame, ssim_per_frame

    psnr = [psnr_per_frame(d, v) for d, v in zip(dense, videos)]
    ssim = [ssim_per_frame(d, v) for d, v in zip(dense, videos)]
    all_psnr, all_ssim = np.concatenate(psnr), np.concatenate(ssim)
    return {
        "psnr_mean": _mean(all_psnr), "psnr_worst": float(all_psnr.min()),
        "ssim_mean": float(all_ssim.mean()), "ssim_worst": float(all_ssim.min()),
        "psnr_per_case": [_mean(p) for p in psnr], "ssim_per_case": [float(s.mean()) for s in ssim],
    }


def _mean(psnr: np.ndarray) -> float:
    """The PSNR of the frames' mean squared error, from per-frame PSNRs (an identical frame's +inf is MSE 0)."""
    mse = (255.0**2 / np.power(10.0, psnr / 10.0)).mean()
    return math.inf if mse == 0 else float(10 * np.log10(255.0**2 / mse))


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



def hybrid_mix(report: dict) -> dict:
    """A hybrid run's head choices at its choosing (non-refresh, non-warm-up) calls: the share of each candidate,
    summed over every layer, head and prompt; and the share of calls that were refreshes."""
    counts = {}
    for layer in report["heads"]["choices"]:
        for head in layer:
            for label, n in head.items():
                counts[label] = counts.get(label, 0.0) + n
    labels = list(HYBRID_LABELS) + sorted(set(counts) - set(HYBRID_LABELS) - {"refresh"})
    chosen = {k: counts.get(k, 0.0) for k in labels}
    # "dense" counts also hold the warm-up's dense calls, which never reached the planner
    heads = sum(len(layer) for layer in report["heads"]["choices"]) / max(1, len(report["heads"]["choices"]))
    chosen["dense"] -= (report["calls"] - report["sparse_calls"]) * heads
    total = sum(chosen.values())
    return {"counts": counts, "planner": {k: v / total for k, v in chosen.items()} if total > 0 else None,
            "refresh_share": counts.get("refresh", 0.0) / max(1e-9, total + counts.get("refresh", 0.0))}


# ---------------------------------------------------------------------------------------- the sweep
def main(argv: list[str] | None = None) -> int:
    t0 = time.perf_counter()
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import vidsparse
    from vidsparse.app.runinfo import environment, json_safe

    for note in args.notes:
        logger.warning("%s", note)
    here = ROOT / "vidsparse"
    if Path(vidsparse.__file__).resolve().parent != here:
        logger.warning("running %s's vidsparse, not this checkout's (%s): run with PYTHONPATH=.",
                       Path(vidsparse.__file__).parent, here)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prompts = read_prompts(args.prompts)
    cases = [{"prompt": p, "seed": s} for p in prompts for s in args.seeds]
    args.batch = args.batch and len(cases) > 1  # one case: a batch of it is the per-case run
    models = [load_model(SPECS[name], args, device, cases) for name in args.models]
    methods = args.method or list(DEFAULT_METHODS)
    runs = schedule(models, methods, args.settings)

    results = {
        "meta": {**environment(["python", "yardstick/sweep.py", *argv], device), "vidsparse_path":
                 str(Path(vidsparse.__file__).parent), "prompts_file": PROMPTS_SHOWN,
                 "prompts_requested": args.prompts, "seeds": args.seeds, "quick": args.quick, "tiny": args.tiny,
                 "batch": args.batch, "backend": args.backend, "budget_s": args.budget_s, "methods": methods,
                 "notes": args.notes,
                 "density": "realised: every step and replaced layer of every case, the dense warm-up included "
                            "(a dense call counts 1; a delta refresh step counts 1)",
                 "seconds": None},
        "models": {m.name: m.entry for m in models},
        "profile_mix": None, "hybrid_mix": None, "mix_model": None,
    }

    def save(final: bool = False):
        results["meta"]["seconds"] = time.perf_counter() - t0
        source = MIX_MODEL if MIX_MODEL in results["models"] else models[0].name  # the mixes bench_methods forces
        results["mix_model"] = source
        results["profile_mix"] = results["models"][source]["profile_mix"]
        results["hybrid_mix"] = results["models"][source]["hybrid_mix"]
        (out / "sweep.json").write_text(json.dumps(json_safe(results), indent=1) + "\n")
        # the report from the rows as written (+-inf as strings), so that a stopped sweep has one too
        written = json.loads((out / "sweep.json").read_text())
        (out / "SWEEP.md").write_text(markdown(written))
        if final:
            plot(written, out / "sweep.png")

    # dense of every model first, in each way that its settings generate (see "Batching" above)
    modes = {m.name: sorted({args.batch and batch_independent(plan.config, s) for mm, _, s, plan in runs
                             if mm is m} | {args.batch}, reverse=True) for m in models}
    total, done = len(runs) + sum(len(v) for v in modes.values()), 0
    for model in models:
        dense_plan = method_plan(model, "dense", "dense")
        for batched in modes[model.name]:
            kind = "batched" if batched else "per_case"
            started = time.perf_counter()
            row, model.dense[kind] = run_one(model, dense_plan, batched, None)
            model.entry["dense"][kind] = row
            model.last_seconds[batched] = row["seconds"]
            done += 1
            _progress(done, total, f"{model.name} dense ({kind.replace('_', ' ')})", row,
                      time.perf_counter() - started)
        if len(model.dense) == 2:  # the rounding floor that batching puts under the comparisons
            model.entry["dense"]["floor"] = quality(model.dense["batched"], model.dense["per_case"])
        save()
    for model, method, setting, plan in runs:
        done += 1
        batched = args.batch and batch_independent(plan.config, setting)
        row = {"method": method, "setting": setting, "config": shown_config(plan.config)}
        expected, spent = model.last_seconds[batched], time.perf_counter() - t0
        if args.budget_s is not None and spent + expected > args.budget_s:
            row["skipped"] = (f"not launched: {spent:.0f} s of --budget-s {args.budget_s:g} spent, and the setting "
                              f"would take about {expected:.0f} s more")
            model.entry["skipped"].append(row)
            print(f"[{done}/{total}] {model.name} {plan.name}: skipped ({row['skipped']})", file=sys.stderr)
            continue
        started = time.perf_counter()
        try:
            dense_videos = model.dense["batched" if batched else "per_case"]
            measured, _ = run_one(model, plan, batched, dense_videos, setting.get(STEP_CACHE))
            if STEP_CACHE in setting:  # attention calls made against dense's: the share of layer calls not skipped
                measured["calls_kept"] = measured["calls"] / max(1, model.entry["dense"]["per_case"]["calls"])
            row.update(measured)
            model.last_seconds[batched] = measured["seconds"]
        except Exception as exc:  # one failing setting is recorded, and the sweep goes on
            row["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            row["traceback"] = traceback.format_exc(limit=-3)
            row["seconds"] = time.perf_counter() - started
        model.entry["rows"].append(row)
        if method == "profile" and setting == MIX_SETTING and "profile" in row:
            model.entry["profile_mix"] = row["profile"]["planner"]
        if method == "hybrid" and setting == HYBRID_MIX_SETTING and "hybrid" in row:
            model.entry["hybrid_mix"] = row["hybrid"]["planner"]
        _progress(done, total, f"{model.name} {plan.name}", row, time.perf_counter() - started)
        save()
    save(final=True)
    if results["profile_mix"] is None and "profile" in methods:
        logger.warning("no profile_mix: %s's setting %s did not run or failed", results["mix_model"], MIX_SETTING)
    print(f"wrote {out / 'sweep.json'}, {out / 'SWEEP.md'}, {out / 'sweep.png'} in "
          f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
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


def _cell_row(entry: dict, method: str, setting: dict) -> dict | None:
    """The model's row (measured, failed or skipped) of one setting, or None."""
    for r in entry["rows"] + entry["skipped"]:
        if r["method"] == method and r["setting"] == setting:
            return r
    return None


def pareto_front(entry: dict) -> list[dict]:
    """The measured rows no other row beats at once in density (lower) and PSNR (higher), by density."""
    rows = sorted((r for r in entry["rows"] if "error" not in r),
                  key=lambda r: (r["density"], -_num(r["psnr_mean"])))
    front, best = [], -math.inf
    for r in rows:
        if _num(r["psnr_mean"]) > best:
            front.append(r)
            best = _num(r["psnr_mean"])
    return front


def _methods(results: dict) -> list[str]:
    """The methods in the report, in sweep order."""
    seen = {r["method"] for e in results["models"].values() for r in e["rows"] + e["skipped"]}
    return [m for m in SWEEPS if m in seen]


def markdown(results: dict) -> str:
    meta, models = results["meta"], results["models"]
    names = list(models)
    first = next(iter(models.values()), {"cases": [], "meta": {"generate": {}}})
    prompts = len(dict.fromkeys(c["prompt"] for c in first["cases"]))
    lines = [
        "# Quality against realised density on the yardsticks",
        "",
        f"`{meta['command']}`, {meta['date']}, {meta['device']}; "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v) + f"; {_secs(meta.get('seconds'))} in all.",
        "",
        f"{prompts} prompt(s) of `{meta['prompts_file']}` x seed(s) {', '.join(map(str, meta['seeds']))}: "
        f"{len(first['cases'])} case(s) per setting and model, at each model's own CFG (the table below). "
        "Every method against dense on the same cases, per model. Density is the realised density over every step "
        "and replaced layer of every case, the dense warm-up included (a dense call counts 1); for `delta` its "
        "refresh steps count 1 as well. PSNR: of the mean squared error over every frame of every case (an "
        "identical frame does not make it infinite), and the worst frame; SSIM: the mean over every frame, and the "
        "worst (`vidsparse.app.metrics`). Seconds: the wall time of all of a setting's generations (on a CPU the sparse "
        "methods run a PyTorch fallback: the times measure nothing there). The settings of a method batched all "
        "cases in one pipeline call where the method chooses per batch element (`yardstick/sweep.py`, \"Batching\"), "
        "and are compared with the dense run made the same way.",
    ]
    if meta.get("quick") or meta.get("tiny"):
        lines += ["", "**" + ("`--quick`: a check of the script (few cases, steps and settings)" if meta.get("quick")
                              else "") + ("; " if meta.get("quick") and meta.get("tiny") else "")
                  + ("`--tiny`: every model at 4 frames of 32 x 32" if meta.get("tiny") else "")
                  + ". These numbers are not a measurement of the methods.**"]
    if prompts < meta.get("prompts_requested", 0):
        lines += ["", f"{meta['prompts_requested']} prompts were asked for; the prompt file has {prompts}."]
    lines += [""] + [f"- Note: {n}." for n in meta["notes"]] if meta.get("notes") else []
    lines += _models_section(results)
    methods = _methods(results)
    lines += _budget_section(results, methods)
    lines += ["", "## Every setting, the models side by side", "",
              "Each method's knob in its own order; `s` is the wall time of a setting's generations."]
    for method in methods:
        header = "| setting | " + " | ".join(f"{n} density | PSNR dB | worst PSNR | SSIM | s" for n in names) + " |"
        lines += ["", f"### {method}", "", header, "|---|" + "---|---|---|---|---|" * len(names)]
        for setting in SWEEPS[method][1]:
            cells = []
            for name in names:
                r = _cell_row(models[name], method, setting)
                if r is None:
                    cells.append("not run | | | |")
                elif "skipped" in r:
                    cells.append("skipped: budget | | | |")
                elif "error" in r:
                    cells.append(f"failed: {r['error'][:80]} | | | |")
                else:
                    kept = f" (calls kept {r['calls_kept']:.2f})" if "calls_kept" in r else ""
                    cells.append(f"{r['density']:.3f}{kept} | {_db(r['psnr_mean'])} | {_db(r['psnr_worst'])} | "
                                 f"{r['ssim_mean']:.3f} | {r['seconds']:.1f}")
            if any(_cell_row(models[n], method, setting) for n in names):
                lines.append(f"| {_setting_text(setting)} | " + " | ".join(cells) + " |")
        for name in names:
            notes = sorted({n for r in models[name]["rows"] if r["method"] == method for n in r.get("notes", [])})
            lines += [""] + [f"Note ({name}): {n}." for n in notes] if notes else []
    for name in names:
        entry = models[name]
        lines += _front_section(name, entry)
        if "profile" in methods:
            lines += _equal_density_section(name, entry)
            lines += _mix_section(name, entry)
        if "hybrid" in methods:
            others = [m for m in methods if not m.startswith("hybrid")]
            lines += _against_section(name, entry, "hybrid", others, margin=0.0, mix=True)
            lines += _goal_line(name, entry)
        for dynamic in ("dynamic", "dynamic-calibrated"):
            if dynamic in methods:
                lines += _against_section(name, entry, dynamic, list(FIXED_METHODS), margin=2.0)
    return "\n".join(lines) + "\n"


def _secs(value) -> str:
    return "?" if value is None else f"{_num(value):.0f} s"


def _models_section(results: dict) -> list[str]:
    models = results["models"]
    names = list(models)
    lines = ["", "## The models", "", "| | " + " | ".join(f"`{n}`" for n in names) + " |",
             "|---|" + "---|" * len(names)]

    def row(label, cell):
        lines.append(f"| {label} | " + " | ".join(cell(models[n]) for n in names) + " |")

    row("video grid (t x h x w)", lambda e: " x ".join(map(str, e["meta"]["grid"]))
        + f" = {e['meta']['video_tokens']:,} tokens")
    row("frames x height x width", lambda e: "{num_frames} x {height} x {width}".format(**e["meta"]["generate"]))
    row("steps, dtype, CFG", lambda e: f"{e['meta']['steps']}, {e['meta']['dtype']}, "
                                      f"{e['meta']['generate'].get('guidance_scale')}")
    row("weights", lambda e: e["meta"]["weights"])
    row("dense: density, s (batched / one case per call)", lambda e: " / ".join(
        f"{d['density']:.3f}, {d['seconds']:.1f} s" for k, d in e["dense"].items() if k != "floor") or "not run")
    row("rounding floor: dense batched against one case per call", lambda e: (
        f"PSNR {_db(e['dense']['floor']['psnr_mean'])} dB (worst {_db(e['dense']['floor']['psnr_worst'])}), "
        f"SSIM {e['dense']['floor']['ssim_mean']:.4f}") if "floor" in e["dense"] else "one way only")
    row("settings measured / failed / skipped for time", lambda e: (
        f"{sum('error' not in r for r in e['rows'])} / {sum('error' in r for r in e['rows'])} / "
        f"{len(e['skipped'])}"))
    row("wall time of the settings", lambda e: _secs(sum(r["seconds"] for r in e["rows"])
                                                  + sum(d["seconds"] for k, d in e["dense"].items() if k != "floor")))
    notes = [f"- Note ({name}): {n}." for name in names for n in models[name]["meta"]["notes"]]
    return lines + ([""] + notes if notes else [])


def _budget_section(results: dict, methods: list[str]) -> list[str]:
    names = list(results["models"])
    lines = ["", "## Best PSNR within a density budget", "",
             "| method | " + " | ".join(f"{n}: density <= {b}" for n in names for b in BUDGETS) + " |",
             "|---|" + "---|" * (len(BUDGETS) * len(names))]
    for method in methods:
        cells = []
        for name in names:
            rows = _rows(results["models"][name], method)
            for budget in BUDGETS:
                within = [r for r in rows if r["density"] <= budget]
                if not within:
                    least = min((r["density"] for r in rows), default=None)
                    cells.append("none" + (f" (sparsest {least:.3f})" if least is not None else " measured"))
                    continue
                best = max(within, key=lambda r: _num(r["psnr_mean"]))
                cells.append(f"{_db(best['psnr_mean'])} dB ({_setting_text(best['setting'])}, "
                             f"density {best['density']:.3f})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def _front_section(name: str, entry: dict) -> list[str]:
    front = pareto_front(entry)
    lines = ["", f"## {name}: the Pareto front", "",
             "The settings that no other setting of any method beats in both density and PSNR (marked in "
             "`sweep.png`).", "", "| method | setting | density | PSNR dB | SSIM |", "|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {_setting_text(r['setting'])} | {r['density']:.3f} | {_db(r['psnr_mean'])} | "
              f"{r['ssim_mean']:.3f} |" for r in front]
    return lines if front else lines + ["| (nothing measured) | | | | |"]


def _against_section(name: str, entry: dict, method: str, others: list[str], margin: float,
                     mix: bool = False) -> list[str]:
    """`method` against the best of `others` at each of its points' density (linear interpolation, no
    extrapolation); `margin`: the dB above the best that counts as a win (issue 20: 2 dB for dynamic)."""
    curves = {m: _rows(entry, m) for m in others}
    mine = _rows(entry, method)
    if not mine:
        return []
    head = "| setting | density | PSNR | SSIM | best other at it | difference | verdict |"
    rule = "|---|---|---|---|---|---|---|"
    if mix:
        head, rule = head + " heads chose |", rule + "---|"
    lines = ["", f"## {name}: {method} against the best of {', '.join(others)} at equal density", "",
             "Each other method's PSNR curve is interpolated linearly at every point's density (no extrapolation)."
             + (" Choices: the share of head choices at the hybrid's planned calls (refresh steps and the dense "
                "warm-up left out)." if mix else ""), "", head, rule]
    wins = losses = outside = 0
    for r in mine:
        d, own = r["density"], _num(r["psnr_mean"])
        known = {m: v for m in others if (v := interpolate(curves[m], d)) is not None}
        if not known:
            cell, diff, verdict = "none reaches it", "", "no claim"
            outside += 1
        else:
            best = max(known, key=known.get)
            delta = own - known[best]
            cell, diff = f"{best} {known[best]:.2f}", f"{delta:+.2f} dB"
            won = delta >= margin
            verdict = (f"{method} on the front" if not margin else f"{method} {margin:g} dB above") if won else \
                f"**{method} below" + (f" {margin:g} dB over it**" if margin else "**")
            wins, losses = wins + won, losses + (not won)
        line = (f"| {_setting_text(r['setting'])} | {d:.3f} | {_db(r['psnr_mean'])} | {r['ssim_mean']:.3f} | "
                f"{cell} | {diff} | {verdict} |")
        if mix:
            shares = (r.get("hybrid") or {}).get("planner") or {}
            line += " " + ", ".join(f"{k} {v:.2f}" for k, v in shares.items() if v) + " |"
        lines.append(line)
    what = f"at least {margin:g} dB above" if margin else "at least as good as"
    lines += ["", f"{name}: {method} is {what} the best other method at {wins} of {wins + losses} comparable "
              f"point(s)" + (f"; {outside} lie outside every other curve's range." if outside else ".")]
    return lines


def _goal_line(name: str, entry: dict) -> list[str]:
    if name not in SPECS:
        return []
    psnr, ssim, density = SPECS[name].goal
    goal = [r for r in _rows(entry, "hybrid") if r["density"] <= density]
    met = [r for r in goal if _num(r["psnr_mean"]) >= psnr and (ssim is None or r["ssim_mean"] >= ssim)]
    text = f"PSNR >= {psnr:g} dB" + (f" and SSIM >= {ssim:g}" if ssim is not None else "") + \
        f" at density <= {density:g}"
    return ["", f"{name}: the hybrid's goal (issue 20), {text}: "
            + (f"met by {', '.join(_setting_text(r['setting']) for r in met)}." if met else
               f"not met: no hybrid setting reaches density {density:g}." if not goal else
               f"not met ({len(goal)} hybrid setting(s) at density <= {density:g}; best PSNR there "
               f"{max(_num(r['psnr_mean']) for r in goal):.2f} dB).")]


def _equal_density_section(name: str, entry: dict) -> list[str]:
    curves = {m: _rows(entry, m) for m in FIXED}
    if not _rows(entry, "profile"):
        return []
    ranges = {m: (f"{rows[0]['density']:.3f}-{rows[-1]['density']:.3f}" if rows else "not measured")
              for m, rows in curves.items()}
    lines = ["", f"## {name}: profile against the better of spatial and temporal, at equal density", "",
             "Each fixed pattern's PSNR curve is interpolated linearly at every profile point's density (no "
             f"extrapolation: spatial measured over density {ranges['spatial']}, temporal over {ranges['temporal']}).",
             "", "| profile setting | density | profile PSNR | spatial at it | temporal at it | difference | verdict |",
             "|---|---|---|---|---|---|---|"]
    wins = losses = outside = 0
    for r in _rows(entry, "profile"):
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


def _mix_section(name: str, entry: dict) -> list[str]:
    rows = _rows(entry, "profile")
    if not rows:
        return []
    lines = ["", f"## {name}: what profile's heads chose", "",
             "Shares of the head choices during the sparse steps (the planner's own choices; the warm-up layer left "
             "out), every case of a run counted.", "",
             "| profile setting | spatial | temporal | dense | density |", "|---|---|---|---|---|"]
    for r in rows:
        mix = r["profile"]["planner"] or {}
        lines.append(f"| {_setting_text(r['setting'])} | " + " | ".join(
            f"{mix.get(k, math.nan):.3f}" for k in PROFILE_LABELS) + f" | {r['density']:.3f} |")
    mix = entry.get("profile_mix")
    lines += ["", (f"`profile_mix` (fraction {MIX_SETTING['fraction']}, eps {MIX_SETTING['eps']}): "
                   + ", ".join(f"{k} {mix[k]:.3f}" for k in PROFILE_LABELS)) if mix else
              f"`profile_mix` is missing: the setting {_setting_text(MIX_SETTING)} did not run or failed."]
    return lines


def plot(results: dict, path: Path) -> None:
    """A column per model: PSNR (the Pareto front over every method marked) and SSIM against realised density."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    models = results["models"]
    fig = Figure(figsize=(6.5 * max(1, len(models)) + 2.5, 8), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, max(1, len(models)), squeeze=False, sharey="row")
    colour = {m: f"C{i}" for i, m in enumerate(SWEEPS)}
    for col, (name, entry) in enumerate(models.items()):
        ax_psnr, ax_ssim = axes[0, col], axes[1, col]
        for method in _methods(results):
            rows = _rows(entry, method)
            if not rows:
                continue
            style = dict(marker="o", color=colour[method], label=method)
            finite = [(r["density"], _num(r["psnr_mean"])) for r in rows if math.isfinite(_num(r["psnr_mean"]))]
            if finite:
                ax_psnr.plot(*zip(*finite), **style)
            ax_ssim.plot([r["density"] for r in rows], [r["ssim_mean"] for r in rows], **style)
        front = [(r["density"], _num(r["psnr_mean"])) for r in pareto_front(entry)
                 if math.isfinite(_num(r["psnr_mean"]))]
        if front:
            ax_psnr.plot(*zip(*front), color="black", linewidth=2.5, alpha=0.35, drawstyle="steps-post",
                         label="Pareto front", zorder=0)
            ax_psnr.plot(*zip(*front), marker="o", markersize=13, markerfacecolor="none", markeredgecolor="black",
                         linestyle="none", label="on the front")
        ax_psnr.axvline(1.0, color="black", linestyle="--", linewidth=1, label="dense (density 1: PSNR inf, SSIM 1)")
        ax_ssim.axvline(1.0, color="black", linestyle="--", linewidth=1)
        ax_ssim.plot([1.0], [1.0], marker="*", markersize=12, color="black", linestyle="none")
        meta = entry["meta"]
        grid = " x ".join(map(str, meta["grid"]))
        ax_psnr.set_title(f"{name}: grid {grid} = {meta['video_tokens']:,} video tokens, {meta['steps']} steps, "
                          f"{meta['dtype']}" + ("\n(STAND-IN: the short yardstick's weights)" if meta["standin"]
                                                 else ""), fontsize=10)
        for ax, label in ((ax_psnr, "PSNR against dense (dB, mean over frames)"),
                          (ax_ssim, "SSIM against dense (mean over frames)")):
            ax.set_xlabel("realised attention density (warm-up included)")
            ax.set_ylabel(label)
            ax.set_xlim(0, 1.05)
            ax.grid(alpha=0.3)
            ax.yaxis.set_tick_params(labelleft=True)
    meta = results["meta"]
    first = next(iter(models.values()), {"cases": []})
    fig.suptitle(f"Quality against density on the yardsticks ({len(first['cases'])} case(s): prompts x seed(s) "
                 f"{', '.join(map(str, meta['seeds']))}" + (", --quick" if meta.get("quick") else "")
                 + (", --tiny" if meta.get("tiny") else "") + ")")
    handles = {}
    for ax in axes[0]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(list(handles.values()), list(handles), loc="outside right upper")
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
