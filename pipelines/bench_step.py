"""Step benchmark as committed in BENCH_STEP.md: `vidsparse bench` (vidsparse/app/bench/) with this file's defaults.

Run on a CUDA GPU from the repository root, with vidsparse importable (`pip install -e .`); bf16, random weights
built on the GPU from the published configs, nothing is downloaded:

    python pipelines/bench_step.py                       # both models -> pipelines/BENCH_STEP.md + bench_step.json
    python pipelines/bench_step.py --models cogvideox-5b --steps-timed 5
    python pipelines/bench_step.py --quick               # HunyuanVideo at 544x960 instead of 720x1280
    python pipelines/bench_step.py --dry-run             # CPU: tiny models, the whole flow, into a temp folder

Defaults that differ from `vidsparse bench`: two models (cogvideox-5b first, so that a cut of the 420 s budget
falls on hunyuanvideo), results in this folder as BENCH_STEP.md and bench_step.json, and two methods: the spatial
window whose mask density is closest to --target-density (or --spatial-frames frames), and the spatial window
over every frame (density 1, through the Triton kernel). Every other flag is `vidsparse bench`'s.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from vidsparse.app import bench

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="pipelines/bench_step.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_arguments(parser)
    parser.add_argument("--target-density", type=float, default=0.15,
                        help="picks the spatial window's frames (default: %(default)s; ignored with --methods)")
    parser.add_argument("--spatial-frames", type=int, default=None,
                        help="the spatial window's frames, overriding --target-density")
    parser.set_defaults(models="cogvideox-5b,hunyuanvideo", methods=None, budget_s=420.0, out=None,
                        command_prefix=["python", "pipelines/bench_step.py"],
                        report_names=("BENCH_STEP.md", "bench_step.json"))
    args = parser.parse_args(argv)
    if args.methods is None:
        window = f"density={args.target_density}" if args.spatial_frames is None else f"frames={args.spatial_frames}"
        args.methods = f"spatial:{window},spatial:density=1"
    if args.out is None:  # a dry run must not overwrite the committed results
        args.out = Path(tempfile.mkdtemp(prefix="bench_step_dry_")) if args.dry_run else HERE
    log = logging.getLogger("vidsparse")
    handler, level = logging.StreamHandler(sys.stderr), log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return bench.run(args, argv)
    except bench.BenchError as exc:
        parser.error(str(exc))
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
