"""`vidsparse generate`: videos from a diffusers pipeline with a sparse method, one per prompt.

The model is a local diffusers folder or a built-in name (`vidsparse.app.models`; by default the trained
yardstick, `vidsparse.yardstick`); generation defaults and method presets come from the model's YAML
config (`vidsparse.app.configs`), which `--config` replaces and `key=value` arguments override
(`generate.num_inference_steps=10`, `methods.spatial.frames=2`). The pieces the commands share live beside it:
the flags (`vidsparse.app.args`), loading (`vidsparse.app.loading`), a method's plan for a run's steps
(`vidsparse.app.configs.plan_method`) and its timed generations (`vidsparse.app.runs`); `vidsparse compare` is
`vidsparse.app.compare`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from .args import (
    DEFAULT_PROMPT, VIDEO_SUFFIXES, CLIError, add_generation_args, check_flags, method_presets_help, read_prompts,
    writable_folder,
)
from .configs import MethodPlan, plan_method
from .loading import generation_kwargs, load_pipeline
from .runs import MethodResult, gpu_kernel_ran, run_method

logger = logging.getLogger(__name__)

# DEFAULT_PROMPT, CLIError, MethodPlan, MethodResult, plan_method and run_method lived here in 0.1; they stay
# importable from here (their homes: vidsparse.app.args, .configs and .runs).
__all__ = [
    "DEFAULT_PROMPT", "CLIError", "MethodPlan", "MethodResult", "add_parser", "add_parsers", "cmd_generate",
    "plan_method", "run_method",
]


def _outputs(out: Path, cases: list[dict], method: str) -> list[Path]:
    """The video path of each case: `--out` itself when it ends in .mp4 or .gif (one video only), else
    `OUT/<method>_<case>_seed<seed>.mp4`. The folder is created and checked for writing."""
    if out.suffix.lower() in VIDEO_SUFFIXES:
        if len(cases) != 1:
            raise CLIError(f"--out {out} names one video file, but {len(cases)} videos are made (one per prompt): "
                           "give a folder instead")
        writable_folder(out.parent)
        return [out]
    writable_folder(out)
    return [out / f"{method}_{i:02d}_seed{case['seed']}.mp4" for i, case in enumerate(cases)]


def cmd_generate(args, argv) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    check_flags(args)
    prompts = read_prompts(args)
    cases = [{"prompt": p, "seed": args.seed} for p in prompts]
    paths = _outputs(Path(args.out), cases, args.method)
    # Data parallel: launched by `torchrun` or `accelerate launch`, each process takes its share of the prompts,
    # on its own GPU (accelerate's PartialState; a plain run is one process with every prompt).
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # cpu=True: torchrun on CPUs is multi-process too
    cp = 1 if args.cp is None else args.cp
    if cp < 1:
        raise CLIError(f"--cp {cp}: give the number of processes that split each attention's heads, at least 1")
    if cp > 1 and state.num_processes != cp:
        raise CLIError(f"--cp {cp} needs {cp} processes, one a GPU; this run has {state.num_processes}: launch with "
                       f"`torchrun --nproc-per-node {cp} -m vidsparse generate ... --cp {cp}`")
    if state.num_processes > 1:
        args.device = args.device or str(state.device)
        if cp == 1:  # data parallel: each process its share of the prompts
            with state.split_between_processes(list(zip(cases, paths))) as mine:
                cases, paths = [c for c, _ in mine], [p for _, p in mine]
            if not cases:
                return 0
    pipe, cfg, model = load_pipeline(args)
    kwargs = generation_kwargs(pipe, cfg, args)
    plan = plan_method(cfg, args.method, kwargs.get("num_inference_steps"), args.overrides)
    if cp > 1:  # context parallel: every process every prompt, each rank heads/cp of every attention
        result = _run_context_parallel(pipe, plan, cases, kwargs, cp)
        if not state.is_main_process:
            return 0
        return _write_results(args, cfg, plan, pipe, cases, paths, result)
    with logging_redirect_tqdm(loggers=[logging.getLogger("vidsparse")]):
        result = run_method(pipe, plan, cases, kwargs)
    return _write_results(args, cfg, plan, pipe, cases, paths, result)


def _run_context_parallel(pipe, plan, cases, kwargs, cp: int) -> MethodResult:
    """`run_method` with every transformer of the pipeline under Ulysses context parallelism of `cp` ranks."""
    from ..pipelines import enable_context_parallel

    def prepare(pipe):
        for name in ("transformer", "transformer_2"):
            module = getattr(pipe, name, None)
            if module is not None:
                try:
                    enable_context_parallel(module, cp)
                except ValueError as exc:
                    raise CLIError(str(exc)) from None

    return run_method(pipe, plan, cases, kwargs, prepare)


def _write_results(args, cfg, plan, pipe, cases, paths, result) -> int:
    from .media import write_video

    fps = int(cfg.generate.get("fps", 8))
    for case, video, path in zip(cases, result.videos, paths):
        written = [path]
        write_video(path, video, fps)
        if args.gif and path.suffix.lower() != ".gif":
            written.append(path.with_suffix(".gif"))
            write_video(written[-1], video, fps)
        if args.save_frames:
            import imageio.v3 as iio

            frame_dir = path.parent / (path.stem + "_frames")
            frame_dir.mkdir(exist_ok=True)
            for f, frame in enumerate(video):
                iio.imwrite(frame_dir / f"{f:04d}.png", frame)
            written.append(frame_dir)
        for item in written:
            print(f"wrote {item}  ({video.shape[0]} frames, {video.shape[2]}x{video.shape[1]})")
    speed = (f"{result.seconds_per_step:.2f} s per step (median)" if gpu_kernel_ran(plan, result, pipe.device)
             or plan.config.method == "dense" else "speed: fallback (no GPU kernel), times measure nothing")
    print(f"method {args.method}: realised attention density {result.report['density']:.3f}, {speed}, "
          f"{result.seconds_total:.1f} s for {len(cases)} video(s)")
    for note in plan.notes:
        print(f"note: {note}")
    for reason in result.report["fallbacks"]:
        print(f"note: {reason}")
    return 0


def add_parser(sub, common) -> None:
    """The `generate` subcommand."""
    p = sub.add_parser(
        "generate", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="generate videos with a sparse attention method",
        description=(
            "Generate one video per prompt with vidsparse installed on the pipeline, write each as an mp4\n"
            "(optionally a GIF and PNG frames), and print the realised attention density and the time.\n"
            "Methods are the config's presets (listed below): dense, spatial (own frame +-N), temporal (own\n"
            "position in every frame), static (each head's searched pattern); text tokens always stay dense.\n"
            "A preset's step schedule (its warm-up, refresh steps and periods) keeps its share of the steps when\n"
            "--steps differs from the config's; a sparse method whose warm-up covers every step runs dense, and\n"
            "says so."
        ),
        epilog=(
            method_presets_help() + "\n\n"
            "examples:\n"
            "  vidsparse generate --prompt 'a red circle bouncing over a gray plain background'   # hybrid\n"
            "  vidsparse generate --model tiny-wan --prompt 'a red ball rolling' --method temporal\n"
            "  vidsparse generate --model /models/CogVideoX-5b --config cogvideox-5b --method spatial \\\n"
            "      --prompt 'a cat surfing' --seed 3 methods.spatial.warmup_steps=15"
        ),
    )
    add_generation_args(p)
    p.add_argument("--method", default="hybrid",
                   help="a method preset of the config (default: %(default)s, on the yardstick's Pareto front at every "
                        "error budget measured: yardstick/SWEEP.md)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default: %(default)s)")
    p.add_argument("--cp", type=int, default=None, metavar="N",
                   help="context parallelism: each attention's heads split over N processes (Ulysses), launched by "
                        "`torchrun --nproc-per-node N -m vidsparse generate ... --cp N`; without it, several "
                        "processes split the prompts")
    p.add_argument("--out", default="vidsparse-videos", metavar="DIR|FILE",
                   help="output folder (default: %(default)s), or with one prompt the video file itself (a path "
                        "ending in .mp4 or .gif)")
    p.add_argument("--gif", action="store_true", help="also write a GIF of each video (listed in the 'wrote' lines)")
    p.add_argument("--save-frames", action="store_true", help="also write each frame as a PNG")
    p.set_defaults(func=cmd_generate)


def add_parsers(sub, common) -> None:
    """The `generate` and `compare` subcommands, as 0.1's `add_parsers` added them (the CLI calls each module's
    `add_parser`)."""
    from . import compare

    add_parser(sub, common)
    compare.add_parser(sub, common)
