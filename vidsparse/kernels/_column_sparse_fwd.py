"""The column-sparse flash-attention forward kernel. Private: call it through
`vidsparse.kernels.column_sparse_attention`, which validates the inputs and picks the configuration.

Every query tile attends to a list of key tokens (the columns of its query block) gathered by
index, plus an optional contiguous text range read as plain tiles. Imported lazily by the
launcher, for the reason given in `_block_sparse_fwd.py`.
"""

import triton
import triton.language as tl

from ._block_sparse_fwd import _exp2_shifted


@triton.jit
def _attend_tile(q, k, v, key_bias, m_i, l_i, acc, qk_scale,
                 MASKED: tl.constexpr, DOT_F32: tl.constexpr, DOT_PRECISION: tl.constexpr,
                 POW2_MAX: tl.constexpr):
    # One online-softmax step over BLOCK_N keys (as in _block_sparse_fwd). key_bias [BLOCK_N] is 0
    # for a live key and -inf for padding or a slot past the tile's end; MASKED=False skips it.
    if DOT_F32:
        k = k.to(tl.float32)
    qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
    if POW2_MAX:
        # A whole-number running max and p from _exp2_shifted, as _block_sparse_fwd does in this mode: a
        # key's rounded p is the same in both kernels (see there).
        s_ij = qk * qk_scale
        if MASKED:
            s_ij = s_ij + key_bias[None, :]
        m_ij = tl.maximum(m_i, tl.math.ceil(tl.max(s_ij, 1)))
        p = _exp2_shifted(s_ij, m_ij)
    elif MASKED:
        qk = qk * qk_scale + key_bias[None, :]
        m_ij = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.math.exp2(qk - m_ij[:, None])
    else:
        # The row max of the raw scores is scaled once (qk_scale > 0): one FMA per score below.
        m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        p = tl.math.exp2(qk * qk_scale - m_ij[:, None])
    alpha = tl.math.exp2(m_i - m_ij)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    if DOT_F32:
        # p rounded to bf16 as on the GPU, then multiplied in fp32 (the interpreter's bf16 tl.dot is wrong)
        acc = tl.dot(p.to(v.dtype).to(tl.float32), v.to(tl.float32), acc, input_precision=DOT_PRECISION)
    else:
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PRECISION)
    return m_ij, l_i, acc


@triton.jit
def _column_index(raw, slot, wrap_row, PACKED: tl.constexpr, N_WRAPS: tl.constexpr):
    # int64 key indices of list entries `raw` at positions `slot`. A packed list (vidsparse.core.columns) holds
    # int16 low halves of an ascending list: 2^16 more for every wrap position at or before the slot.
    idx = raw.to(tl.int64)
    if PACKED:
        idx = idx & 0xFFFF
        for w in tl.static_range(N_WRAPS):
            idx += tl.where(slot >= tl.load(wrap_row + w), 65536, 0)
    return idx


