"""The attention-mass kernel behind `topk_columns`. Private: call it through
`vidsparse.kernels.topk_columns`, which validates the inputs.

For each query block it sums, over the block's sampled rows, the attention probability
`exp(scale q_r.k_j - lse_r)` of every key j, without writing the per-row scores: only the
[blocks, S] masses reach memory, R times less than the scores. Imported lazily by the launcher,
for the reason given in `_block_sparse_fwd.py`.
"""

import triton
import triton.language as tl


@triton.jit
def _column_mass(
    Q, K, LSE, ROWS, MASS,
    stride_qb, stride_qh, stride_qs,
    stride_kb, stride_kh, stride_ks,
    stride_lb, stride_lh,
    stride_mb, stride_mh, stride_mq,
    H, S, n_blocks, block0, keys_per_program, qk_scale,
    R: tl.constexpr, R_PAD: tl.constexpr, GROUP: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    DOT_F32: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    pid_g = tl.program_id(0)
    pid_k = tl.program_id(1)  # which range of keys_per_program keys (a multiple of BLOCK_N)
    pid_bh = tl.program_id(2)
    b = pid_bh // H
    h = pid_bh % H

    # GROUP query blocks of R sampled rows each (padded to R_PAD) share one tile of BLOCK_M rows,
    # so that the matmul keeps tensor-core shapes when R is small (16 rows: 8 blocks a tile).
    BLOCK_M: tl.constexpr = GROUP * R_PAD
    m = tl.arange(0, BLOCK_M)
    blk = pid_g * GROUP + m // R_PAD  # block within this chunk
    r = m % R_PAD
    live = (blk < n_blocks) & (r < R)
    row = tl.load(ROWS + (block0 + blk).to(tl.int64) * R + r, mask=live, other=0)

    dims = tl.arange(0, HEAD_DIM)
    q_base = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    q = tl.load(q_base + row[:, None] * stride_qs + dims[None, :], mask=live[:, None], other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)  # the interpreter's bf16 tl.dot is wrong (see _block_sparse_fwd)
    # lse in base 2; +inf for padding rows and rows without a live key: their exp2 is 0.
    lse = tl.load(LSE + b.to(tl.int64) * stride_lb + h.to(tl.int64) * stride_lh + row, mask=live, other=float("inf"))
    lse = lse * 1.4426950408889634

    k_base = K + b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
    m_base = MASS + b.to(tl.int64) * stride_mb + h.to(tl.int64) * stride_mh
    g = pid_g * GROUP + tl.arange(0, GROUP)
    offs_n = tl.arange(0, BLOCK_N)
    key0 = pid_k * keys_per_program
    for col0 in range(key0, tl.minimum(S, key0 + keys_per_program), BLOCK_N):
        cols = col0 + offs_n
        k = tl.load(k_base + cols[:, None].to(tl.int64) * stride_ks + dims[None, :], mask=cols[:, None] < S, other=0.0)
        if DOT_F32:
            k = k.to(tl.float32)
        p = tl.math.exp2(tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale - lse[:, None])
        mass = tl.sum(tl.reshape(p, [GROUP, R_PAD, BLOCK_N]), axis=1)  # [GROUP, BLOCK_N]
        ptrs = m_base + g[:, None].to(tl.int64) * stride_mq + cols[None, :]
        tl.store(ptrs, mass, mask=(g[:, None] < n_blocks) & (cols[None, :] < S))


@triton.jit
def _sampled_lse(
    Q, K, BIAS, ROWS, LSE,
    stride_qb, stride_qh, stride_qs,
    stride_kb, stride_kh, stride_ks,
    stride_bias_b,
    stride_lb, stride_lh,
    H, S, n_blocks, qk_scale,
    R: tl.constexpr, R_PAD: tl.constexpr, GROUP: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    HAS_BIAS: tl.constexpr, DOT_F32: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    # The natural-log log-sum-exp of the sampled rows over every live key: QK products and a running
    # max and sum only, so that `topk_columns` can choose columns before any attention pass. Rows are
    # laid out as in _column_mass (GROUP blocks of R_PAD rows a tile).
    pid_g = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    BLOCK_M: tl.constexpr = GROUP * R_PAD
    m = tl.arange(0, BLOCK_M)
    blk = pid_g * GROUP + m // R_PAD
    r = m % R_PAD
    live = (blk < n_blocks) & (r < R)
    row = tl.load(ROWS + blk.to(tl.int64) * R + r, mask=live, other=0)

    dims = tl.arange(0, HEAD_DIM)
    q_base = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    q = tl.load(q_base + row[:, None] * stride_qs + dims[None, :], mask=live[:, None], other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)  # the interpreter's bf16 tl.dot is wrong (see _block_sparse_fwd)
    k_base = K + b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
    offs_n = tl.arange(0, BLOCK_N)
    m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)  # finite: an all-masked tile gives p = 0, not NaN
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    for col0 in range(0, S, BLOCK_N):
        cols = col0 + offs_n
        k = tl.load(k_base + cols[:, None].to(tl.int64) * stride_ks + dims[None, :], mask=cols[:, None] < S, other=0.0)
        if DOT_F32:
            k = k.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        s = tl.where((cols < S)[None, :], s, float("-inf"))
        if HAS_BIAS:  # 0 for a live key, -inf for a padded one
            s = s + tl.load(BIAS + b * stride_bias_b + cols, mask=cols < S, other=0.0)[None, :]
        m_new = tl.maximum(m_i, tl.max(s, 1))
        l_i = l_i * tl.math.exp2(m_i - m_new) + tl.sum(tl.math.exp2(s - m_new[:, None]), 1)
        m_i = m_new
    lse = tl.where(l_i > 0.0, (m_i + tl.math.log2(l_i)) * 0.6931471805599453, float("-inf"))
    tl.store(LSE + b.to(tl.int64) * stride_lb + h.to(tl.int64) * stride_lh + row, lse, mask=live)
