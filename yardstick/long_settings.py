"""The long yardstick's sampling settings, measured: which guidance, schedule and step count make it draw its scenes.

The long model's one-step prediction of x0 from noised truth is better than the small model's at every noise level
but the first: from pure noise (t = 999, zero terminal SNR) it predicts the per-channel mean of the scene, a flat
colour, where the small one already places some structure. Under a constant CFG of 6, that first flat prediction is
pushed six times past the unconditional one (saturated colour), and the steps after it see a strong flat signal
and keep it. This script generates the card's six sample prompts under each setting below, runs the same colour
and motion check as the card (`vidsparse.yardstick.evaluate.check_prompt`), and draws one samples picture per
setting:

    python yardstick/long_settings.py --device cuda --seeds 3 --out out/long_settings   # on the GPU, 3 minutes

It writes `settings.json` (per setting, prompt and seed (`--seeds`): the check's clauses, and the totals) and
`long_samples_<setting>.png` under `--out`. `--frames/--height/--width` and `--steps-scale` shrink it for a CPU
dry run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))  # make_card, beside this file

from make_card import SAMPLE_PROMPTS, _generate, truth_samples  # noqa: E402

from vidsparse.yardstick.evaluate import check_prompt  # noqa: E402

from vidsparse.yardstick import GENERATE_LONG, load_yardstick  # noqa: E402

# name -> (call arguments over GENERATE_LONG, the scheduler's snr_shift_scale). Each names its guidance_scale:
# GENERATE_LONG's own is the one these settings chose. `use_dynamic_cfg` is diffusers' CogVideoX schedule of the scale,
# `1 + g (1 - cos(pi ((N - t) / N) ** 5)) / 2` with t the timestep's value (999, 949, ...), not the step's index, so
# under this scheduler it gives each step a scale in [1, 1 + g] that jumps from step to step (1 + g at t = 999 for
# N = 20); it is measured as diffusers runs it.
SETTINGS = {
    "cfg6": ({"guidance_scale": 6.0}, 1.0),  # the small yardstick's, and the long one's first card's
    "cfg6-dynamic": ({"guidance_scale": 6.0, "use_dynamic_cfg": True}, 1.0),
    "cfg3": ({"guidance_scale": 3.0}, 1.0),
    "cfg1": ({"guidance_scale": 1.0}, 1.0),  # no guidance (one branch)
    "cfg6-dynamic-50": ({"guidance_scale": 6.0, "use_dynamic_cfg": True, "num_inference_steps": 50}, 1.0),
    "cfg6-dynamic-shift3": ({"guidance_scale": 6.0, "use_dynamic_cfg": True}, 3.0),
    "cfg2": ({"guidance_scale": 2.0}, 1.0),
    "cfg3-dynamic": ({"guidance_scale": 3.0, "use_dynamic_cfg": True}, 1.0),
    "cfg3-dynamic-30": ({"guidance_scale": 3.0, "use_dynamic_cfg": True, "num_inference_steps": 30}, 1.0),
    "cfg6-dynamic-30": ({"guidance_scale": 6.0, "use_dynamic_cfg": True, "num_inference_steps": 30}, 1.0),
    "cfg3-dynamic-50": ({"guidance_scale": 3.0, "use_dynamic_cfg": True, "num_inference_steps": 50}, 1.0),
    "cfg1-50": ({"guidance_scale": 1.0, "num_inference_steps": 50}, 1.0),
}


def main(argv=None) -> None:
    from diffusers import CogVideoXDDIMScheduler

    from vidsparse.app.runinfo import environment

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=Path("out/long_settings"))
    parser.add_argument("--only", action="append", choices=list(SETTINGS), help="settings to run (default: all)")
    parser.add_argument("--frames", type=int, help="a smaller size for a dry run (default 16 x 128 x 128)")
    parser.add_argument("--height", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--steps-scale", type=float, default=1.0, help="scale every step count (a dry run: 0.1)")
    parser.add_argument("--prompts", type=int, default=len(SAMPLE_PROMPTS))
    parser.add_argument("--seeds", type=int, default=1, help="seeds checked per prompt (the picture: seed 0)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    pipe = load_yardstick(long=True, device=args.device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    base_scheduler = pipe.scheduler.config
    size = {k: v for k, v in (("num_frames", args.frames), ("height", args.height), ("width", args.width)) if v}
    results = {"command": " ".join(["python yardstick/long_settings.py", *(sys.argv[1:] if argv is None else argv)]),
               "environment": environment([], args.device), "settings": {}}
    for name in args.only or SETTINGS:
        extra, shift = SETTINGS[name]
        pipe.scheduler = CogVideoXDDIMScheduler.from_config(base_scheduler, snr_shift_scale=shift)
        kwargs = {**GENERATE_LONG, **size, **extra}
        steps = max(2, round(kwargs.pop("num_inference_steps") * args.steps_scale))
        folder = args.out / name
        folder.mkdir(exist_ok=True)
        started = time.perf_counter()
        prompts = SAMPLE_PROMPTS[: args.prompts]
        checks = truth_samples(pipe, folder, kwargs, steps=steps, prompts=prompts)  # seed 0, and the picture
        for seed in range(1, args.seeds):
            checks += [{"prompt": p, "seed": seed, "clauses": check_prompt(_generate(pipe, p, seed, steps, kwargs), p)}
                       for p in prompts]
        (folder / "long_samples.png").rename(args.out / f"long_samples_{name}.png")
        folder.rmdir()
        results["settings"][name] = {  # what the pipeline was called with and its scheduler ran at
            "call": {key: kwargs.get(key, False) for key in ("guidance_scale", "use_dynamic_cfg")}
            | {"num_inference_steps": steps}, "snr_shift_scale": pipe.scheduler.config.snr_shift_scale,
            "seconds": round(time.perf_counter() - started, 1),
            "present": sum(all(c["present"] for c in s["clauses"]) for s in checks),
            "passed": sum(all(c["passed"] for c in s["clauses"]) for s in checks),
            "of": len(checks), "checks": checks,
        }
        r = results["settings"][name]
        print(f"{name:22s} present {r['present']}/{r['of']}  passed {r['passed']}/{r['of']}  ({r['seconds']} s)",
              flush=True)
        (args.out / "settings.json").write_text(json.dumps(results, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