@triton.jit
def _column_sparse_fwd(
    Q, K, V, O, LSE, BIAS, COUNTS, COLUMNS, WRAPS,
    stride_qb, stride_qh, stride_qs,
    stride_kb, stride_kh, stride_ks,
    stride_vb, stride_vh, stride_vs,
    stride_ob, stride_oh, stride_os,
    stride_bias_b,
    stride_nb, stride_nh, stride_nq,
    stride_cb, stride_ch, stride_cq, stride_ck,
    stride_wb, stride_wh, stride_wq,
    H, S, NUM_COLS, text_start, text_stop, qk_scale,
    PACKED: tl.constexpr, N_WRAPS: tl.constexpr,
    Q_BLOCK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    HAS_TEXT: tl.constexpr, HAS_BIAS: tl.constexpr, RETURN_LSE: tl.constexpr,
    DOT_F32: tl.constexpr, DOT_PRECISION: tl.constexpr, POW2_MAX: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    row0 = pid_m * BLOCK_M
    q_blk = row0 // Q_BLOCK

    q_base = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    k_base = K + b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + h.to(tl.int64) * stride_vh
    bias_base = BIAS + b.to(tl.int64) * stride_bias_b

    # The column list of this query block (a shared list has stride 0 over the batch). The count
    # is clamped to the list's length: a bad count cannot read past it.
    n_cols = tl.minimum(tl.load(COUNTS + b * stride_nb + h * stride_nh + q_blk * stride_nq), NUM_COLS)
    col_row = COLUMNS + b.to(tl.int64) * stride_cb + h.to(tl.int64) * stride_ch + q_blk.to(tl.int64) * stride_cq
    wrap_row = WRAPS + b.to(tl.int64) * stride_wb + h.to(tl.int64) * stride_wh + q_blk.to(tl.int64) * stride_wq

    # q stays in registers for the whole loop; the softmax scale is folded into exp2.
    offs_m = row0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    dims = tl.arange(0, HEAD_DIM)
    q = tl.load(q_base + offs_m[:, None].to(tl.int64) * stride_qs + dims[None, :], mask=offs_m[:, None] < S, other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)

    # m starts finite: a row whose keys so far were all masked gets p = 0 and alpha = 1, not NaN.
    m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    if HAS_TEXT:
        # Text keys are contiguous: plain tiles, the last one cut at text_stop.
        for col0 in range(text_start, text_stop, BLOCK_N):
            cols = col0 + offs_n
            in_text = cols < text_stop
            key_bias = tl.where(in_text, 0.0, float("-inf"))
            if HAS_BIAS:
                key_bias += tl.load(bias_base + cols, mask=in_text, other=0.0)
            offs = cols[:, None].to(tl.int64)
            k = tl.load(k_base + offs * stride_ks + dims[None, :], mask=in_text[:, None], other=0.0)
            v = tl.load(v_base + offs * stride_vs + dims[None, :], mask=in_text[:, None], other=0.0)
            m_i, l_i, acc = _attend_tile(q, k, v, key_bias, m_i, l_i, acc, qk_scale, True, DOT_F32, DOT_PRECISION, POW2_MAX)

    # Full tiles of gathered columns: every slot is live, so the K and V row loads need no mask
    # (the software pipeliner then streams the index load ahead of the two gathers). Each row is
    # HEAD_DIM contiguous elements: the gather stays coalesced along D. int64 row offsets:
    # S x stride_s passes 2^31 for fused-QKV layouts at HunyuanVideo sizes.
    n_full = n_cols // BLOCK_N
    for it in range(0, n_full):
        slot = it * BLOCK_N + offs_n
        idx = _column_index(tl.load(col_row + slot * stride_ck), slot, wrap_row, PACKED, N_WRAPS)
        k = tl.load(k_base + idx[:, None] * stride_ks + dims[None, :])
        v = tl.load(v_base + idx[:, None] * stride_vs + dims[None, :])
        if HAS_BIAS:
            key_bias = tl.load(bias_base + idx)
            m_i, l_i, acc = _attend_tile(q, k, v, key_bias, m_i, l_i, acc, qk_scale, True, DOT_F32, DOT_PRECISION, POW2_MAX)
        else:
            # (no bias: offs_n only fills the unused argument)
            m_i, l_i, acc = _attend_tile(q, k, v, offs_n, m_i, l_i, acc, qk_scale, False, DOT_F32, DOT_PRECISION, POW2_MAX)

    # The ragged last tile: slots past the count read key 0 (never their list entry) and get -inf.
    if n_full * BLOCK_N < n_cols:
        slot = n_full * BLOCK_N + offs_n
        live = slot < n_cols
        idx = tl.where(live, _column_index(tl.load(col_row + slot * stride_ck, mask=live, other=0), slot, wrap_row,
                                           PACKED, N_WRAPS), 0)
        key_bias = tl.where(live, 0.0, float("-inf"))
        if HAS_BIAS:
            key_bias += tl.load(bias_base + idx)
        k = tl.load(k_base + idx[:, None] * stride_ks + dims[None, :])
        v = tl.load(v_base + idx[:, None] * stride_vs + dims[None, :])
        m_i, l_i, acc = _attend_tile(q, k, v, key_bias, m_i, l_i, acc, qk_scale, True, DOT_F32, DOT_PRECISION, POW2_MAX)

    # A row that saw no live key has l = 0: its output is 0 and its log-sum-exp -inf.
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = (acc / l_safe[:, None]).to(O.dtype.element_ty)
    if RETURN_LSE:
        # natural-log LSE of scale * q.k: m and l are kept in base 2
        lse = (m_i + tl.math.log2(l_i)) * 0.6931471805599453
        tl.store(LSE + pid_bh.to(tl.int64) * S + offs_m, lse, mask=offs_m < S)
    o_base = O + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
    tl.store(o_base + offs_m[:, None].to(tl.int64) * stride_os + dims[None, :], out, mask=offs_m[:, None] < S)
