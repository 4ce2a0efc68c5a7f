"""The block-sparse flash-attention forward kernel. Private: call it through
`vidsparse.block_sparse_attention`, which validates the inputs and picks the configuration.

Imported lazily by the launcher, because `triton.jit` decides at decoration time whether the
kernel compiles for the GPU or runs in the interpreter. TRITON_INTERPRET=1 must nevertheless be
set before `triton` itself is first imported: triton's own helpers (`tl.max`, ...) are decorated then.
"""

import triton
import triton.language as tl


@triton.jit
def _exp2_shifted(s, m):
    # 2^(s - m) for a whole-number m, as 2^frac(s) * 2^(floor(s) - m): frac(s) is exact and the power of two is
    # built from its exponent bits, so the result depends on s alone, never on which m the row had reached when the
    # key was seen. A rescale by a later max is exact too, so every kernel that scores a key alike gets the same p,
    # and the same rounding of it for the PV product. -inf scores (padding) and shifts below 2^-126 give 0.
    whole = tl.math.floor(s)
    shift = whole - m[:, None]
    live = (s > float("-inf")) & (shift >= -126.0)
    shift = tl.where(live, shift, 0.0)
    scale = ((shift.to(tl.int32) + 127) << 23).to(tl.float32, bitcast=True)
    return tl.where(live, tl.math.exp2(tl.where(live, s - whole, 0.0)) * scale, 0.0)


@triton.jit
def _load_tile(desc, ptr, stride_s, b, h, row0, S,
               BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr, USE_TMA: tl.constexpr):
    # One [BLOCK, HEAD_DIM] tile of a [B, H, S, D] tensor starting at token row0. Rows past S read
    # as zeros: the bulk-copy engine fills them for free, the pointer path masks them.
    if USE_TMA:
        tile = desc.load([b, h, row0, 0]).reshape(BLOCK, HEAD_DIM)
    else:
        rows = row0 + tl.arange(0, BLOCK)
        cols = tl.arange(0, HEAD_DIM)
        # int64 offsets: S x stride_s passes 2^31 for fused-QKV layouts at HunyuanVideo sizes
        tile = tl.load(ptr + rows[:, None].to(tl.int64) * stride_s + cols[None, :], mask=rows[:, None] < S, other=0.0)
    return tile


