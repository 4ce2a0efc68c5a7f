"""The tiny offline models and pipelines for the CPU tests: `vidsparse.app.models`'s builders, and the test fixtures
that feed their transformers directly (forward inputs with the grids of `vidsparse.app.models`'s table).

The builders live in the library because the command line needs built-in models at run time; the inputs below are
only for tests.
"""

from __future__ import annotations

import torch
from diffusers import CogVideoXTransformer3DModel, HunyuanVideoTransformer3DModel, WanTransformer3DModel
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

from vidsparse.app.models import *  # noqa: F403
from vidsparse.app.models import __all__ as _builtin_all
from vidsparse.app.models import WAN_TEXT_LEN

__all__ = [*_builtin_all, "cogvideox_inputs", "cogvideox_rotary_emb", "hunyuan_inputs", "wan_inputs"]


def cogvideox_rotary_emb(model: CogVideoXTransformer3DModel, frames: int, height: int, width: int):
    """(cos, sin), each [frames' x H' x W', head_dim], as `CogVideoXPipeline._prepare_rotary_positional_embeddings`.

    `frames`, `height` and `width` are the latent sizes handed to the transformer (for 1.5, after padding frames to a
    multiple of `patch_size_t`). Returns None when the model does not use RoPE (the 2b variant).
    """
    config = model.config
    if not config.use_rotary_positional_embeddings:
        return None
    p, p_t = config.patch_size, config.patch_size_t
    grid_height, grid_width = height // p, width // p
    base_size_width, base_size_height = config.sample_width // p, config.sample_height // p
    if p_t is None:
        crops_coords = get_resize_crop_region_for_grid((grid_height, grid_width), base_size_width, base_size_height)
        return get_3d_rotary_pos_embed(
            embed_dim=config.attention_head_dim,
            crops_coords=crops_coords,
            grid_size=(grid_height, grid_width),
            temporal_size=frames,
        )
    return get_3d_rotary_pos_embed(
        embed_dim=config.attention_head_dim,
        crops_coords=None,
        grid_size=(grid_height, grid_width),
        temporal_size=(frames + p_t - 1) // p_t,
        grid_type="slice",
        max_size=(base_size_height, base_size_width),
    )


def cogvideox_inputs(
    model: CogVideoXTransformer3DModel,
    batch: int = 2,
    frames: int | None = None,
    height: int = 10,
    width: int = 14,
    text_len: int | None = None,
    seed: int = 0,
) -> dict:
    """Forward kwargs for a CogVideoX transformer: hidden_states [B, F, C, H, W], text first in the sequence.

    `frames` defaults to 3 x patch_size_t (3 for 2b/5b, 6 for 1.5), which with the defaults gives the grid 3 x 5 x 7.
    `text_len` defaults to `max_text_seq_length` (required by the 2b variant). The timesteps differ per batch element.
    """
    config = model.config
    p_t = config.patch_size_t or 1
    frames = 3 * p_t if frames is None else frames
    if frames % p_t:
        raise ValueError(f"latent frames ({frames}) must be a multiple of patch_size_t ({p_t}); the pipeline pads them")
    text_len = config.max_text_seq_length if text_len is None else text_len
    gen = _generator(seed)
    return {
        "hidden_states": torch.randn(batch, frames, config.in_channels, height, width, generator=gen),
        "encoder_hidden_states": torch.randn(batch, text_len, config.text_embed_dim, generator=gen),
        "timestep": torch.randint(0, 1000, (batch,), generator=gen),
        "image_rotary_emb": cogvideox_rotary_emb(model, frames, height, width),
    }


def hunyuan_inputs(
    model: HunyuanVideoTransformer3DModel,
    batch: int = 2,
    frames: int = 3,
    height: int = 10,
    width: int = 14,
    text_len: int = 7,
    pad: int = 3,
    seed: int = 0,
) -> dict:
    """Forward kwargs for a HunyuanVideo transformer: hidden_states [B, C, F, H, W], text last in the sequence.

    `encoder_attention_mask` is [B, text_len] of 0/1; batch element 1 (if any) has its last `pad` tokens padded,
    as the pipeline's right-padded tokenizer gives. `guidance` is 6.0 x 1000, as the pipeline passes it.
    """
    config = model.config
    gen = _generator(seed)
    mask = torch.ones(batch, text_len)
    if batch > 1 and pad:
        mask[1, text_len - pad :] = 0
    kwargs = {
        "hidden_states": torch.randn(batch, config.in_channels, frames, height, width, generator=gen),
        "timestep": torch.randint(0, 1000, (batch,), generator=gen).float(),
        "encoder_hidden_states": torch.randn(batch, text_len, config.text_embed_dim, generator=gen),
        "encoder_attention_mask": mask,
        "pooled_projections": torch.randn(batch, config.pooled_projection_dim, generator=gen),
    }
    if config.guidance_embeds:
        kwargs["guidance"] = torch.full((batch,), 6.0 * 1000.0)
    return kwargs


def wan_inputs(
    model: WanTransformer3DModel,
    batch: int = 2,
    frames: int = 3,
    height: int = 10,
    width: int = 14,
    text_len: int = WAN_TEXT_LEN,
    seed: int = 0,
) -> dict:
    """Forward kwargs for a Wan transformer: hidden_states [B, C, F, H, W]; text reaches only the cross-attention."""
    config = model.config
    gen = _generator(seed)
    return {
        "hidden_states": torch.randn(batch, config.in_channels, frames, height, width, generator=gen),
        "timestep": torch.randint(0, 1000, (batch,), generator=gen).float(),
        "encoder_hidden_states": torch.randn(batch, text_len, config.text_dim, generator=gen),
    }


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
