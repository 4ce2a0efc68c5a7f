"""Plain PyTorch block-sparse and column-sparse attention: the references every kernel is tested
against, and the fallbacks where the Triton kernels cannot run.

Each computes exactly what its kernel computes, in float32 (float64 for float64 inputs), chunked
over query rows so that it never holds more than about `max_elements` scores: both run at 119k
tokens without building the S x S matrix. `block_sparse_attention_gathered` computes what
`block_sparse_attention_reference` does over each query block's own keys only, gathered like the
column reference's, at a cost that follows the mask's density: the CPU fallback of sparse masks.
"""

from __future__ import annotations

import math

import torch

from ..core.mask import SparseMask

__all__ = ["block_sparse_attention_gathered", "block_sparse_attention_reference", "column_sparse_attention_reference"]

_LOG2E, _LN2 = math.log2(math.e), math.log(2.0)
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
    exclude: torch.Tensor | None = None,
):
    """Masked attention over `[B, H, S, D]` inputs, with the semantics of `block_sparse_attention` (`exclude`
    included).

    A query row that selects no key gets zeros and a log-sum-exp of -inf.
    """
    from .block_sparse import validate_exclude, validate_inputs  # one set of checks for kernel and reference

    validate_inputs(q, k, v, mask, key_padding_mask, need_kernel=False)
    validate_exclude(exclude, q, mask)
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
        if exclude is not None:
            left_out = bitmask_keys(exclude[:, :, qb0:qb1], s).repeat_interleave(mask.q_block, 2)
            allowed = allowed & ~left_out[:, :, start - qb0 * mask.q_block : stop - qb0 * mask.q_block]
        scores = torch.einsum("bhqd,bhkd->bhqk", qc[:, :, start:stop], kc) * scale
        scores = scores.masked_fill(~allowed, float("-inf"))
        row_lse = torch.logsumexp(scores, dim=-1)  # -inf for rows that select nothing
        probs = torch.exp(scores - row_lse.nan_to_num(neginf=0.0).unsqueeze(-1))
        out[:, :, start:stop] = torch.einsum("bhqk,bhkd->bhqd", probs, vc)
        lse[:, :, start:stop] = row_lse.float()
    out = out.to(out_dtype or q.dtype)
    return (out, lse) if return_lse else out


def bitmask_keys(words: torch.Tensor, seq_len: int) -> torch.Tensor:
    """bool `[..., seq_len]`: which keys an int32 bitmask `[..., ceil(seq_len / 32)]` sets (bit j % 32 of word
    j // 32), the inverse of `column_bitmask`."""
    bits = torch.arange(32, dtype=torch.int32, device=words.device)
    return ((words.unsqueeze(-1) >> bits) & 1).bool().flatten(-2)[..., :seq_len]


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
    wraps: torch.Tensor | None = None,
):
    """Column-sparse attention over `[B, H, S, D]` inputs, with the semantics of `column_sparse_attention`
    (packed int16 lists with their `wraps` included: they are unpacked first).

    Each query block's keys are its live column entries (gathered, so a repeated entry counts twice,
    as in the kernel) followed by the text range. Checks that every live entry is in `[0, S)`,
    which reads the lists (a host sync). A query row without a live key gets zeros and -inf.
    """
    from .column_sparse import validate_column_inputs  # one set of checks for kernel and reference

    text = validate_column_inputs(q, k, v, columns, counts, q_block, text, key_padding_mask, need_kernel=False,
                                  wraps=wraps)
    if wraps is not None:
        from ..core.columns import unpack_columns

        columns = unpack_columns(columns, wraps, counts.clamp(max=columns.shape[-1]))
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
    ok = ok.reshape(blocks, width)
    qc = torch.nn.functional.pad(q.to(compute), (0, 0, 0, n_q * q_block - s)).view(blocks, q_block, d)
    attend = _Gathered(k, v, compute, q_block, min(_PIECE, max_elements), width)
    out = torch.empty(blocks, q_block, d, dtype=compute, device=q.device)
    lse = torch.empty(blocks, q_block, dtype=torch.float32, device=q.device)
    chunk = attend.blocks_per_chunk(width)
    for i0 in range(0, blocks, chunk):
        i1 = min(blocks, i0 + chunk)
        lse[i0:i1] = attend(qc[i0:i1], keys[i0:i1], ok[i0:i1], scale, out[i0:i1])
    out = out.view(b, h, n_q * q_block, d)[:, :, :s].to(out_dtype or q.dtype).contiguous()
    lse = lse.view(b, h, n_q * q_block)[:, :, :s].contiguous()
    return (out, lse) if return_lse else out


