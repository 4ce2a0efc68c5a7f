"""Block scores: the estimated attention mass of every (query block, key block) pair, from mean-pooled q and k.

For query block i and key block j of a sequence cut into blocks (in some token order), the attention mass that
block i's queries put on block j's keys is estimated from the blocks' mean vectors:

    log-mass(i, j) ~ scale * mean_q(i) . mean_k(j) + log(live keys of j)

the log of `n_j exp(scale q . k)` at the means (Jensen's lower bound of the block's log-sum-exp, SVG2's and
DFSAttn's first estimate). A softmax over the key blocks of each query block turns it into probabilities
`P[b, h, i, j]`, the share of block i's mass estimated to fall on block j. Key blocks can be left out of it
(`key_bias` -inf: text, which every query keeps anyway, or blocks of padding only), and padded keys count neither in
the mean nor in `log(live keys)`.

Two kernels, each with its validated launcher and a PyTorch reference beside it:

- `pool_blocks(x, block, perm=..., key_padding=...)`: float32 `[B, H, n, D]` block means of `[B, H, S, D]`,
  reading the tokens through a permutation (a `TokenOrder`'s), so that nobody writes a permuted copy of q or k;
- `block_scores(pooled_q, pooled_k, key_bias, scale)`: float32 `[B, H, nQ, nK]` probabilities.

`estimate_block_mass` runs both for q and k. Nothing here reads a value on the host: no sync.

Example::

    >>> perm = HILBERT.permutation(layout, q.device)
    >>> probs, pooled_k = estimate_block_mass(q, k, 128, 128, perm=perm, text=layout.text_range)
"""

from __future__ import annotations

import math

import torch

from .block_sparse import _interpreting, triton_cdiv, validate_key_padding, validate_qkv

__all__ = [
    "block_scores", "block_scores_reference", "estimate_block_mass", "estimate_block_mass_reference", "key_block_bias",
    "pool_blocks", "pool_blocks_reference",
]

_INDEX_DTYPES = (torch.int32, torch.int64)


def _use_triton(x: torch.Tensor) -> bool:
    return x.device.type == "cuda" or _interpreting()


def _check_block(block) -> None:
    if not isinstance(block, int) or isinstance(block, bool) or block < 16 or block & (block - 1):
        raise ValueError(f"block must be a power of two >= 16; got {block!r}")


