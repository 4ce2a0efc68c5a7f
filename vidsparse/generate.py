"""`vidsparse generate` and `vidsparse compare`: videos from a diffusers pipeline with a sparse method,
and a quality/speed report of methods against dense attention on the same prompts and seeds.

The model is a local diffusers folder or a built-in name (`vidsparse.builtin`; by default the trained
yardstick, `vidsparse.yardstick`); generation defaults and method presets come from the model's YAML
config (`vidsparse.configs`), which `--config` replaces and `key=value` arguments override
(`generate.num_inference_steps=10`, `methods.spatial.frames=2`).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_PROMPT", "add_parsers", "CLIError"]

# A prompt of the yardstick's grammar (vidsparse.yardstick.scenes), the default model's: two shapes, a textured
# background and a camera pan, so that both the spatial and the temporal structure of attention matter.
DEFAULT_PROMPT = (
    "a red circle moving right and a yellow square spinning over a navy striped background, camera panning up"
)


class CLIError(ValueError):
    """A usage error the command line reports in one line, exiting with status 2."""


# ---------------------------------------------------------------------------------------- loading
def _load(args) -> tuple[object, object, str]:
    """(pipeline, model config, model label) for --model / --config / overrides."""
    from .builtin import BUILTIN_MODELS, DEFAULT_BUILTIN, load_builtin
    from .configs import load_model_config

    args.model = args.model or DEFAULT_BUILTIN
    if args.model in BUILTIN_MODELS:
        pipe, _ = load_builtin(args.model)
        config_name = args.config or args.model
    elif Path(args.model).is_dir():
        from diffusers import DiffusionPipeline

        if not args.config:
            raise CLIError(
                f"--config is needed with a local model folder ({args.model}): name the model's YAML, e.g. "
                "--config cogvideox-5b, or give a path to one"
            )
        config_name = args.config
        cfg_for_dtype = load_model_config(config_name, args.overrides)
        dtype = getattr(torch, str(cfg_for_dtype.generate.get("dtype", "bfloat16")))
        pipe = DiffusionPipeline.from_pretrained(args.model, torch_dtype=dtype)
    else:
        raise CLIError(
            f"unknown model {args.model!r}: give a local diffusers folder or a built-in name "
            f"({', '.join(sorted(BUILTIN_MODELS))})"
        )
    try:
        cfg = load_model_config(config_name, args.overrides)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    from .configs import apply_scheduler_config

    apply_scheduler_config(pipe, cfg)  # e.g. the flow shift of HunyuanVideo and Wan
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = pipe.to(device)
    return pipe, cfg, args.model


def _method(cfg, name: str):
    from .configs import method_config

    try:
        return method_config(cfg, name)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc


def _prompts(args) -> list[str]:
    prompts = list(args.prompt or [])
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise CLIError(f"prompts file {path} does not exist")
        prompts += [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return prompts or [DEFAULT_PROMPT]


def _call_kwargs(pipe, cfg, args) -> dict:
    """The pipeline call's keyword arguments: the config's `generate` section, then the flags."""
    from .configs import call_kwargs

    kwargs = call_kwargs(cfg)
    for flag, key in (("steps", "num_inference_steps"), ("height", "height"), ("width", "width"), ("frames", "num_frames")):
        if getattr(args, flag, None) is not None:
            kwargs[key] = getattr(args, flag)
    factor = pipe.vae_scale_factor_spatial * _patch(pipe.transformer)
    for key in ("height", "width"):
        if key in kwargs and kwargs[key] % factor:
            raise CLIError(
                f"--{key} {kwargs[key]} must be divisible by {factor} (the VAE's {pipe.vae_scale_factor_spatial}x "
                f"downsampling times the transformer's patch size {_patch(pipe.transformer)})"
            )
    return kwargs


def _patch(transformer) -> int:
    patch = transformer.config.patch_size
    return patch[-1] if isinstance(patch, (tuple, list)) else patch


def _writable(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".vidsparse-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise CLIError(f"cannot write to the output folder {folder}: {exc.strerror or exc}") from exc
    return folder


# ---------------------------------------------------------------------------------------- running
def _generate(pipe, prompt: str, seed: int, kwargs: dict, desc: str) -> np.ndarray:
    """One video as uint8 [F, H, W, 3]."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    pipe.set_progress_bar_config(desc=desc, leave=False)
    with torch.inference_mode():
        frames = pipe(prompt=prompt, generator=generator, output_type="np", **kwargs).frames[0]
    return (np.clip(np.asarray(frames, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _run_method(pipe, cfg, method: str, cases: list[dict], kwargs: dict):
    """Generate every case with one method installed; return (videos, seconds, handle report)."""
    import vidsparse

    handle = vidsparse.apply(pipe, _method(cfg, method))
    try:
        videos, start = [], time.perf_counter()
        for i, case in enumerate(cases):
            videos.append(_generate(pipe, case["prompt"], case["seed"], kwargs, f"{method} {i + 1}/{len(cases)}"))
            if torch.cuda.is_available():
                torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        return videos, seconds, handle.report()
    finally:
        handle.remove()


def write_video(path: Path, frames: np.ndarray, fps: int) -> None:
    """An H.264 mp4 (yuv420p, playable everywhere) of uint8 [F, H, W, 3] frames; GIF for a .gif path."""
    import imageio.v2 as imageio

    if path.suffix == ".gif":
        imageio.mimwrite(path, list(frames), duration=1.0 / fps, loop=0)
        return
    imageio.mimwrite(path, list(frames), fps=fps, codec="libx264", macro_block_size=1,
                     ffmpeg_params=["-pix_fmt", "yuv420p"])


def _meta(args, argv, model: str, kwargs: dict) -> dict:
    import diffusers
    import triton

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    return {
        "model": model,
        "command": "vidsparse " + " ".join(shlex.quote(a) for a in argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "versions": {"vidsparse": _version(), "torch": torch.__version__, "triton": triton.__version__,
                     "diffusers": diffusers.__version__},
        "steps": kwargs.get("num_inference_steps"),
        "generate": kwargs,
    }


def _version() -> str:
    from . import __version__

    return __version__


def cmd_generate(args, argv) -> int:
    out = _writable(Path(args.out))
    pipe, cfg, model = _load(args)
    kwargs = _call_kwargs(pipe, cfg, args)
    fps = int(cfg.generate.get("fps", 8))
    cases = [{"prompt": p, "seed": args.seed} for p in _prompts(args)]
    videos, seconds, report = _run_method(pipe, cfg, args.method, cases, kwargs)
    for i, (case, video) in enumerate(zip(cases, videos)):
        stem = out / f"{args.method}_{i:02d}_seed{case['seed']}"
        write_video(stem.with_suffix(".mp4"), video, fps)
        if args.gif:
            write_video(stem.with_suffix(".gif"), video, fps)
        if args.save_frames:
            import cv2

            frame_dir = stem.parent / (stem.name + "_frames")
            frame_dir.mkdir(exist_ok=True)
            for f, frame in enumerate(video):
                cv2.imwrite(str(frame_dir / f"{f:04d}.png"), frame[..., ::-1])
        print(f"wrote {stem.with_suffix('.mp4')}  ({video.shape[0]} frames, {video.shape[2]}x{video.shape[1]})")
    print(f"method {args.method}: realised attention density {report['density']:.3f}, "
          f"{seconds:.1f} s for {len(cases)} video(s)")
    for reason in report["fallbacks"]:
        print(f"note: {reason}")
    return 0


def cmd_compare(args, argv) -> int:
    from .report import MethodRun, write_compare_report

    out = _writable(Path(args.out))
    pipe, cfg, model = _load(args)
    kwargs = _call_kwargs(pipe, cfg, args)
    methods = args.method or [m for m in cfg.methods if m != "dense"]
    for name in methods:
        _method(cfg, name)  # every name is checked before any generation starts
    seeds = [int(s) for s in args.seeds.split(",")]
    cases = [{"prompt": p, "seed": s} for p in _prompts(args) for s in seeds]
    steps = int(kwargs.get("num_inference_steps", 50)) * len(cases)
    runs = []
    for name in ["dense", *[m for m in methods if m != "dense"]]:
        videos, seconds, report = _run_method(pipe, cfg, name, cases, kwargs)
        heads = report["transformers"][0]["heads"]
        runs.append(MethodRun(
            name=name, config=asdict(_method(cfg, name)), videos=videos, seconds_total=seconds,
            seconds_per_step=seconds / steps, density=report["density"], heads=heads, fallbacks=report["fallbacks"],
        ))
        logger.info("%s: %.1f s, density %.3f", name, seconds, report["density"])
    results = write_compare_report(out, cases, runs, _meta(args, argv, model, kwargs),
                                   fps=int(cfg.generate.get("fps", 8)))
    print(f"{'method':12s} {'PSNR dB':>8s} {'SSIM':>6s} {'s/step':>7s} {'speedup':>8s} {'density':>8s}")
    for m in results["methods"]:
        psnr = m["psnr_mean"]
        psnr = "inf" if psnr in (None, "inf") or (isinstance(psnr, float) and np.isinf(psnr)) else f"{psnr:.2f}"
        print(f"{m['name']:12s} {psnr:>8s} {m['ssim_mean']:6.3f} {m['seconds_per_step']:7.2f} "
              f"{m['speedup_vs_dense']:7.2f}x {m['density']:8.3f}")
    print(f"report: {out / 'report.html'} (and report.md, results.json)")
    return 0


# ---------------------------------------------------------------------------------------- parsers
def _common_generation_args(p: argparse.ArgumentParser) -> None:
    # The default is resolved in _load (vidsparse.builtin.DEFAULT_BUILTIN): importing vidsparse.builtin here would
    # import diffusers and transformers, and make every `vidsparse --help` seconds slower.
    p.add_argument("--model", default=None,
                   help="a local diffusers pipeline folder, or a built-in name (default: yardstick, a small trained "
                        "model of moving shapes; the tiny-* built-ins have random weights; all run anywhere)")
    p.add_argument("--config", default=None, metavar="NAME|YAML",
                   help="model config: a shipped name (cogvideox-5b, hunyuanvideo, ...) or a YAML path; "
                        "default: the built-in model's own")
    p.add_argument("--prompt", action="append",
                   help="a prompt (repeat for several; default: a scene of the yardstick's grammar, "
                        f"{DEFAULT_PROMPT!r})")
    p.add_argument("--prompts-file", metavar="FILE", help="one prompt per line; '#' starts a comment line")
    p.add_argument("--steps", type=int, help="denoising steps (default: the config's)")
    p.add_argument("--height", type=int, help="video height in pixels, divisible by the VAE factor x patch size")
    p.add_argument("--width", type=int, help="video width in pixels, divisible by the VAE factor x patch size")
    p.add_argument("--frames", type=int, help="video frames (default: the config's)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides in omegaconf dot-list form, e.g. generate.guidance_scale=4 "
                        "methods.spatial.frames=2")


def add_parsers(sub, common) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "generate", parents=[common], formatter_class=fmt,
        help="generate videos with a sparse attention method",
        description=(
            "Generate one video per prompt with vidsparse installed on the pipeline, write each as an mp4\n"
            "(optionally a GIF and PNG frames), and print the realised attention density and the time.\n"
            "Methods are the config's presets: dense, spatial (own frame +-N), temporal (own position in\n"
            "every frame); text tokens always stay dense."
        ),
        epilog=(
            "examples:\n"
            "  vidsparse generate --prompt 'a red circle bouncing over a gray plain background' --method spatial\n"
            "  vidsparse generate --model tiny-wan --prompt 'a red ball rolling' --method temporal\n"
            "  vidsparse generate --model /models/CogVideoX-5b --config cogvideox-5b --method spatial \\\n"
            "      --prompt 'a cat surfing' --seed 3 methods.spatial.warmup_steps=15"
        ),
    )
    _common_generation_args(p)
    p.add_argument("--method", default="spatial", help="a method preset of the config (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default: %(default)s)")
    p.add_argument("--out", default="samples/generate", metavar="DIR", help="output folder (default: %(default)s)")
    p.add_argument("--gif", action="store_true", help="also write a GIF of each video")
    p.add_argument("--save-frames", action="store_true", help="also write each frame as a PNG")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser(
        "compare", parents=[common], formatter_class=fmt,
        help="compare sparse methods with dense attention: quality, speed, density report",
        description=(
            "Generate the same prompts and seeds with dense attention and with each method, then write a\n"
            "report folder: report.md, a self-contained report.html (opens offline), results.json, PSNR and\n"
            "SSIM against dense per frame, time per step and speedup, the realised density per layer and\n"
            "head as a heat map with each head's pattern, and side-by-side videos (dense | method | diff)."
        ),
        epilog=(
            "examples:\n"
            "  vidsparse compare                                  # the yardstick, every preset\n"
            "  vidsparse compare --method spatial --seeds 0,1,2 --prompts-file prompts.txt"
        ),
    )
    _common_generation_args(p)
    p.add_argument("--method", action="append", help="a method to compare (repeat; default: every preset but dense)")
    p.add_argument("--seeds", default="0", help="comma list of seeds; every prompt runs with each (default: %(default)s)")
    p.add_argument("--out", default="samples/compare", metavar="DIR", help="report folder (default: %(default)s)")
    p.set_defaults(func=cmd_compare)
