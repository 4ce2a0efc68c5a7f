"""Built-in video pipelines that run anywhere, offline: the trained yardstick, and tiny CogVideoX, HunyuanVideo
and Wan with RANDOM weights.

These exist so that the command line, the examples and the tests run anywhere, without downloading anything.
The default, "yardstick", is a small CogVideoX-5b-architecture model that vidsparse trains on procedural videos of
moving shapes and ships with the package (`vidsparse.yardstick`, weights in `vidsparse/yardstick/weights/`): it
draws the scenes of its prompt grammar (`vidsparse.yardstick.scenes`), so a sparse method's loss of quality shows
against dense attention. The "tiny-*" models have random weights (drawn from fixed seeds), so the videos they generate
look like coloured noise: they cover each supported architecture, and show that the machinery works and how fast, not
what a trained model would draw. Real models need real weights, given as a local diffusers folder
(`vidsparse generate --model /path/to/CogVideoX-5b --config cogvideox-5b`).

`BUILTIN_MODELS` names the pipelines the command line knows (`load_builtin(name)` builds one). Each has a model
config of the same name (`vidsparse/app/configs/<name>.yaml`, loaded by `vidsparse.app.configs`) whose `generate`
section holds call arguments that work for it: `BuiltinModel.defaults`. The default, "yardstick", generates 9 frames
of 64 x 64 (9 x 32 x 32 latents, a grid of 9 x 16 x 16 = 2,304 video tokens after 32 text tokens) in 20 steps with
CFG. "yardstick-long" is the same model fine-tuned at 16 frames of 128 x 128 (a grid of 16 x 32 x 32 = 16,384 video
tokens, about CogVideoX-5b's length; weights in `vidsparse/yardstick/weights-long/`), for GPU runs: a 20-step
generation takes minutes on a CPU. "tiny-cogvideox" generates 49 frames of 160 x 224 (13 x 20 x 28 latents, a grid of 13 x 10 x 14 = 1,820 video
tokens), so that a frame window leaves out about half of the keys.

The tiny pipelines and their transformers are built by `vidsparse.app.models.tiny` (importable from here too).

Example:
    >>> from vidsparse.app.models import load_builtin
    >>> pipe, spec = load_builtin("tiny-cogvideox")
    >>> video = pipe(prompt="a red ball rolling", output_type="np", **spec.defaults).frames[0]  # [49, 160, 224, 3]
    >>> pipe, spec = load_builtin()  # the yardstick
    >>> video = pipe(prompt="a red circle moving right over a navy striped background", output_type="np",
    ...              **spec.defaults).frames[0]  # [9, 64, 64, 3]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from diffusers import CogVideoXPipeline, DiffusionPipeline

# The tiny builders and their sizes were names of this module in 0.1, and stay importable from it.
from .tiny import (
    COGVIDEOX_TEXT_LEN, COGVIDEOX_VARIANTS, HEAD_DIM, HUNYUAN_PROMPT_TEMPLATE, NUM_HEADS, POOLED_DIM, TEXT_DIM,
    WAN_TEXT_LEN, cogvideox_pipeline, cogvideox_transformer, hunyuan_pipeline, hunyuan_transformer, wan_pipeline,
    wan_transformer, word_tokenizer,
)

__all__ = [
    "BUILTIN_MODELS", "COGVIDEOX_TEXT_LEN", "COGVIDEOX_VARIANTS", "DEFAULT_BUILTIN", "HEAD_DIM",
    "HUNYUAN_PROMPT_TEMPLATE", "NUM_HEADS", "POOLED_DIM", "TEXT_DIM", "WAN_TEXT_LEN", "BuiltinModel",
    "cogvideox_pipeline", "cogvideox_transformer", "hunyuan_pipeline", "hunyuan_transformer", "load_builtin",
    "wan_pipeline", "wan_transformer", "word_tokenizer",
]


@dataclass(frozen=True)
class BuiltinModel:
    """A built-in pipeline: the trained yardstick, or a tiny one with random weights.

    Attributes:
        name: the name the command line takes (`--model yardstick`); also the name of its model config.
        family: the adapter family of its transformer: "cogvideox", "hunyuanvideo" or "wan".
        build: builds the pipeline (float32, on the CPU, progress bar off); each call builds a fresh one (the
            yardstick's loads its shipped weights).
        description: which real model's architecture it follows, in a few words.
    """

    name: str
    family: str
    build: Callable[[], DiffusionPipeline]
    description: str

    @property
    def defaults(self) -> dict:
        """Pipeline call arguments that work for this pipeline: its model config's `generate` section, without the
        keys that are not call arguments (dtype, fps). Read from `vidsparse/app/configs/<name>.yaml` on each access.
        """
        from ..configs import call_kwargs, load_model_config

        return call_kwargs(load_model_config(self.name))


def _yardstick_pipeline() -> CogVideoXPipeline:
    """The trained yardstick from its shipped weights, float32 on the CPU, progress bar off."""
    from ...yardstick import load_yardstick  # here: it imports transformers

    pipe = load_yardstick()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _yardstick_long_pipeline() -> CogVideoXPipeline:
    """The long yardstick (16 x 128 x 128) from its shipped weights, float32 on the CPU, progress bar off."""
    from ...yardstick import load_yardstick

    pipe = load_yardstick(long=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    model.name: model
    for model in (
        BuiltinModel("yardstick", "cogvideox", _yardstick_pipeline,
                     "trained 8-layer x 4-head CogVideoX-5b-architecture model (vidsparse's yardstick), "
                     "9 frames of 64 x 64"),
        BuiltinModel("tiny-cogvideox", "cogvideox", lambda: cogvideox_pipeline("5b"),
                     "CogVideoX-5b architecture (RoPE, head dim 64), 2 layers x 2 heads"),
        BuiltinModel("tiny-cogvideox-2b", "cogvideox", lambda: cogvideox_pipeline("2b"),
                     "CogVideoX-2b architecture (sin/cos position table), 2 layers x 2 heads"),
        BuiltinModel("tiny-cogvideox1.5", "cogvideox", lambda: cogvideox_pipeline("1.5"),
                     "CogVideoX1.5-5B architecture (2-frame patches, padded latent frames), 2 layers x 2 heads"),
        BuiltinModel("tiny-hunyuanvideo", "hunyuanvideo", hunyuan_pipeline,
                     "HunyuanVideo architecture (dual- and single-stream blocks, text last), 2 heads"),
        BuiltinModel("tiny-wan", "wan", wan_pipeline,
                     "Wan 2.1 architecture (self- and cross-attention), 2 layers x 2 heads"),
        BuiltinModel("tiny-wan2.2", "wan", lambda: wan_pipeline(two_transformers=True),
                     "Wan 2.2 A14B architecture (high- and low-noise transformers), 2 layers x 2 heads each"),
        BuiltinModel("yardstick-long", "cogvideox", _yardstick_long_pipeline,
                     "the yardstick fine-tuned at 16 frames of 128 x 128 (16,384 video tokens), for GPU runs"),
    )
}
DEFAULT_BUILTIN = "yardstick"


def load_builtin(name: str = DEFAULT_BUILTIN) -> tuple[DiffusionPipeline, BuiltinModel]:
    """Build the built-in pipeline `name` and return it with its registry entry.

    Example:
        >>> pipe, spec = load_builtin("tiny-wan")
        >>> spec.family
        'wan'
    """
    if name not in BUILTIN_MODELS:
        raise ValueError(f"unknown built-in model {name!r}; built-in models: {', '.join(BUILTIN_MODELS)}")
    spec = BUILTIN_MODELS[name]
    return spec.build(), spec
