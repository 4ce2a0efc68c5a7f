"""Plain PyTorch block-sparse attention: the reference every kernel is tested against, and the
fallback where the Triton kernel cannot run.

It computes exactly what `block_sparse_attention` computes, in float32 (float64 for float64
inputs), chunked over query rows so that it never holds more than about `max_elements` scores:
it runs at 119k tokens without building the S x S matrix.
"""

from __future__ import annotations

import math

import torch

from ..mask import SparseMask

__all__ = ["block_sparse_attention_reference"]


def block_sparse_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: SparseMask,
    *,
    scale: float | None = None,
    key_padding_mask: torch.Tensor | None = None,
    return_lse: bool = False,
    max_elements: int = 1 << 27,
):
    """Masked attention over `[B, H, S, D]` inputs, with the semantics of `block_sparse_attention`.

    A query row that selects no key gets zeros and a log-sum-exp of -inf.
    """
    from .block_sparse import validate_inputs  # one set of checks for kernel and reference

    validate_inputs(q, k, v, mask, key_padding_mask, need_kernel=False)
    b, h, s, d = q.shape
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    qc, kc, vc = (t.to(compute) for t in (q, k, v))

    blocks = mask.to_blocks()  # [B', H, nQ, nK]
    key_ok = torch.ones(b, 1, 1, s, dtype=torch.bool, device=q.device)
    if key_padding_mask is not None:
        key_ok = ~key_padding_mask.view(b, 1, 1, s)

    rows = max(mask.q_block, (max_elements // max(1, b * h * s)) // mask.q_block * mask.q_block)
    out = torch.empty(b, h, s, d, dtype=compute, device=q.device)
    lse = torch.empty(b, h, s, dtype=torch.float32, device=q.device)
    for start in range(0, s, rows):
        stop = min(s, start + rows)
        qb0, qb1 = start // mask.q_block, -(-stop // mask.q_block)
        # token-level mask of these rows: [B' or B, H, rows, S]
        allowed = blocks[:, :, qb0:qb1].repeat_interleave(mask.q_block, 2).repeat_interleave(mask.k_block, 3)
        allowed = allowed[:, :, start - qb0 * mask.q_block : stop - qb0 * mask.q_block, :s] & key_ok
        scores = torch.einsum("bhqd,bhkd->bhqk", qc[:, :, start:stop], kc) * scale
        scores = scores.masked_fill(~allowed, float("-inf"))
        row_lse = torch.logsumexp(scores, dim=-1)  # -inf for rows that select nothing
        probs = torch.exp(scores - row_lse.nan_to_num(neginf=0.0).unsqueeze(-1))
        out[:, :, start:stop] = torch.einsum("bhqk,bhkd->bhqd", probs, vc)
        lse[:, :, start:stop] = row_lse.float()
    out = out.to(q.dtype)
    return (out, lse) if return_lse else out
