"""Fixed attention patterns in grid units (frames, rows, columns), compiled to a `SparseMask` for any grid.

A pattern is stated on tokens ("keys within +-1 frame of the query") and compiled to blocks: a
(query block, key block) pair is visited when any query token of the one and any key token of
the other satisfy it. That is computed without the S x S token matrix: each block gets a
membership vector over a small feature axis (the frames, or the spatial positions of a frame),
the query side is dilated by the pattern's width, and one matrix product says which pairs meet.

Text is always kept: the layout's text range is declared on the mask.

Example::

    >>> layout = TokenLayout(frames=13, height=30, width=45, text_len=226)
    >>> mask = frame_band(layout, num_heads=48, frames=1)
    >>> round(mask.density(), 3)
    0.253
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .layout import TokenLayout
from .mask import SparseMask

__all__ = ["frame_band", "temporal"]


def _membership(feature: torch.Tensor, num_values: int, layout: TokenLayout, block: int) -> torch.Tensor:
    """float32 `[nBlocks, num_values]`: 1 where some video token of the block has that feature value."""
    n_blocks = -(-layout.seq_len // block)
    token_block = (torch.arange(layout.video_len, device=feature.device) + layout.video_start) // block
    member = torch.zeros(n_blocks, num_values, device=feature.device)
    return member.index_put_((token_block, feature), torch.ones_like(feature, dtype=member.dtype))


def _pairs(q_member: torch.Tensor, k_member: torch.Tensor) -> torch.Tensor:
    return (q_member @ k_member.T) > 0


def _to_mask(blocks: torch.Tensor, layout: TokenLayout, num_heads: int, q_block: int, k_block: int) -> SparseMask:
    blocks = blocks.unsqueeze(0).expand(num_heads, -1, -1)
    return SparseMask.from_block_mask(blocks, q_block, k_block, layout.seq_len, text=layout.text_range)


def frame_band(
    layout: TokenLayout,
    num_heads: int,
    frames: int = 1,
    q_block: int = 128,
    k_block: int = 128,
    *,
    device=None,
) -> SparseMask:
    """Spatial heads: every query sees all keys of its own frame and of the `frames` frames either side."""
    frame, _, _ = layout.video_coords(device)
    q_member = _membership(frame, layout.frames, layout, q_block)
    k_member = _membership(frame, layout.frames, layout, k_block)
    if frames > 0:  # dilate the query side along the frame axis
        q_member = F.max_pool1d(q_member.unsqueeze(0), 2 * frames + 1, stride=1, padding=frames).squeeze(0)
    return _to_mask(_pairs(q_member, k_member), layout, num_heads, q_block, k_block)


def temporal(
    layout: TokenLayout,
    num_heads: int,
    radius: int = 0,
    q_block: int = 128,
    k_block: int = 128,
    *,
    device=None,
) -> SparseMask:
    """Temporal heads: every query sees the keys at its own spatial position (+-`radius` rows and
    columns) in every frame. In frame-major order that is a set of diagonals, one per frame."""
    _, row, col = layout.video_coords(device)
    spatial = row * layout.width + col
    q_member = _membership(spatial, layout.frame_size, layout, q_block)
    k_member = _membership(spatial, layout.frame_size, layout, k_block)
    if radius > 0:  # dilate the query side over the frame's rows and columns
        grid = q_member.view(-1, 1, layout.height, layout.width)
        grid = F.max_pool2d(grid, 2 * radius + 1, stride=1, padding=radius)
        q_member = grid.reshape(q_member.shape)
    return _to_mask(_pairs(q_member, k_member), layout, num_heads, q_block, k_block)
