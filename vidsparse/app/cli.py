"""The `vidsparse` command line: it parses arguments and calls the library.

    vidsparse generate        generate videos with a sparse attention method            (vidsparse.app.generate)
    vidsparse compare         compare methods with dense attention: quality, speed, density report (vidsparse.app.compare,
                              vidsparse.app.report)
    vidsparse search          the offline per-head pattern search                        (vidsparse.search)
    vidsparse bench           time full-size transformer steps on the GPU, stock vs vidsparse (vidsparse.app.bench)
    vidsparse selfcheck       check the Triton kernel against the float64 reference      (vidsparse.app.selfcheck)
    vidsparse --version

Expected errors (a bad flag value, an unknown model or method, a missing file) print one line,
`vidsparse COMMAND: error: ...`, and exit with status 2; `-v` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from .args import CLIError
from .runinfo import environment, invocation, use_interpreter_if_needed

logger = logging.getLogger(__name__)

__all__ = ["build_parser", "main"]


# ---------------------------------------------------------------------------------------------- selfcheck
def cmd_selfcheck(args: argparse.Namespace, argv: list[str]) -> int:
    from . import selfcheck

    if args.device == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device cuda asked for, but torch {torch.__version__} sees no CUDA device; use --device cpu")
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    use_interpreter_if_needed(device)  # before triton is first imported (environment() imports it)
    stamp = environment([*invocation(), *argv], device) | {"seed": args.seed}
    start = time.perf_counter()
    results = selfcheck.run_suite(device, args.seed)
    elapsed = time.perf_counter() - start
    md_path, json_path = selfcheck.write_report(Path(args.out), f"selfcheck-{device.type}", stamp, results)
    passed = sum(r.ok for r in results)
    print(selfcheck.format_table(results, markdown=False))
    for r in results:
        if r.error:
            print(f"  {r.case.name}: {r.error}")
    print(f"\n{passed} of {len(results)} cases passed on {stamp['device']} in {elapsed:.1f} s")
    print(f"wrote {md_path} and {json_path}")
    return 0 if passed == len(results) else 1


# ---------------------------------------------------------------------------------------------- parser
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vidsparse")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    from . import selfcheck  # its constants for the help text; it imports torch only

    parser = argparse.ArgumentParser(
        prog="vidsparse",
        description="Sparse attention for video diffusion transformers in diffusers, run by Triton kernels.",
        epilog="Run 'vidsparse COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"vidsparse {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)  # options every command takes
    common.add_argument("-v", "--verbose", action="store_true", help="log debug messages too")

    p = sub.add_parser(
        "selfcheck",
        parents=[common],
        help="check the block-sparse Triton kernel against a float64 reference (CPU or GPU)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run vidsparse.block_sparse_attention on a handful of hard cases and compare every output with\n"
            "vidsparse.block_sparse_attention_reference computed in float64 on the same inputs.\n\n"
            "The cases: ragged S, batch 2, random per-head masks at several densities (shared over the\n"
            "batch or one per element), a skipped head, a text range at the start (CogVideoX) and at the\n"
            "end with key padding (HunyuanVideo), q/k/v as strided views of a fused projection, head dims\n"
            "64 and 128, and the kernel's log-sum-exp.\n\n"
            f"A case passes when the kernel's relative error is at most {selfcheck.ERROR_MULTIPLE:g}x the error of eager\n"
            "PyTorch in the input dtype (dense masked softmax, also measured against float64), with a small\n"
            "floor per dtype, and its outputs are finite.\n\n"
            "Most cases are bfloat16, one float16 and one float32. On a CUDA device the shapes are\n"
            "real-sized (S=4173 and 4096). Without one, the kernel runs in Triton's interpreter on small\n"
            "shapes (S=217): vidsparse switches the interpreter on itself, unless TRITON_INTERPRET is\n"
            "already set in the environment."
        ),
        epilog=(
            "Writes DIR/selfcheck-cpu.{md,json} or DIR/selfcheck-cuda.{md,json}, stamped with the date,\n"
            "device, versions and command. Exits 1 if any case fails.\n\n"
            "examples:\n"
            "  vidsparse selfcheck                      # CPU: about 10-30 s\n"
            "  vidsparse selfcheck --out /tmp/check"
        ),
    )
    p.add_argument(
        "--out", default="vidsparse-selfcheck", metavar="DIR",
        help="folder for the markdown and JSON reports (created if missing; default: %(default)s)",
    )
    p.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto",
        help="where to run: auto takes CUDA when torch sees it, else the CPU interpreter (default: %(default)s)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the first case's inputs and mask (default: %(default)s)",
    )
    p.set_defaults(func=cmd_selfcheck)

    from .bench.cli import add_parser as add_bench
    from .compare import add_parser as add_compare
    from .generate import add_parser as add_generate
    from .search_cli import add_parser as add_search

    add_generate(sub, common)
    add_compare(sub, common)
    add_search(sub, common)
    add_bench(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `vidsparse` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    # Configure vidsparse's own loggers only, and only for this call: other libraries keep their
    # defaults, and a second main() in one process (tests) does not log twice.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    package_logger = logging.getLogger("vidsparse")
    old_level = package_logger.level
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return args.func(args, argv)
    except (ValueError, FileNotFoundError) as exc:
        # Expected errors: usage (CLIError, BenchError), invalid configs (ModelConfigError), files that are not
        # there. One line each; -v shows where it came from.
        if args.verbose:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"vidsparse {args.command}: error: {message}", file=sys.stderr)
        return 2
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(old_level)


if __name__ == "__main__":
    raise SystemExit(main())
