"""The pipeline a command runs: a built-in model or a local diffusers folder, its model config with the command
line's overrides, and the pipeline call's keyword arguments (the config's `generate` section, then the flags).

The model is a local diffusers folder or a built-in name (`vidsparse.app.models`; by default the trained
yardstick, `vidsparse.yardstick`); generation defaults come from the model's YAML config (`vidsparse.app.configs`),
which `--config` replaces and `key=value` arguments override (`generate.num_inference_steps=10`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .args import CLIError, check_flags

__all__ = ["generation_kwargs", "load_pipeline"]


def load_pipeline(args) -> tuple[object, object, str]:
    """(pipeline, model config, model label) for --model / --config / overrides, on --device."""
    from .configs import apply_scheduler_config
    from .models import BUILTIN_MODELS, DEFAULT_BUILTIN, load_builtin

    check_flags(args)
    args.model = args.model or DEFAULT_BUILTIN
    if args.model in BUILTIN_MODELS:
        config_name = args.config or args.model
        cfg = _config(config_name, args.overrides)
        pipe, _ = load_builtin(args.model)
    elif Path(args.model).is_dir():
        if not args.config:
            raise CLIError(
                f"--config is needed with a local model folder ({args.model}): name the model's YAML, e.g. "
                "--config cogvideox-5b, or give a path to one"
            )
        cfg = _config(args.config, args.overrides)
        pipe = _from_pretrained(Path(args.model), getattr(torch, str(cfg.generate.get("dtype", "bfloat16"))))
    else:
        raise CLIError(
            f"unknown model {args.model!r}: give a local diffusers folder or a built-in name "
            f"({', '.join(sorted(BUILTIN_MODELS))})"
        )
    try:
        apply_scheduler_config(pipe, cfg)  # e.g. the flow shift of HunyuanVideo and Wan
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = pipe.to(device)
    return pipe, cfg, args.model


def _config(name: str, overrides):
    from .configs import load_model_config

    try:
        return load_model_config(name, overrides)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc


def _from_pretrained(folder: Path, dtype: torch.dtype):
    """A local diffusers pipeline folder, or a one-line error that says what the folder lacks."""
    from diffusers import DiffusionPipeline

    if not (folder / "model_index.json").is_file():
        raise CLIError(
            f"--model {folder}: not a diffusers pipeline folder (it has no model_index.json); give the folder "
            "that `save_pretrained` wrote or a Hugging Face snapshot, e.g. a local copy of THUDM/CogVideoX-5b"
        )
    try:
        return DiffusionPipeline.from_pretrained(folder, dtype=dtype)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = " ".join(str(exc).split())[:400]
        raise CLIError(f"--model {folder}: diffusers cannot load this folder: {reason}") from exc


def generation_kwargs(pipe, cfg, args) -> dict:
    """The pipeline call's keyword arguments: the config's `generate` section (`configs.call_kwargs`), then the
    flags; a CLIError for a height or width the VAE and the transformer's patches cannot divide."""
    from .configs import call_kwargs

    check_flags(args)
    kwargs = call_kwargs(cfg)
    for flag, key in (("steps", "num_inference_steps"), ("height", "height"), ("width", "width"), ("frames", "num_frames")):
        if getattr(args, flag, None) is not None:
            kwargs[key] = getattr(args, flag)
    vae = _vae_spatial(pipe)
    factor = vae * _patch(pipe.transformer)
    for key in ("height", "width"):
        if key in kwargs and kwargs[key] % factor:
            raise CLIError(
                f"--{key} {kwargs[key]} must be divisible by {factor} (the VAE's {vae}x "
                f"downsampling times the transformer's patch size {_patch(pipe.transformer)})"
            )
    _check_required(type(pipe), kwargs)
    _check_prompt_cleaner(type(pipe))
    return kwargs


def _vae_spatial(pipe) -> int:
    """The VAE's spatial compression, by the name the pipeline gives it (LTX and Mochi name it otherwise)."""
    for name in ("vae_scale_factor_spatial", "vae_spatial_compression_ratio", "vae_spatial_scale_factor"):
        if getattr(pipe, name, None):
            return int(getattr(pipe, name))
    raise CLIError(f"{type(pipe).__name__}: vidsparse does not know where this pipeline keeps its VAE's compression")


def _check_required(pipeline_class, kwargs: dict) -> None:
    """A CLIError naming the call arguments the pipeline requires that `generate` does not pass (an image-to-video
    pipeline's `image`, Wan-Animate's pose and face videos): those pipelines run through the library."""
    import inspect

    parameters = inspect.signature(pipeline_class.__call__).parameters
    missing = [name for name, p in parameters.items() if name not in ("self", "prompt") and name not in kwargs
               and p.default is inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD]
    if missing:
        raise CLIError(
            f"{pipeline_class.__name__} needs {', '.join(missing)}, which `vidsparse generate` does not pass (it "
            "passes a prompt and the config's generate section): call the pipeline yourself with vidsparse.apply"
        )


def _check_prompt_cleaner(pipeline_class) -> None:
    """A CLIError when the pipeline cleans its prompts with ftfy and ftfy is not installed: diffusers imports it only
    where it is available, and a pipeline whose `basic_clean` calls it without that guard (Wan-VACE, SkyReels-V2)
    would otherwise stop on a NameError."""
    import inspect
    import sys

    module = sys.modules.get(pipeline_class.__module__)
    clean = getattr(module, "basic_clean", None)
    if clean is None or "ftfy" in vars(module):
        return
    source = inspect.getsource(clean)
    if "ftfy." in source and "is_ftfy_available" not in source:
        raise CLIError(f"{pipeline_class.__name__} cleans its prompts with ftfy, which is not installed: pip install ftfy")


def _patch(transformer) -> int:
    patch = transformer.config.patch_size
    return patch[-1] if isinstance(patch, (tuple, list)) else patch
