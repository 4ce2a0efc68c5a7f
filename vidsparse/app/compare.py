"""`vidsparse compare`: a quality/speed report of methods against dense attention on the same prompts and seeds.

Every method runs through `vidsparse.app.runs.run_method` on the same cases, dense first (the reference); the
report folder (`vidsparse.app.report.write_compare_report`) holds report.html, report.md, results.json and media.
Models, configs and overrides are those of `vidsparse generate` (`vidsparse.app.loading`).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict
from pathlib import Path

from .args import (
    VIDEO_SUFFIXES, CLIError, add_generation_args, check_flags, method_presets_help, parse_seeds, read_prompts,
    writable_folder,
)

logger = logging.getLogger(__name__)

__all__ = ["add_parser", "cmd_compare", "terminal_table"]


def cmd_compare(args, argv) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .configs import plan_method
    from .loading import generation_kwargs, load_pipeline
    from .report import MethodRun, write_compare_report
    from .runs import gpu_kernel_ran, run_method

    check_flags(args)
    out = Path(args.out)
    if out.suffix.lower() in (*VIDEO_SUFFIXES, ".html", ".md", ".json"):
        raise CLIError(f"--out {out}: compare writes a report folder (report.html, report.md, results.json, media); "
                       "give a folder name")
    seeds = parse_seeds(args.seeds)
    cases = [{"prompt": p, "seed": s} for p in read_prompts(args) for s in seeds]
    out = writable_folder(out)
    pipe, cfg, model = load_pipeline(args)
    kwargs = generation_kwargs(pipe, cfg, args)
    names = ["dense", *[m for m in (args.method or list(cfg.methods)) if m != "dense"]]
    steps = kwargs.get("num_inference_steps")
    plans = [plan_method(cfg, name, steps, args.overrides) for name in names]  # every name checked before running
    runs = []
    with logging_redirect_tqdm(loggers=[logging.getLogger("vidsparse")]):
        for plan in plans:
            result = run_method(pipe, plan, cases, kwargs)
            runs.append(MethodRun(
                name=plan.name, config=_shown_config(plan.config), videos=result.videos,
                seconds_total=result.seconds_total, seconds_per_step=result.seconds_per_step,
                density=result.report["density"], heads=result.report["transformers"][0]["heads"],
                fallbacks=result.report["fallbacks"], notes=plan.notes,
                gpu_kernel=plan.config.method == "dense" or gpu_kernel_ran(plan, result, pipe.device),
                step_samples=len(result.step_seconds),
            ))
            logger.info("%s: %.1f s, density %.3f", plan.name, result.seconds_total, result.report["density"])
    results = write_compare_report(out, cases, runs, _meta(argv, model, kwargs, pipe.device),
                                   fps=int(cfg.generate.get("fps", 8)))
    print(terminal_table(results))
    for run in runs:
        for note in run.notes:
            print(f"note: {run.name}: {note}")
    print(f"report: {out / 'report.html'} (and report.md, results.json)")
    return 0


def terminal_table(results: dict) -> str:
    """The summary as aligned plain text: one row per method."""
    header = ["method", "PSNR dB", "SSIM", "s/step", "speed vs dense", "density"]
    rows = []
    for m in results["methods"]:
        psnr = m["psnr_mean"]
        psnr = "inf" if psnr in (None, "inf") else f"{psnr:.2f}"
        rows.append([m["name"], psnr, f"{m['ssim_mean']:.3f}", f"{m['seconds_per_step']:.2f}",
                     m["speed"], f"{m['density']:.3f}"])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    left = {0, 4}

    def line(cells):
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), *(line(r) for r in rows)])


def _meta(argv, model: str, kwargs: dict, device) -> dict:
    from .runinfo import environment, invocation

    stamp = environment([*invocation(), *argv], device)
    return {"model": model, **stamp, "steps": kwargs.get("num_inference_steps"), "generate": kwargs}


def _shown_path(path: str) -> str:
    """A path for reports: relative to the vidsparse package's parent or to the working folder when inside them."""
    p = Path(path).resolve()
    for base in (Path(__file__).resolve().parents[2], Path.cwd().resolve()):
        if p.is_relative_to(base):
            return str(p.relative_to(base))
    return path


def _shown_config(config) -> dict:
    fields = asdict(config)
    if fields.get("patterns"):
        fields["patterns"] = _shown_path(fields["patterns"])
    return fields


def add_parser(sub, common) -> None:
    """The `compare` subcommand."""
    p = sub.add_parser(
        "compare", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="compare sparse methods with dense attention: quality, speed, density report",
        description=(
            "Generate the same prompts and seeds with dense attention and with each method, then write a\n"
            "report folder: report.md, a self-contained report.html (opens offline), results.json, PSNR and\n"
            "SSIM against dense per frame, time per step and speedup, the realised density per layer and\n"
            "head as a heat map with each head's pattern, and side-by-side videos (dense | method | diff)."
        ),
        epilog=(
            method_presets_help() + "\n\n"
            "examples:\n"
            "  vidsparse compare                                  # the yardstick, every preset\n"
            "  vidsparse compare --method spatial --seeds 0,1,2 --prompts-file prompts.txt"
        ),
    )
    add_generation_args(p)
    p.add_argument("--method", action="append", help="a method to compare (repeat; default: every preset but dense)")
    p.add_argument("--seeds", default="0", help="comma list of seeds; every prompt runs with each (default: %(default)s)")
    p.add_argument("--out", default="vidsparse-report", metavar="DIR",
                   help="report folder (default: %(default)s; `--out samples/compare` regenerates the committed "
                        "sample report)")
    p.set_defaults(func=cmd_compare)
