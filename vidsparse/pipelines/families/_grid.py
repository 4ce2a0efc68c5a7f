"""The latent grid after a 3-D patchify, shared by the family modules whose transformers take `[B, C, F, H, W]`
latents and a 3-tuple `config.patch_size` (Wan's variants, SkyReels-V2, Cosmos)."""

from __future__ import annotations


def patch_grid(model, hidden_states) -> tuple[int, int, int]:
    """(frames, height, width) of `hidden_states` `[B, C, F, H, W]` after patches of `model.config.patch_size`."""
    _, _, f, h, w = hidden_states.shape
    p_t, p_h, p_w = model.config.patch_size
    return (f // p_t, h // p_h, w // p_w)
