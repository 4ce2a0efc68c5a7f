"""Exact log-sum-exp algebra on partial attentions (plain PyTorch: both are elementwise).

A partial attention over a key set `A` is the pair `(o_A, lse_A)`: `o_A` the softmax-weighted mean
of the values of `A`, `lse_A` the natural-log log-sum-exp of the scores over `A` (-inf for an empty
set, with `o_A = 0`), as `block_sparse_attention(..., return_lse=True)` and
`column_sparse_attention(..., return_lse=True)` return them. For disjoint `A` and `B`:

    lse_{A+B} = logaddexp(lse_A, lse_B)
    o_{A+B}   = exp(lse_A - lse_{A+B}) o_A + exp(lse_B - lse_{A+B}) o_B

`merge_attention` computes the union, `subtract_attention` the complement of a part inside a whole.
The math runs in float32 (float64 for float64 inputs); outputs come back in the input dtype.

Example::

    >>> o_cols, lse_cols = column_sparse_attention(q, k, v, columns, counts, q_block=128, return_lse=True)
    >>> o_rest, lse_rest = block_sparse_attention(q, k, v, other_blocks, return_lse=True)
    >>> o, lse = merge_attention(o_cols, lse_cols, o_rest, lse_rest)
"""

from __future__ import annotations

import torch

__all__ = ["merge_attention", "subtract_attention"]


def _check_pair(names: tuple[str, str, str, str], o1, lse1, o2, lse2) -> torch.dtype:
    """Shapes `[..., D]` and `[...]`, one device, float lse; returns the dtype to compute in."""
    for name, t in zip(names, (o1, lse1, o2, lse2)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            kind = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a floating-point tensor; got {kind}")
    if o1.shape != o2.shape or o1.dtype != o2.dtype:
        raise ValueError(
            f"{names[0]} and {names[2]} must share shape and dtype; got {tuple(o1.shape)} {o1.dtype} and "
            f"{tuple(o2.shape)} {o2.dtype}"
        )
    if o1.dim() < 1 or lse1.shape != o1.shape[:-1] or lse2.shape != o1.shape[:-1]:
        raise ValueError(
            f"{names[1]} and {names[3]} must have the shape of {names[0]} without its last dim, "
            f"{tuple(o1.shape[:-1])}; got {tuple(lse1.shape)} and {tuple(lse2.shape)}"
        )
    if not (o1.device == lse1.device == o2.device == lse2.device):
        raise ValueError(f"all four tensors must be on one device; got {o1.device}, {lse1.device}, {o2.device}, {lse2.device}")
    return torch.promote_types(torch.promote_types(o1.dtype, lse1.dtype), torch.float32)


def merge_attention(
    o1: torch.Tensor, lse1: torch.Tensor, o2: torch.Tensor, lse2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The attention over the union of two disjoint key sets, from their partial attentions.

    Args:
        o1, o2: `[..., D]` partial outputs (e.g. `[B, H, S, D]`), one dtype.
        lse1, lse2: `[...]` their log-sum-exps, -inf where a side saw no key.

    Returns:
        `(o, lse)`: o in the inputs' dtype, lse in lse1's; a row empty on both sides gets 0 and -inf.
    """
    compute = _check_pair(("o1", "lse1", "o2", "lse2"), o1, lse1, o2, lse2)
    l1, l2 = lse1.to(compute), lse2.to(compute)
    lse = torch.logaddexp(l1, l2)
    # Both sides empty: lse = -inf, and exp(-inf - 0) = 0 weights give o = 0 instead of NaN.
    ref = lse.masked_fill(torch.isneginf(lse), 0.0)
    w1 = torch.exp(l1 - ref).unsqueeze(-1)
    w2 = torch.exp(l2 - ref).unsqueeze(-1)
    # one output-sized buffer of the compute dtype, accumulated in place (on CUDA the products promote o1 and o2
    # element by element; the CPU casts each to the compute dtype once on the way)
    o = torch.mul(o1, w1).addcmul_(o2, w2)
    return o.to(o1.dtype), lse.to(lse1.dtype)


def subtract_attention(
    o: torch.Tensor, lse: torch.Tensor, o_part: torch.Tensor, lse_part: torch.Tensor, *, out: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The attention over the keys of a whole that a part (a subset of its keys) leaves out.

    `lse_rest = lse + log(1 - exp(lse_part - lse))` and `o_rest = (o - r o_part) / (1 - r)` with
    `r = exp(lse_part - lse)`, the part's share of the mass. The rounding of `o` and `o_part` is
    amplified by `1 / (1 - r)`: give them in float32 where `r` can be near 1 (the delta refresh does).
    Where the part holds all the mass within rounding, the rest is empty (`o_rest = 0`, `lse_rest =
    -inf`), as it is where the whole is empty. Within rounding: `1 - r <= max(4 eps (1 + |lse|), eps_o)`,
    eps of the compute dtype (the error of `lse_part - lse` itself) and eps_o of `o`'s dtype (below
    which `o - r o_part` is rounding noise, larger than the rest it stands for: bf16's 2**-7).

    Args:
        out: optional tensor of `o`'s shape and dtype, float32 or float64, to write `o_rest` into; it may be
            `o_part` itself (the delta refresh's column output, not needed afterwards), which saves the
            allocations.

    Returns:
        `(o_rest, lse_rest)` in the dtypes of `o` and `lse` (`o_rest` is `out` where given).
    """
    compute = _check_pair(("o", "lse", "o_part", "lse_part"), o, lse, o_part, lse_part)
    if out is not None and (out.shape != o.shape or out.dtype != o.dtype or o.dtype != compute):
        raise ValueError(f"out must be a {tuple(o.shape)} tensor of o's dtype {o.dtype}, which must be float32 or "
                         f"float64; got {tuple(out.shape)} {out.dtype}")
    whole, part = lse.to(compute), lse_part.to(compute)
    delta = part - whole  # <= 0 up to rounding; NaN where both are -inf (masked below)
    share = torch.exp(delta)
    rest = -torch.expm1(delta)  # 1 - share, accurate when the part holds nearly everything
    tol = (4 * torch.finfo(compute).eps * (1 + whole.abs())).clamp(min=torch.finfo(o.dtype).eps)
    empty = torch.isneginf(whole) | ~(rest > tol)
    rest_safe = torch.where(empty, 1.0, rest)
    # (o - r o_part) / (1 - r), in place: o_part's product first (out may be o_part), negated, o added
    o_rest = torch.mul(o_part.to(compute), share.unsqueeze(-1), out=out)
    o_rest.neg_().add_(o).div_(rest_safe.unsqueeze(-1)).masked_fill_(empty.unsqueeze(-1), 0.0)
    lse_rest = torch.where(empty, float("-inf"), whole + torch.log(rest_safe))
    return o_rest.to(o.dtype), lse_rest.to(lse.dtype)
