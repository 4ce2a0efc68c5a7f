"""CPU fallback speed on the yardstick: each method's transformer steps against a dense step, in one process.

The main job (`vidsparse compare` on the yardstick) runs every preset on the CPU through the PyTorch fallbacks. This
script runs the presets as that command plans them (`plan_method`: the config's schedule, warm-up included) on one
prompt and seed, times every transformer forward (one step: both CFG branches in one batch-2 call), and labels each
step with what the method did in it:

- `warm-up`: the runtime ran dense before the method starts;
- `refresh`: some layer computed full attention and cached its delta (delta, hybrid);
- `choose`: the hybrid measured its candidates;
- `sparse`: everything else (profile and dynamic choose at each of these steps with their presets).

Per method it reports the median step of each kind, the slowest step, and the whole generation (the sum of its
steps), each divided by the median dense step of the short dense generations run just before and just after it
(`--dense-steps` each), so that a load change on a shared machine between methods does not skew the ratios; the
spread of those dense medians is reported too (`dense_spread`). Times on a busy machine are noisy: compare ratios,
not seconds.

    python pipelines/cpu_fallback_speed.py                      # every preset, 20 steps; writes the JSON beside it
    python pipelines/cpu_fallback_speed.py --method delta --method hybrid --steps 8 --out /tmp/speed.json

Run it without TRITON_INTERPRET, as a user runs the CPU path.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

PROMPT = "a red circle moving right and a yellow square spinning over a navy striped background"


def timed_generation(pipe, plan, kwargs: dict) -> dict:
    """One generation with `plan` installed (None: stock dense): per-step seconds and labels, and the report."""
    import vidsparse

    handle = None if plan is None else vidsparse.apply(pipe, plan.config)
    runtime = None if handle is None else handle.runtimes[0]
    seconds, labels, starts = [], [], []

    def before(module, args, kwargs_):
        starts.append((time.perf_counter(), getattr(runtime.planner, "choices", 0) if runtime else 0))

    def after(module, args, kwargs_, output):
        start, choices = starts.pop()
        seconds.append(time.perf_counter() - start)
        step = len(seconds) - 1
        if runtime is None:
            labels.append("dense")
        elif step < runtime.config.for_steps(kwargs["num_inference_steps"]).warmup_steps:
            labels.append("warm-up")
        elif step in runtime.refreshed:
            labels.append("refresh")
        elif getattr(runtime.planner, "choices", 0) > choices:
            labels.append("choose")
        else:
            labels.append("sparse")

    hooks = [pipe.transformer.register_forward_pre_hook(before, with_kwargs=True),
             pipe.transformer.register_forward_hook(after, with_kwargs=True)]
    try:
        with torch.inference_mode():
            pipe(prompt=PROMPT, generator=torch.Generator().manual_seed(0), output_type="latent", **kwargs)
        report = handle.report() if handle is not None else {"density": 1.0, "fallbacks": []}
    finally:
        for h in hooks:
            h.remove()
        if handle is not None:
            handle.remove()
    return {"seconds": seconds, "labels": labels, "density": report["density"], "fallbacks": report["fallbacks"]}


def summary(run: dict, dense_step: float) -> dict:
    kinds = {}
    for label in dict.fromkeys(run["labels"]):
        times = [t for t, lab in zip(run["seconds"], run["labels"]) if lab == label]
        kinds[label] = {"steps": len(times), "median_ratio": round(statistics.median(times) / dense_step, 3)}
    method_steps = [t for t, lab in zip(run["seconds"], run["labels"]) if lab != "warm-up"]
    return {
        "kinds": kinds,
        "slowest_ratio": round(max(method_steps or run["seconds"]) / dense_step, 3),
        "generation_ratio": round(sum(run["seconds"]) / (dense_step * len(run["seconds"])), 3),
        "density": round(run["density"], 3),
        "dense_step_seconds": round(dense_step, 4),
        "seconds": [round(t, 4) for t in run["seconds"]],
        "labels": run["labels"],
    }


def main(argv=None) -> None:
    from vidsparse.app.configs import call_kwargs, load_model_config, plan_method
    from vidsparse.app.models import load_builtin
    from vidsparse.app.runinfo import environment

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", action="append", help="a preset to time (repeat; default: every one)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the config's, 20)")
    parser.add_argument("--dense-steps", type=int, default=6, help="steps of each short dense run (default: 6)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's; 1 measures steadier on a machine shared with others)")
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".json")), help="the JSON written")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = load_model_config("yardstick")
    pipe, _ = load_builtin("yardstick")
    pipe.set_progress_bar_config(disable=True)
    kwargs = call_kwargs(cfg)
    if args.steps:
        kwargs["num_inference_steps"] = args.steps
    names = [m for m in (args.method or list(cfg.methods)) if m != "dense"]
    plans = {name: plan_method(cfg, name, kwargs["num_inference_steps"]) for name in names}

    short = {**kwargs, "num_inference_steps": args.dense_steps}
    timed_generation(pipe, None, short)  # a first call pays for one-time set-up (allocator, thread pools)
    dense = [statistics.median(timed_generation(pipe, None, short)["seconds"])]
    methods = {}
    for name, plan in plans.items():
        run = timed_generation(pipe, plan, kwargs)
        dense.append(statistics.median(timed_generation(pipe, None, short)["seconds"]))
        methods[name] = summary(run, statistics.mean(dense[-2:]))  # the dense steps on either side of it
    dense_step = statistics.median(dense)

    results = {
        "command": " ".join(["python pipelines/cpu_fallback_speed.py", *(sys.argv[1:] if argv is None else argv)]),
        "environment": environment([], "cpu"),
        "threads": torch.get_num_threads(),
        "steps": kwargs["num_inference_steps"],
        "dense_step_seconds": round(dense_step, 4),
        "dense_spread": round(max(dense) / min(dense), 3),
        "methods": methods,
    }
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"dense step {dense_step * 1000:.0f} ms (slowest / fastest dense run {max(dense) / min(dense):.2f}); "
          "ratios to the dense runs beside each method:")
    for name, m in results["methods"].items():
        kinds = ", ".join(f"{k} {v['median_ratio']:.2f}x ({v['steps']})" for k, v in m["kinds"].items())
        print(f"{name:14s} generation {m['generation_ratio']:.2f}x  slowest {m['slowest_ratio']:.2f}x  {kinds}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