@triton.jit
def _block_sparse_fwd(
    Q, K, V, O, LSE, BIAS, KV_NUM, KV_IDX, EXCLUDE,
    q_desc, k_desc, v_desc, o_desc,
    stride_qb, stride_qh, stride_qs,
    stride_kb, stride_kh, stride_ks,
    stride_vb, stride_vh, stride_vs,
    stride_ob, stride_oh, stride_os,
    stride_bias_b,
    stride_nb, stride_nh, stride_nq,
    stride_ib, stride_ih, stride_iq,
    stride_xb, stride_xh, stride_xq,
    H, S, qk_scale,
    Q_BLOCK: tl.constexpr, K_BLOCK: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_EXCLUDE: tl.constexpr, RETURN_LSE: tl.constexpr, USE_TMA: tl.constexpr,
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

    # The mask row of this program: the count and the ascending key-block indices. A shared mask
    # has stride 0 over the batch.
    n_blocks = tl.load(KV_NUM + b * stride_nb + h * stride_nh + q_blk * stride_nq)
    idx_row = KV_IDX + b.to(tl.int64) * stride_ib + h.to(tl.int64) * stride_ih + q_blk.to(tl.int64) * stride_iq
    # The keys this query block leaves out, one bit each (the delta refresh's rest: its columns and the text).
    x_row = EXCLUDE + b.to(tl.int64) * stride_xb + h.to(tl.int64) * stride_xh + q_blk.to(tl.int64) * stride_xq

    # q stays in registers for the whole loop; the softmax scale is folded into exp2.
    q = _load_tile(q_desc, q_base, stride_qs, b, h, row0, S, BLOCK_M, HEAD_DIM, USE_TMA)
    if DOT_F32:
        # Triton's interpreter multiplies bf16 tiles wrongly (3.6 to 3.9): there the matmuls run in
        # fp32 on the same bf16 values, with p rounded to bf16 as the GPU does. Never set on a GPU.
        q = q.to(tl.float32)

    # m starts finite: a row whose keys so far were all masked (-inf) then gives p = 0 and
    # alpha = 1 instead of NaN, without a per-iteration guard.
    m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    offs_n = tl.arange(0, BLOCK_N)
    SUB: tl.constexpr = K_BLOCK // BLOCK_N

    for it in range(0, n_blocks * SUB):
        kv_blk = tl.load(idx_row + it // SUB)
        col0 = kv_blk * K_BLOCK + (it % SUB) * BLOCK_N
        k = _load_tile(k_desc, k_base, stride_ks, b, h, col0, S, BLOCK_N, HEAD_DIM, USE_TMA)
        if DOT_F32:
            k = k.to(tl.float32)
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
        if HAS_EXCLUDE:
            # -inf before the max, so a left-out key weighs nothing, as a padded one does
            if BLOCK_N >= 32:  # the tile's BLOCK_N / 32 words, each spread over its 32 keys
                w = tl.load(x_row + (col0 >> 5) + tl.arange(0, BLOCK_N // 32),
                            mask=col0 + 32 * tl.arange(0, BLOCK_N // 32) < S, other=0)
                bits = tl.reshape((w[:, None] >> tl.arange(0, 32)[None, :]) & 1, [BLOCK_N])
            else:  # a tile inside one word
                cols = col0 + offs_n
                bits = (tl.load(x_row + (cols >> 5), mask=cols < S, other=0) >> (cols & 31)) & 1
            qk = tl.where(bits[None, :] != 0, float("-inf"), qk)
        if POW2_MAX:
            # The running max is a whole number (base 2), so every rescale is an exact power of two, and a
            # key's p (_exp2_shifted) is the same in any kernel that scores it alike, whatever tiles came
            # before; so is its rounding to the input dtype for the PV product. The full and the column
            # kernel's outputs then subtract without amplifying that rounding (a subtracting refresh, as
            # kernels/bench_refresh.py times it).
            s_ij = qk * qk_scale
            if HAS_BIAS:
                bias = tl.load(BIAS + b * stride_bias_b + col0 + offs_n)
                s_ij = s_ij + bias[None, :]
            m_ij = tl.maximum(m_i, tl.math.ceil(tl.max(s_ij, 1)))
        elif HAS_BIAS:
            # 0 for a live key, -inf for padding or the ragged tail; the add fuses with the scale.
            bias = tl.load(BIAS + b * stride_bias_b + col0 + offs_n)
            qk = qk * qk_scale + bias[None, :]
            m_ij = tl.maximum(m_i, tl.max(qk, 1))
            t = qk - m_ij[:, None]
        else:
            # The row max of the raw scores is scaled once (qk_scale > 0), so that scaling and
            # subtracting the max below is one FMA per score.
            m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
            t = qk * qk_scale - m_ij[:, None]
        alpha = tl.math.exp2(m_i - m_ij)
        l_i = l_i * alpha
        acc = acc * alpha[:, None]
        m_i = m_ij
        if POW2_MAX:
            p = _exp2_shifted(s_ij, m_ij)
        else:
            p = tl.math.exp2(t)
        l_i = l_i + tl.sum(p, 1)
        v = _load_tile(v_desc, v_base, stride_vs, b, h, col0, S, BLOCK_N, HEAD_DIM, USE_TMA)
        if DOT_F32:
            acc = tl.dot(p.to(V.dtype.element_ty).to(tl.float32), v.to(tl.float32), acc, input_precision=DOT_PRECISION)
        else:
            acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PRECISION)

    # A row that saw no live key has l = 0: its output is 0 and its log-sum-exp -inf.
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = (acc / l_safe[:, None]).to(O.dtype.element_ty)
    offs_m = row0 + tl.arange(0, BLOCK_M)
    if RETURN_LSE:
        # natural-log LSE of scale * q.k: m and l are kept in base 2
        lse = (m_i + tl.math.log2(l_i)) * 0.6931471805599453
        tl.store(LSE + pid_bh.to(tl.int64) * S + offs_m, lse, mask=offs_m < S)
    if USE_TMA:
        o_desc.store([b, h, row0, 0], out.reshape(1, 1, BLOCK_M, HEAD_DIM))
    else:
        o_base = O + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
        cols = tl.arange(0, HEAD_DIM)
        tl.store(o_base + offs_m[:, None].to(tl.int64) * stride_os + cols[None, :], out, mask=offs_m[:, None] < S)