def block_sparse_attention_gathered(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: SparseMask,
    *,
    key_padding_mask: torch.Tensor | None = None,
    return_lse: bool = False,
    max_elements: int = 1 << 27,
    out_dtype: torch.dtype | None = None,
):
    """`block_sparse_attention_reference`, computed per query block over the keys of its blocks only, gathered.

    Its cost follows the mask's density (the reference's and SDPA's follow S x S): the CPU fallback of sparse masks.
    Query blocks are taken in the order of their block counts, a few at a time, so that each chunk's keys are padded
    to about its own count. Reads the counts on the host.
    """
    from .block_sparse import validate_inputs

    validate_inputs(q, k, v, mask, key_padding_mask, need_kernel=False)
    b, h, s, d = q.shape
    scale = 1.0 / math.sqrt(d)
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    q_block, k_block, n_q = mask.q_block, mask.k_block, mask.num_q_blocks
    blocks = b * h * n_q  # query blocks, (batch, head, block) flattened
    counts = mask.kv_num_blocks.expand(b, h, n_q).reshape(blocks).long()
    indices = mask.kv_indices.expand(b, h, n_q, mask.kv_indices.shape[-1]).reshape(blocks, -1).long()
    order = counts.argsort(stable=True)
    sorted_counts = counts[order].tolist()
    qc = torch.nn.functional.pad(q.to(compute), (0, 0, 0, n_q * q_block - s)).view(blocks, q_block, d)
    base = torch.arange(blocks, device=q.device) // n_q * s  # each block's (batch, head) rows in k viewed [B H S, D]
    key_ok = None if key_padding_mask is None else (~key_padding_mask).reshape(-1)  # [B S]
    batch_base = torch.arange(blocks, device=q.device) // (h * n_q) * s  # its batch element's keys in key_ok
    attend = _Gathered(k, v, compute, q_block, min(_PIECE, max_elements), sorted_counts[-1] * k_block)
    out = torch.empty(blocks, q_block, d, dtype=compute, device=q.device)
    lse = torch.empty(blocks, q_block, dtype=torch.float32, device=q.device)
    slot = torch.arange(k_block, device=q.device)
    i0 = 0
    while i0 < blocks:
        chunk = attend.blocks_per_chunk(max(1, sorted_counts[i0]) * k_block)
        while chunk > 1 and chunk * sorted_counts[min(blocks, i0 + chunk) - 1] * k_block > attend.capacity:
            chunk //= 2  # the widest row of the chunk sets its width
        i1 = min(blocks, i0 + chunk)
        rows, width = order[i0:i1], sorted_counts[i1 - 1]
        if width == 0:  # query blocks without a key block: zeros and -inf
            out[rows], lse[rows] = 0.0, float("-inf")
            i0 = i1
            continue
        tokens = (indices[rows, :width, None] * k_block + slot).view(len(rows), width * k_block)
        ok = (torch.arange(width, device=q.device) < counts[rows, None]).repeat_interleave(k_block, 1) & (tokens < s)
        tokens = tokens.clamp_(max=s - 1)
        if key_ok is not None:
            ok &= key_ok[batch_base[rows, None] + tokens]
        o = torch.empty(len(rows), q_block, d, dtype=compute, device=q.device)
        lse[rows] = attend(qc[rows], tokens + base[rows, None], ok, scale, o).float()
        out[rows] = o
        i0 = i1
    out = out.view(b, h, n_q * q_block, d)[:, :, :s].to(out_dtype or q.dtype).contiguous()
    lse = lse.view(b, h, n_q * q_block)[:, :, :s].contiguous()
    return (out, lse) if return_lse else out


class _Gathered:
    """Attention of query blocks over their own gathered keys: `(q_blocks [n, q_block, D], keys [n, W], ok [n, W],
    scale, out [n, q_block, D]) -> lse [n, q_block]`, keys indexing k and v viewed `[B H S, D]` (ok False: not a key).

    A chunk's gathered keys and values and its scores take `n W (2 D + q_block)` elements, kept to about `elements`
    so that they stay in the CPU's cache, in buffers allocated once: a fresh allocation of several MB costs a page
    fault per page there."""

    def __init__(self, k, v, compute, q_block: int, elements: int, widest: int):
        d = k.shape[-1]
        self.kc, self.vc = (t.to(compute).reshape(-1, d) for t in (k, v))
        self.q_block, self.d = q_block, d
        self.capacity = max(widest, elements // (2 * d + q_block))  # gathered keys a chunk
        self.k_buf, self.v_buf = (torch.empty(self.capacity, d, dtype=compute, device=k.device) for _ in range(2))
        self.s_buf = torch.empty(self.capacity * q_block, dtype=compute, device=k.device)

    def blocks_per_chunk(self, width: int) -> int:
        return max(1, self.capacity // max(1, width))

    def __call__(self, q_blocks, keys, ok, scale: float, out) -> torch.Tensor:
        n, width = keys.shape
        at = keys.reshape(-1)
        k_cols, v_cols = (torch.index_select(t, 0, at, out=buf[: n * width]).view(n, width, self.d)
                          for t, buf in ((self.kc, self.k_buf), (self.vc, self.v_buf)))
        bias = torch.zeros(n, 1, width, dtype=k_cols.dtype, device=k_cols.device).masked_fill_(~ok.view(n, 1, width),
                                                                                             float("-inf"))
        scores = self.s_buf[: n * self.q_block * width].view(n, self.q_block, width)
        # in base 2: exp2 is several times cheaper than exp on the CPU
        torch.baddbmm(bias, q_blocks, k_cols.transpose(1, 2), alpha=scale * _LOG2E, out=scores)
        peak = scores.amax(-1, keepdim=True).nan_to_num_(neginf=0.0)  # 0 for rows that see no live key
        scores.sub_(peak).exp2_()
        total = scores.sum(-1, keepdim=True)
        torch.bmm(scores, v_cols, out=out).div_(total.clamp_min(torch.finfo(scores.dtype).tiny))  # 0 for those
        return total.log2_().add_(peak).mul_(_LN2).squeeze(-1)  # and -inf