def validate_pool_inputs(x, block, perm, key_padding) -> None:
    """Raise a ValueError naming the expected and the given values for anything `pool_blocks` cannot take."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        shape = (tuple(x.shape), x.dtype) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a floating-point 4-D tensor [B, H, S, D]; got {shape}")
    _check_block(block)
    s = x.shape[2]
    if perm is not None:
        if not isinstance(perm, torch.Tensor) or tuple(perm.shape) != (s,) or perm.dtype not in _INDEX_DTYPES:
            got = (tuple(perm.shape), perm.dtype) if isinstance(perm, torch.Tensor) else type(perm).__name__
            raise ValueError(f"perm must be an int32 or int64 permutation [S] = [{s}]; got {got}")
        if perm.device != x.device:
            raise ValueError(f"perm is on {perm.device}, x on {x.device}")
    if key_padding is not None:
        validate_key_padding(key_padding, x)


def pool_blocks_reference(x, block: int, *, perm=None, key_padding=None) -> torch.Tensor:
    """`pool_blocks` in plain PyTorch."""
    validate_pool_inputs(x, block, perm, key_padding)
    b, h, s, d = x.shape
    n = triton_cdiv(s, block)
    if perm is not None:
        x = x[:, :, perm.long()]
    live = torch.ones(b, s, dtype=torch.float32, device=x.device)
    if key_padding is not None:
        live = (~(key_padding[:, perm.long()] if perm is not None else key_padding)).float()
    xs = torch.zeros(b, h, n * block, d, dtype=torch.float32, device=x.device)
    xs[:, :, :s] = x.float() * live[:, None, :, None]
    w = torch.zeros(b, n * block, dtype=torch.float32, device=x.device)
    w[:, :s] = live
    count = w.view(b, n, block).sum(-1).clamp_min(1.0)  # [B, n]
    return xs.view(b, h, n, block, d).sum(3) / count[:, None, :, None]


def pool_blocks(x, block: int, *, perm=None, key_padding=None) -> torch.Tensor:
    """Mean of each block of `block` tokens of x, in the order `perm` gives, over the live tokens.

    Args:
        x: `[B, H, S, D]`, any strides, any floating dtype.
        block: tokens a block (a power of two >= 16); the last block may be ragged.
        perm: optional int `[S]` on x's device: block n holds tokens `x[..., perm[n*block : (n+1)*block], :]`
            (a `TokenOrder.permutation`); None: model order.
        key_padding: optional bool `[B, S]` in model order, True = leave the token out of the mean.

    Returns:
        float32 `[B, H, ceil(S / block), D]`; zeros for a block with no live token.

    Runs the Triton kernel on CUDA tensors and under the interpreter, `pool_blocks_reference` otherwise.
    """
    validate_pool_inputs(x, block, perm, key_padding)
    if not _use_triton(x):
        return pool_blocks_reference(x, block, perm=perm, key_padding=key_padding)
    from . import _block_scores as kern  # lazily: see _block_sparse_fwd's docstring

    b, h, s, d = x.shape
    n = triton_cdiv(s, block)
    y = torch.empty(b, h, n, d, dtype=torch.float32, device=x.device)
    if y.numel() == 0:
        return y
    pad = key_padding.view(torch.uint8) if key_padding is not None else y
    block_d = max(16, 1 << (d - 1).bit_length())
    # 64 rows x D a tile: each program streams its block through registers, 32 KB a load at D = 128 in bf16
    tile = min(block, max(16, 8192 // block_d))
    kern._pool_blocks[(n, b * h)](
        x, y, perm if perm is not None else y, pad,
        x.stride(0), x.stride(1), x.stride(2), x.stride(3),
        y.stride(0), y.stride(1), y.stride(2),
        key_padding.stride(0) if key_padding is not None else 0,
        h, s, d,
        BLOCK=block, TILE=tile, BLOCK_D=block_d, HAS_PERM=perm is not None, HAS_PAD=key_padding is not None,
        num_warps=4,
    )
    return y


def key_block_bias(seq_len: int, k_block: int, *, perm=None, key_padding=None, text=None, batch: int = 1,
                   device=None) -> torch.Tensor:
    """float32 `[B or 1, nK]`: `log(live keys)` of each key block, -inf for a block with none and for every block
    that holds a text token (`text=(start, stop)`, positions in the ordered sequence: orders leave text in place)."""
    n_k = triton_cdiv(seq_len, k_block)
    if key_padding is not None:
        pad = key_padding[:, perm.long()] if perm is not None else key_padding
        live = torch.zeros(pad.shape[0], n_k * k_block, dtype=torch.float32, device=pad.device)
        live[:, :seq_len] = (~pad).float()
    else:
        live = torch.zeros(1, n_k * k_block, dtype=torch.float32, device=device)
        live[:, :seq_len] = 1.0
    bias = live.view(live.shape[0], n_k, k_block).sum(-1).log()  # log 0 = -inf: no live key
    if text is not None:
        start, stop = int(text[0]), int(text[1])
        bias[:, start // k_block : triton_cdiv(stop, k_block)] = float("-inf")
    return bias


def validate_score_inputs(pooled_q, pooled_k, key_bias, scale) -> None:
    """Raise a ValueError naming the expected and the given values for anything `block_scores` cannot take."""
    for name, t in (("pooled_q", pooled_q), ("pooled_k", pooled_k)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4 or t.dtype != torch.float32:
            got = (tuple(t.shape), t.dtype) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a float32 tensor [B, H, n, D] (from pool_blocks); got {got}")
    b, h, _, d = pooled_q.shape
    if (pooled_k.shape[0], pooled_k.shape[1], pooled_k.shape[3]) != (b, h, d):
        raise ValueError(f"pooled_k must be [B, H, nK, D] = [{b}, {h}, nK, {d}]; got {tuple(pooled_k.shape)}")
    n_k = pooled_k.shape[2]
    if (not isinstance(key_bias, torch.Tensor) or key_bias.dtype != torch.float32 or key_bias.dim() != 2
            or key_bias.shape[0] not in (1, b) or key_bias.shape[1] != n_k):
        got = (tuple(key_bias.shape), key_bias.dtype) if isinstance(key_bias, torch.Tensor) else type(key_bias).__name__
        raise ValueError(f"key_bias must be a float32 tensor [1 or B, nK] = [1 or {b}, {n_k}]; got {got}")
    if not (pooled_q.device == pooled_k.device == key_bias.device):
        raise ValueError(f"pooled_q, pooled_k and key_bias must be on one device; got {pooled_q.device}, "
                         f"{pooled_k.device}, {key_bias.device}")
    if not (isinstance(scale, (int, float)) and scale > 0):
        raise ValueError(f"scale must be a positive number; got {scale!r}")


def block_scores_reference(pooled_q, pooled_k, key_bias, scale: float) -> torch.Tensor:
    """`block_scores` in plain PyTorch (float32)."""
    validate_score_inputs(pooled_q, pooled_k, key_bias, scale)
    logits = (pooled_q @ pooled_k.transpose(-1, -2)) * scale + key_bias[:, None, None, :]
    probs = torch.softmax(logits, -1)
    return torch.nan_to_num(probs, nan=0.0)  # a row without live key blocks: zeros


def block_scores(pooled_q, pooled_k, key_bias, scale: float) -> torch.Tensor:
    """Softmax over key blocks of `scale * pooled_q . pooled_k + key_bias`, per (b, h, query block).

    Args:
        pooled_q: float32 `[B, H, nQ, D]`, pooled_k: float32 `[B, H, nK, D]` (from `pool_blocks`).
        key_bias: float32 `[B or 1, nK]` (from `key_block_bias`): added to every score; -inf leaves a block out.
        scale: the attention's softmax scale (1 / sqrt(D) for stock attention).

    Returns:
        float32 `[B, H, nQ, nK]`: each row sums to 1 over its live key blocks, zeros where it has none.
    """
    validate_score_inputs(pooled_q, pooled_k, key_bias, scale)
    if not _use_triton(pooled_q):
        return block_scores_reference(pooled_q, pooled_k, key_bias, scale)
    from . import _block_scores as kern

    b, h, n_q, d = pooled_q.shape
    n_k = pooled_k.shape[2]
    pooled_q = pooled_q if pooled_q.stride(-1) == 1 else pooled_q.contiguous()
    pooled_k = pooled_k if pooled_k.stride(-1) == 1 else pooled_k.contiguous()
    key_bias = key_bias.contiguous()
    p = torch.empty(b, h, n_q, n_k, dtype=torch.float32, device=pooled_q.device)
    if p.numel() == 0:
        return p
    block_d = max(16, 1 << (d - 1).bit_length())
    # 32 x 64 score tiles: a HunyuanVideo 720p row of 931 key blocks takes 15 of them a pass
    block_m, block_n = 32, 64
    kern._block_softmax[(triton_cdiv(n_q, block_m), b * h)](
        pooled_q, pooled_k, key_bias, p,
        pooled_q.stride(0), pooled_q.stride(1), pooled_q.stride(2),
        pooled_k.stride(0), pooled_k.stride(1), pooled_k.stride(2),
        key_bias.stride(0) if key_bias.shape[0] > 1 else 0,
        p.stride(0), p.stride(1), p.stride(2),
        h, n_q, n_k, d, float(scale),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
        num_warps=4,
    )
    return p


def _estimate(pool, score, q, k, q_block, k_block, perm, key_padding, text, scale):
    validate_qkv(q, k, k)
    _check_block(q_block)
    _check_block(k_block)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    pooled_q = pool(q, q_block, perm=perm)  # queries are never padded: every row is a live query
    pooled_k = pool(k, k_block, perm=perm, key_padding=key_padding)
    bias = key_block_bias(q.shape[2], k_block, perm=perm, key_padding=key_padding, text=text, device=q.device)
    return score(pooled_q, pooled_k, bias, scale), pooled_k


def estimate_block_mass(q, k, q_block: int, k_block: int, *, perm=None, key_padding=None, text=None, scale=None):
    """`(probs, pooled_k)`: `block_scores` of `pool_blocks` of q and k (see the module docstring).

    q, k: `[B, H, S, D]` in model order; perm: the order the blocks are cut in (int `[S]`, None: model order);
    key_padding: bool `[B, S]`, True = ignore the key; text: `(start, stop)` positions of text in the ordered
    sequence (its key blocks are left out of the softmax); scale: default `1 / sqrt(D)`.
    Returns float32 `[B, H, nQ, nK]` probabilities and the float32 `[B, H, nK, D]` pooled keys (for drift).
    """
    return _estimate(pool_blocks, block_scores, q, k, q_block, k_block, perm, key_padding, text, scale)


def estimate_block_mass_reference(q, k, q_block: int, k_block: int, *, perm=None, key_padding=None, text=None,
                                  scale=None):
    """`estimate_block_mass` through the PyTorch references."""
    return _estimate(pool_blocks_reference, block_scores_reference, q, k, q_block, k_block, perm, key_padding, text,
                     scale)
