"""Packed column lists: what a cached delta keeps of each query block's key columns, in half the bytes.

A column list is int32 `[B', H, nQ, K]` of ascending key indices with int32 counts `[B', H, nQ]` (what
`topk_columns` returns and `column_sparse_attention` reads). Packed, it is the indices' low 16 bits as int16, plus,
per list, the `W = ceil(S / 2^16) - 1` positions where the high part steps up ("wraps", int32 `[B', H, nQ, W]`: the
number of live entries below `w * 2^16`, for w = 1..W). Because a list is ascending, entry i is
`low[i] + 2^16 * #{w : i >= wraps[w]}`, which the column kernel decodes as it gathers. At HunyuanVideo 720p (119,312
keys with the text, W = 1; 24 heads, 932 blocks of 128) with 8,334 columns a block, a layer's lists are 373 MB
instead of 746.

    >>> low, wraps = pack_columns(columns, counts, seq_len)
    >>> torch.equal(unpack_columns(low, wraps, counts), columns)   # entries past a count are 0 in both
    True
"""

from __future__ import annotations

import torch

__all__ = ["pack_columns", "packed_wraps", "unpack_columns"]

_HALF = 1 << 16


def packed_wraps(seq_len: int) -> int:
    """W: how many wrap positions a packed list of keys in `[0, seq_len)` has."""
    return max(0, -(-seq_len // _HALF) - 1)


def pack_columns(columns: torch.Tensor, counts: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`(low, wraps)`: int16 `[B', H, nQ, K]` and int32 `[B', H, nQ, W]` of ascending int32 lists and their counts.
    The lists must be ascending over their live entries (`topk_columns`' are); that is not checked (it would read
    them), but `unpack_columns` of an unsorted list does not give it back. Entries past a count pack to 0."""
    if columns.dtype != torch.int32 or counts.dtype != torch.int32:
        raise ValueError(f"columns and counts must be int32; got {columns.dtype} and {counts.dtype}")
    if columns.dim() != 4 or tuple(counts.shape) != tuple(columns.shape[:3]):
        raise ValueError(f"columns must be [B', H, nQ, K] and counts [B', H, nQ]; got {tuple(columns.shape)} and "
                         f"{tuple(counts.shape)}")
    b, h, n_q, k = columns.shape
    low = torch.empty(b, h, n_q, k, dtype=torch.int16, device=columns.device)
    wraps = torch.empty(b, h, n_q, packed_wraps(seq_len), dtype=torch.int32, device=columns.device)
    slots = torch.arange(k, device=columns.device)
    for j in range(h):  # a head at a time: the temporaries stay one head's size
        live = slots < counts[:, j].unsqueeze(-1)
        cols = torch.where(live, columns[:, j], 0) & 0xFFFF
        low[:, j] = cols - ((cols & 0x8000) << 1)  # [0, 2^16) onto int16's range, bit for bit
        for w in range(wraps.shape[-1]):
            wraps[:, j, :, w] = (live & (columns[:, j] < (w + 1) * _HALF)).sum(-1, dtype=torch.int32)
    return low, wraps


def unpack_columns(low: torch.Tensor, wraps: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """The int32 lists `pack_columns` packed (entries past a count are 0)."""
    if low.dtype != torch.int16 or wraps.dtype != torch.int32:
        raise ValueError(f"packed columns must be int16 with int32 wraps; got {low.dtype} and {wraps.dtype}")
    slots = torch.arange(low.shape[-1], device=low.device)
    cols = low.to(torch.int32) & 0xFFFF
    for w in range(wraps.shape[-1]):
        cols += torch.where(slots >= wraps[..., w : w + 1], _HALF, 0).to(torch.int32)
    return torch.where(slots < counts.unsqueeze(-1), cols, 0)
