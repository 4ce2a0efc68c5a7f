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

_PIECE = 1 << 20  # elements the column reference works on at a time (4 MB in float32: in the CPU's cache)


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
    key_ok = torch.ones(b, s, dtype=torch.bool, device=q.device)
    if key_padding_mask is not None:
        key_ok = ~key_padding_mask
    # Each block's keys: its column entries, then the text range (a listed text key counts twice, as in the kernel).
    index = torch.where(live, columns, 0).long().expand(b, h, n_q, n_cols)
    ok = live.expand(b, h, n_q, n_cols) & key_ok.gather(1, index.reshape(b, -1)).view(b, h, n_q, n_cols)
    if text is not None:
        text_len = text[1] - text[0]
        index = torch.cat([index, torch.arange(*text, device=q.device).expand(b, h, n_q, text_len)], -1)
        ok = torch.cat([ok, key_ok[:, text[0] : text[1]].view(b, 1, 1, text_len).expand(b, h, n_q, text_len)], -1)
    width = index.shape[-1]
    blocks = b * h * n_q
    keys = (index + torch.arange(0, b * h * s, s, device=q.device).view(b, h, 1, 1)).reshape(blocks, width)
    bias = torch.zeros(blocks, 1, width, dtype=compute, device=q.device).masked_fill_(~ok.reshape(blocks, 1, width),
                                                                                     float("-inf"))

    # Query blocks per chunk: the gathered keys and values and the scores of a block take K' x (2 D + q_block),
    # kept to about `_PIECE` elements so that they stay in the CPU's cache, in buffers allocated once (a fresh
    # allocation of that size costs a page fault per page on the CPU).
    chunk = max(1, min(blocks, min(_PIECE, max_elements) // (width * (2 * d + q_block))))
    pad = n_q * q_block - s
    qc = torch.nn.functional.pad(q.to(compute), (0, 0, 0, pad)).view(blocks, q_block, d)
    kc, vc = (t.to(compute).reshape(b * h * s, d) for t in (k, v))
    out = torch.empty(blocks, q_block, d, dtype=compute, device=q.device)
    lse = torch.empty(blocks, q_block, dtype=torch.float32, device=q.device)
    k_buf, v_buf = (torch.empty(chunk * width, d, dtype=compute, device=q.device) for _ in range(2))
    s_buf = torch.empty(chunk, q_block, width, dtype=compute, device=q.device)
    for i0 in range(0, blocks, chunk):
        i1 = min(blocks, i0 + chunk)
        n, at = i1 - i0, keys[i0:i1].reshape(-1)
        k_cols, v_cols = (torch.index_select(t, 0, at, out=buf[: n * width]).view(n, width, d)
                          for t, buf in ((kc, k_buf), (vc, v_buf)))
        scores = torch.baddbmm(bias[i0:i1], qc[i0:i1], k_cols.transpose(1, 2), alpha=scale, out=s_buf[:n])
        peak = scores.amax(-1, keepdim=True).nan_to_num_(neginf=0.0)  # 0 for rows that see no live key
        scores.sub_(peak).exp_()
        total = scores.sum(-1, keepdim=True)
        torch.bmm(scores, v_cols, out=out[i0:i1]).div_(total.clamp_min(torch.finfo(compute).tiny))  # 0 for those
        lse[i0:i1] = total.log_().add_(peak).squeeze(-1)  # and -inf
    out = out.view(b, h, n_q * q_block, d)[:, :, :s].to(out_dtype or q.dtype).contiguous()
    lse = lse.view(b, h, n_q * q_block)[:, :, :s].contiguous()
    return (out, lse) if return_lse else out
