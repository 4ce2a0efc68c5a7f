"""What `vidsparse generate`, `compare` and `search` share on the command line: the generation flags, their
checks, the prompts they read, and `CLIError`, the usage error every command reports in one line.

Nothing here imports torch or diffusers, so that `vidsparse --help` stays fast.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

__all__ = [
    "DEFAULT_PROMPT", "VIDEO_SUFFIXES", "CLIError", "add_generation_args", "check_flags", "method_presets_help",
    "parse_seeds", "read_prompts", "writable_folder",
]

# A prompt of the yardstick's grammar (vidsparse.yardstick.scenes), the default model's: two shapes, a textured
# background and a camera pan, so that both the spatial and the temporal structure of attention matter.
DEFAULT_PROMPT = (
    "a red circle moving right and a yellow square spinning over a navy striped background, camera panning up"
)
VIDEO_SUFFIXES = (".mp4", ".gif")
_POSITIVE_FLAGS = ("steps", "height", "width", "frames")


class CLIError(ValueError):
    """A usage error the command line reports in one line, exiting with status 2."""


def check_flags(args) -> None:
    """Refuse sizes and step counts that no pipeline can run, before anything loads."""
    for flag in _POSITIVE_FLAGS:
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            what = "denoising steps" if flag == "steps" else f"video {flag} (pixels)" if flag != "frames" else "frames"
            raise CLIError(f"--{flag} {value}: the number of {what} must be at least 1")


def parse_seeds(text: str) -> list[int]:
    """`--seeds 0,1,2` as a list of ints; a CLIError for anything else."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise CLIError(f"--seeds {text!r}: give a comma list of integers, e.g. --seeds 0,1,2") from None
    if not seeds:
        raise CLIError("--seeds is empty: give a comma list of integers, e.g. --seeds 0,1,2")
    return seeds


def read_prompts(args) -> list[str]:
    """The prompts of `--prompt` (repeated) and `--prompts-file`, in that order; `DEFAULT_PROMPT` when neither."""
    prompts = list(args.prompt or [])
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise CLIError(f"prompts file {path} does not exist")
        prompts += [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return prompts or [DEFAULT_PROMPT]


def writable_folder(folder: Path) -> Path:
    """`folder`, created if missing and checked for writing; a one-line CLIError if it cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".vidsparse-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise CLIError(f"cannot write to the output folder {folder}: {exc.strerror or exc}") from exc
    return folder


def add_generation_args(p: argparse.ArgumentParser) -> None:
    """The flags of every command that runs a pipeline: model, config, prompts, sizes, device, overrides."""
    # The default is resolved in vidsparse.app.loading (vidsparse.app.models.DEFAULT_BUILTIN): importing
    # vidsparse.app.models here would import diffusers and transformers, and make every `vidsparse --help` seconds
    # slower.
    p.add_argument("--model", default=None,
                   help="a local diffusers pipeline folder, or a built-in name (default: yardstick, a small trained "
                        "model of moving shapes; yardstick-long, the same model at 16 x 128 x 128 (16,384 video "
                        "tokens), is for GPU runs; the tiny-* built-ins have random weights; all run anywhere)")
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


@functools.cache
def method_presets_help() -> str:
    """Help text: each shipped model config and its method presets (the YAML read as is, without diffusers)."""
    from importlib import resources

    from omegaconf import OmegaConf

    lines = ["method presets of each shipped config (--config NAME --method PRESET; a built-in model uses the config of its name):"]
    for entry in sorted(resources.files("vidsparse.app.configs").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            methods = OmegaConf.create(entry.read_text()).get("methods") or {}
            lines.append(f"  {entry.name[:-5]:18s} {', '.join(methods)}")
    return "\n".join(lines)
