"""Model adapters: small descriptions of each supported transformer, in a registry keyed by class.

An adapter says which attention modules vidsparse replaces, which processor class replaces them,
where the text sits, and how to read the latent grid (frames, rows, columns after patchify) off
the transformer's input: off `hidden_states` where they keep the grid's shape, else off the forward's
arguments (LTX takes flattened tokens with `num_frames`, `height` and `width` beside them). It
re-implements no forward.

The families beyond CogVideoX, HunyuanVideo and Wan live in `families/`, one module each with the fields
of its adapters in `ADAPTERS`; `_ensure_builtin` registers them (they import nothing from here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["ModelAdapter", "adapter_for", "register_adapter", "supported_classes"]


@dataclass(frozen=True)
class ModelAdapter:
    """What vidsparse needs to know about one transformer family.

    Attributes:
        name: family name used in messages and reports.
        class_name: the diffusers transformer class it describes.
        processor: the `SparseAttnProcessor` subclass that replaces the selected processors.
        replaces: predicate on a processor key of `transformer.attn_processors`
            (e.g. "transformer_blocks.0.attn1.processor"): True where vidsparse takes over.
        latent_grid: `(transformer, hidden_states) -> (frames, height, width)` after patchify; None where
            `grid_from_arguments` reads it instead.
        text_position: "start", "end", or None when the replaced layers see no text.
        grid_from_arguments: `(transformer, arguments) -> (frames, height, width) or None`, for transformers
            whose `hidden_states` are flattened tokens: `arguments` are the forward's, by parameter name. None
            (no grid this forward) makes every replaced layer run dense, with the reason reported.
    """

    name: str
    class_name: str
    processor: type
    replaces: Callable[[str], bool]
    latent_grid: Callable[[torch.nn.Module, torch.Tensor], tuple[int, int, int]] | None
    text_position: str | None
    grid_from_arguments: Callable[[torch.nn.Module, dict], tuple[int, int, int] | None] | None = None


_REGISTRY: dict[str, ModelAdapter] = {}


def register_adapter(adapter: ModelAdapter) -> ModelAdapter:
    _REGISTRY[adapter.class_name] = adapter
    return adapter


def supported_classes() -> list[str]:
    _ensure_builtin()
    return sorted(_REGISTRY)


def adapter_for(transformer: torch.nn.Module) -> ModelAdapter:
    """The adapter for this transformer (looked up by class, through its base classes)."""
    _ensure_builtin()
    module = getattr(transformer, "_orig_mod", transformer)  # a torch.compile wrapper
    for cls in type(module).__mro__:
        if cls.__name__ in _REGISTRY:
            return _REGISTRY[cls.__name__]
    raise ValueError(
        f"vidsparse has no adapter for {type(module).__name__}; supported transformers: "
        f"{', '.join(supported_classes())}"
    )


def _cogvideox_grid(model, hidden_states):
    # hidden_states: [B, F, C, H, W]; CogVideoX1.5 patches pairs of frames (the pipeline pads F)
    _, f, _, h, w = hidden_states.shape
    p, p_t = model.config.patch_size, model.config.patch_size_t or 1
    return (f // p_t, h // p, w // p)


def _hunyuan_grid(model, hidden_states):
    # hidden_states: [B, C, F, H, W]
    _, _, f, h, w = hidden_states.shape
    p, p_t = model.config.patch_size, model.config.patch_size_t
    return (f // p_t, h // p, w // p)


def _wan_grid(model, hidden_states):
    # hidden_states: [B, C, F, H, W]
    _, _, f, h, w = hidden_states.shape
    p_t, p_h, p_w = model.config.patch_size
    return (f // p_t, h // p_h, w // p_w)


_BUILTIN_DONE = False


def _ensure_builtin() -> None:
    """Register the built-in adapters on first use (the processors import diffusers)."""
    global _BUILTIN_DONE
    if _BUILTIN_DONE:
        return
    from .processors import CogVideoXSparseProcessor, HunyuanVideoSparseProcessor, WanSparseProcessor

    register_adapter(ModelAdapter(
        "cogvideox", "CogVideoXTransformer3DModel", CogVideoXSparseProcessor,
        replaces=lambda key: True, latent_grid=_cogvideox_grid, text_position="start",
    ))
    register_adapter(ModelAdapter(
        # the text refiner (context_embedder.token_refiner) keeps its stock processors
        "hunyuanvideo", "HunyuanVideoTransformer3DModel", HunyuanVideoSparseProcessor,
        replaces=lambda key: not key.startswith("context_embedder."), latent_grid=_hunyuan_grid,
        text_position="end",
    ))
    register_adapter(ModelAdapter(
        # self-attention only: cross-attention (attn2) keeps its stock processor
        "wan", "WanTransformer3DModel", WanSparseProcessor,
        replaces=lambda key: ".attn1." in key, latent_grid=_wan_grid, text_position=None,
    ))
    # the families beyond CogVideoX, HunyuanVideo and Wan: one module each, listing its adapters in ADAPTERS
    from .families import ltx
    _register_family(ltx)
    from .families import ltx2
    _register_family(ltx2)
    from .families import hunyuan_video15
    _register_family(hunyuan_video15)
    from .families import wan_vace
    _register_family(wan_vace)
    from .families import wan_animate
    _register_family(wan_animate)
    from .families import skyreels_v2
    _register_family(skyreels_v2)
    from .families import cosmos
    _register_family(cosmos)
    from .families import mochi
    _register_family(mochi)
    _BUILTIN_DONE = True


def _register_family(module) -> None:
    """Register the adapters a family module lists: `ADAPTERS`, the fields of each `ModelAdapter` (a family module
    does not import this one, which imports it)."""
    for fields in module.ADAPTERS:
        register_adapter(ModelAdapter(**fields))
