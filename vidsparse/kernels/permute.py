"""`permute_tokens`: gather (or scatter back) the tokens of `[B, H, S, D]` tensors by one of a few
permutations, chosen per head (or per batch element and head) on the device.

Token reorderings make sparse attention denser in blocks: Chipmunk and SVG2-style methods sort the
tokens of each head into semantically close groups, run block- or column-sparse attention on the
sorted sequence, and scatter the output back. Each head may use a different order, so the launcher
takes a small table of permutations `perms [P, S]` and an index `order_index [H]` or `[B, H]` saying
which row each head uses. Both stay on the device: nothing here synchronises with the host.

Every permutation comes with its inverse: `permute_tokens(permute_tokens(x, p, o), p, o, inverse=True)`
returns `x` exactly (the kernel only moves elements).

Example::

    >>> perms = torch.stack([torch.arange(s), torch.randperm(s)]).to(q.device)
    >>> order = torch.tensor([0, 1] * (h // 2), device=q.device)  # even heads identity, odd shuffled
    >>> q_sorted = permute_tokens(q, perms, order)
    >>> o = permute_tokens(attention(q_sorted, ...), perms, order, inverse=True)
"""

from __future__ import annotations

import torch

from .block_sparse import _interpreting, triton_cdiv

__all__ = ["permute_tokens", "permute_tokens_reference"]

_INDEX_DTYPES = (torch.int32, torch.int64)


def validate_permute_inputs(x, perms, order_index) -> None:
    """Raise a ValueError naming the expected and the given values for any input that
    `permute_tokens` and its reference cannot take. Values are not read (that would sync):
    each row of `perms` must be a permutation of 0..S-1 and `order_index` must be in [0, P)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a 4-D tensor [B, H, S, D]; got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"x must be floating point; got {x.dtype}")
    b, h, s, _ = x.shape
    if not isinstance(perms, torch.Tensor) or perms.dim() != 2 or perms.shape[1] != s or perms.shape[0] < 1:
        shape = tuple(perms.shape) if isinstance(perms, torch.Tensor) else type(perms).__name__
        raise ValueError(f"perms must be a tensor [P, S] = [P, {s}] with P >= 1 (one permutation a row); got {shape}")
    if perms.dtype not in _INDEX_DTYPES:
        raise ValueError(f"perms must be int32 or int64; got {perms.dtype}")
    if perms.device != x.device:
        raise ValueError(f"perms is on {perms.device}, x on {x.device}")
    if order_index is None:
        return
    if not isinstance(order_index, torch.Tensor) or tuple(order_index.shape) not in ((h,), (b, h)):
        shape = tuple(order_index.shape) if isinstance(order_index, torch.Tensor) else type(order_index).__name__
        raise ValueError(f"order_index must be a tensor [H] = [{h}] or [B, H] = [{b}, {h}]; got {shape}")
    if order_index.dtype not in _INDEX_DTYPES:
        raise ValueError(f"order_index must be int32 or int64; got {order_index.dtype}")
    if order_index.device != x.device:
        raise ValueError(f"order_index is on {order_index.device}, x on {x.device}")


def _row_indices(perms: torch.Tensor, order_index: torch.Tensor | None, b: int, h: int) -> torch.Tensor:
    """The permutation of every (b, h): int64 `[B, H, S]`."""
    if order_index is None:
        return perms[0].long().expand(b, h, -1)
    order = order_index.long().expand(b, h)  # [H] broadcasts over the batch
    return perms.long()[order]


def permute_tokens_reference(
    x: torch.Tensor, perms: torch.Tensor, order_index: torch.Tensor | None = None, *, inverse: bool = False
) -> torch.Tensor:
    """`permute_tokens` in plain PyTorch: an `index_select` of whole token rows (the inverse gathers by the inverse
    permutation, which equals scattering by the permutation)."""
    validate_permute_inputs(x, perms, order_index)
    b, h, s, d = x.shape
    if order_index is None:
        perm = perms[0].long()
        if inverse:
            perm = torch.empty_like(perm).scatter_(0, perm, torch.arange(s, device=x.device))
        return x.index_select(2, perm)
    index = _row_indices(perms, order_index, b, h)  # [B, H, S]
    if inverse:
        index = torch.empty_like(index).scatter_(-1, index, torch.arange(s, device=x.device).expand(b, h, s))
    rows = index + torch.arange(0, b * h * s, s, device=x.device).view(b, h, 1)  # rows of x viewed as [B H S, D]
    return x.reshape(b * h * s, d).index_select(0, rows.reshape(-1)).view(b, h, s, d)


def permute_tokens(
    x: torch.Tensor, perms: torch.Tensor, order_index: torch.Tensor | None = None, *, inverse: bool = False
) -> torch.Tensor:
    """Reorder the tokens of `x` by a permutation chosen per head, without a host sync.

    Args:
        x: `[B, H, S, D]`, any strides, any floating dtype.
        perms: int32 or int64 `[P, S]` on x's device; each row a permutation of `0..S-1` (not checked:
            reading it would sync).
        order_index: which row of `perms` each head uses: None (row 0 for every head), int `[H]`
            (shared over the batch) or `[B, H]`, on x's device, values in `[0, P)` (not checked).
        inverse: scatter instead of gather, undoing the forward call with the same arguments.

    Returns:
        A new contiguous `[B, H, S, D]` tensor: `y[b, h, i] = x[b, h, perm[i]]`, or with
        `inverse=True`, `y[b, h, perm[i]] = x[b, h, i]`, where `perm = perms[order_index[b, h]]`.

    Runs the Triton kernel on CUDA tensors and under the interpreter (TRITON_INTERPRET=1), and
    `permute_tokens_reference` otherwise.
    """
    validate_permute_inputs(x, perms, order_index)
    if x.device.type != "cuda" and not _interpreting():
        return permute_tokens_reference(x, perms, order_index, inverse=inverse)
    from . import _permute as kern  # lazily: see _block_sparse_fwd's docstring

    b, h, s, d = x.shape
    y = torch.empty(b, h, s, d, dtype=x.dtype, device=x.device)
    if x.numel() == 0:
        return y
    if order_index is None:
        order, stride_ob, stride_oh = perms, 0, 0  # ORDER is not read
    else:
        order = order_index
        stride_ob = 0 if order_index.dim() == 1 else order_index.stride(0)
        stride_oh = order_index.stride(-1)
    block_d = max(16, 1 << (d - 1).bit_length())
    # ~8K elements a program: 64 rows of 128, enough loads in flight to cover the gather's latency.
    block_s = max(16, min(128, 8192 // block_d))
    grid = (triton_cdiv(s, block_s), b * h)
    kern._permute_tokens[grid](
        x, y, perms, order,
        x.stride(0), x.stride(1), x.stride(2), x.stride(3),
        y.stride(0), y.stride(1), y.stride(2),
        perms.stride(0), perms.stride(1),
        stride_ob, stride_oh,
        h, s, d,
        BLOCK_S=block_s, BLOCK_D=block_d, HAS_ORDER=order_index is not None, INVERSE=inverse,
        num_warps=4,
    )
    return y
