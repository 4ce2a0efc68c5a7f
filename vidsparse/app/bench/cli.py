"""`vidsparse bench`'s arguments: parsed here, then handed to the library (`vidsparse.app.bench.runner`)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from .catalogue import MODELS, PIXEL_MULTIPLE
from .methods import BenchError, parse_methods
from .report import write_results
from .runner import Options, bench_model, passed

__all__ = ["add_arguments", "add_parser", "run"]

DRY_RUN_NAMES = ("bench-dry-run.md", "bench-dry-run.json")
NAMES = ("bench.md", "bench.json")


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
    parser.add_argument("--skip-fast-sdpa", action="store_true",
                        help="leave out the 'stock, fast SDPA' variant (two forwards fewer per model)")
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
        for name in models:
            multiple = MODELS[name].pixel_multiple
            if value is not None and value % multiple:
                raise BenchError(f"--{flag} {value}: {name} needs a multiple of {multiple} (its VAE's compression "
                                 "times its patch)")
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
        deadline=None if args.budget_s is None else start + args.budget_s, fast_sdpa=not args.skip_fast_sdpa,
    )


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Entry point of `vidsparse bench` (`args.func(args, argv)`); returns the exit status: 0, or 1 when removal
    did not restore the stock model or a vidsparse variant's output is not finite."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from ..runinfo import environment, invocation, use_interpreter_if_needed

    opts = _options(args)
    if opts.device.type == "cpu":
        use_interpreter_if_needed(opts.device)  # before triton is first imported (diffusers imports it)
    prefix = args.command_prefix or invocation()
    names = args.report_names or (DRY_RUN_NAMES if args.dry_run else NAMES)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = environment([*prefix, *argv], opts.device) | {"dry_run": opts.tiny}
    rows, lines = [], []
    total = len(opts.models) * (2 + opts.fast_sdpa + len(opts.methods))
    with logging_redirect_tqdm(loggers=[logging.getLogger("vidsparse")]), \
            tqdm(total=total, desc="bench", unit="variant", file=sys.stderr, disable=None) as progress:
        for name in opts.models:
            rows.append(bench_model(name, opts, progress))
            lines = write_results(env, rows, out_dir, names)  # a run cut short still leaves what it measured
    print("\n".join(lines))
    print(f"\nwrote {out_dir / names[0]} and {out_dir / names[1]}")
    return 0 if passed(rows) else 1
