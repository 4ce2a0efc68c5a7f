"""Wan2.1-VACE (`WanVACETransformer3DModel`): Wan's blocks plus VACE's control blocks, all with Wan's own
`WanAttnProcessor`, so Wan's sparse processor serves both unchanged.

Layout: every self-attention (`blocks.N.attn1` and `vace_blocks.N.attn1`) sees the video tokens only, frame-major
(`t*H*W + h*W + w`) on the grid of `hidden_states` after patchify. The control latents are patchified on the same
grid (padded to the video's length), and reference images enter as extra latent frames at the start, which the grid
counts as frames. Text reaches only the cross-attention (`attn2`), which keeps its stock processor.

Layer indices follow `attn_processors` order (the main blocks, then the control blocks); the control blocks run
first in each forward, so `warmup_layers` counts main blocks, not the first layers that run.
"""

from __future__ import annotations

from ..processors import WanSparseProcessor
from ._grid import patch_grid


ADAPTERS = (
    dict(name="wan-vace", class_name="WanVACETransformer3DModel", processor=WanSparseProcessor,
         replaces=lambda key: ".attn1." in key, latent_grid=patch_grid, text_position=None),
)
