"""Plain PyTorch block-sparse and column-sparse attention: the references every kernel is tested
against, and the fallbacks where the Triton kernels cannot run.

Each computes exactly what its kernel computes, in float32 (float64 for float64 inputs), chunked
over query rows so that it never holds more than about `max_elements` scores: both run at 119k
tokens without building the S x S matrix.
"""

from __future__ import annotations

import math

import torch

from ..core.mask import SparseMask

__all__ = ["block_sparse_attention_reference", "column_sparse_attention_reference"]


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
    out_dtype: torch.dtype | None = None,
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
    out = out.to(out_dtype or q.dtype)
    return (out, lse) if return_lse else out


def column_sparse_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    columns: torch.Tensor,
    counts: torch.Tensor,
    *,
    q_block: int,
    text: tuple[int, int] | None = None,
    scale: float | None = None,
    key_padding_mask: torch.Tensor | None = None,
    return_lse: bool = False,
    max_elements: int = 1 << 27,
    out_dtype: torch.dtype | None = None,
):
    """Column-sparse attention over `[B, H, S, D]` inputs, with the semantics of `column_sparse_attention`.

    Each query block's keys are its live column entries (gathered, so a repeated entry counts twice,
    as in the kernel) followed by the text range. Checks that every live entry is in `[0, S)`,
    which reads the lists (a host sync). A query row without a live key gets zeros and -inf.
    """
    from .column_sparse import validate_column_inputs  # one set of checks for kernel and reference

    text = validate_column_inputs(q, k, v, columns, counts, q_block, text, key_padding_mask, need_kernel=False)
    b, h, s, d = q.shape
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    n_q, n_cols = columns.shape[2], columns.shape[3]

    live = torch.arange(n_cols, device=q.device) < counts.clamp(max=n_cols).unsqueeze(-1)  # [B', H, nQ, K]
    if bool(((columns < 0) | (columns >= s))[live].any()):
        raise ValueError(f"every live column index must be in [0, S={s})")
    index = torch.where(live, columns, 0).long().expand(b, h, n_q, n_cols)
    live = live.expand(b, h, n_q, n_cols)
    key_ok = torch.ones(b, s, dtype=torch.bool, device=q.device)
    if key_padding_mask is not None:
        key_ok = ~key_padding_mask
    text_len = 0 if text is None else text[1] - text[0]

    # Query blocks per chunk: the gathered keys and the scores of a block take (K + T) x (D + q_block).
    per_block = b * h * (n_cols + text_len) * (d + q_block)
    chunk = max(1, max_elements // max(1, per_block))
    pad = n_q * q_block - s
    qc = torch.nn.functional.pad(q.to(compute), (0, 0, 0, pad)).view(b, h, n_q, q_block, d)
    kc, vc = k.to(compute), v.to(compute)
    out = torch.empty(b, h, n_q, q_block, d, dtype=compute, device=q.device)
    lse = torch.empty(b, h, n_q, q_block, dtype=torch.float32, device=q.device)
    for q0 in range(0, n_q, chunk):
        q1 = min(n_q, q0 + chunk)
        idx = index[:, :, q0:q1]  # [B, H, n, K]
        flat = idx.reshape(b, h, -1, 1).expand(-1, -1, -1, d)
        k_cols = kc.gather(2, flat).view(b, h, q1 - q0, n_cols, d)
        v_cols = vc.gather(2, flat).view(b, h, q1 - q0, n_cols, d)
        ok = live[:, :, q0:q1] & key_ok.gather(1, idx.reshape(b, -1)).view(b, h, q1 - q0, n_cols)
        scores = torch.einsum("bhnqd,bhnkd->bhnqk", qc[:, :, q0:q1], k_cols) * scale
        scores = scores.masked_fill(~ok.unsqueeze(3), float("-inf"))
        values = v_cols
        if text is not None:
            k_text, v_text = kc[:, :, text[0] : text[1]], vc[:, :, text[0] : text[1]]
            text_scores = torch.einsum("bhnqd,bhkd->bhnqk", qc[:, :, q0:q1], k_text) * scale
            text_ok = key_ok[:, text[0] : text[1]].view(b, 1, 1, 1, text_len)
            scores = torch.cat([scores, text_scores.masked_fill(~text_ok, float("-inf"))], dim=-1)
            values = torch.cat([v_cols, v_text.unsqueeze(2).expand(-1, -1, q1 - q0, -1, -1)], dim=3)
        row_lse = torch.logsumexp(scores, dim=-1)  # -inf for rows that see no live key
        probs = torch.exp(scores - row_lse.nan_to_num(neginf=0.0).unsqueeze(-1))
        out[:, :, q0:q1] = torch.einsum("bhnqk,bhnkd->bhnqd", probs, values)
        lse[:, :, q0:q1] = row_lse.float()
    out = out.view(b, h, n_q * q_block, d)[:, :, :s].to(out_dtype or q.dtype).contiguous()
    lse = lse.view(b, h, n_q * q_block)[:, :, :s].contiguous()
    return (out, lse) if return_lse else out
