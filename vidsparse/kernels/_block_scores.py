"""The block-scoring kernels behind `vidsparse.kernels.pool_blocks` and `block_scores`. Private: call them through
those launchers, which validate the inputs.

Imported lazily by the launchers, for the reason given in `_block_sparse_fwd.py`: `triton.jit` decides at
decoration time whether a kernel compiles for the GPU or runs in the interpreter.
"""

import triton
import triton.language as tl


@triton.jit
def _pool_blocks(
    X, Y, PERM, PAD,
    stride_xb, stride_xh, stride_xs, stride_xd,
    stride_yb, stride_yh, stride_yn,
    stride_pad_b,
    H, S, D,
    BLOCK: tl.constexpr, TILE: tl.constexpr, BLOCK_D: tl.constexpr,
    HAS_PERM: tl.constexpr, HAS_PAD: tl.constexpr,
):
    # One program pools one block of BLOCK tokens of one (b, h), TILE rows at a time: a mean over the block's live
    # tokens (rows past S and padded keys weigh 0), summed in float32.
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    cols = tl.arange(0, BLOCK_D)
    x_base = X + b.to(tl.int64) * stride_xb + h.to(tl.int64) * stride_xh
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    count = tl.zeros([TILE], dtype=tl.float32)
    for t in range(0, BLOCK, TILE):
        pos = pid_n * BLOCK + t + tl.arange(0, TILE)
        live = pos < S
        # The permutation is read here instead of gathering x first: the planner never writes a permuted copy of
        # q or k (the executor makes its own for the attention).
        if HAS_PERM:
            row = tl.load(PERM + pos, mask=live, other=0).to(tl.int64)
        else:
            row = pos.to(tl.int64)
        if HAS_PAD:
            live = live & (tl.load(PAD + b.to(tl.int64) * stride_pad_b + row, mask=live, other=1) == 0)
        tile = tl.load(x_base + row[:, None] * stride_xs + cols[None, :] * stride_xd,
                       mask=live[:, None] & (cols[None, :] < D), other=0.0)
        acc += tl.sum(tile.to(tl.float32), axis=0)
        count += live.to(tl.float32)
    n = tl.sum(count, axis=0)
    mean = acc / tl.maximum(n, 1.0)  # a block with no live token pools to zeros (its key bias is -inf)
    y = Y + b.to(tl.int64) * stride_yb + h.to(tl.int64) * stride_yh + pid_n.to(tl.int64) * stride_yn
    tl.store(y + cols, mean, mask=cols < D)


@triton.jit
def _block_softmax(
    PQ, PK, BIAS, P,
    stride_qb, stride_qh, stride_qn,
    stride_kb, stride_kh, stride_kn,
    stride_bias_b,
    stride_pb, stride_ph, stride_pq,
    H, NQ, NK, D, scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # BLOCK_M query blocks of one (b, h) against every key block: the estimated log-mass
    # `scale * pq . pk + log(live keys)` (the bias), then a softmax over the key blocks, in two passes over the
    # pooled keys (the first finds each row's max and sum online, the second writes the probabilities), so that a
    # row of NK scores never has to fit in registers.
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    # load the pooled queries: they stay in registers for both passes
    pq = tl.load(PQ + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh + rows[:, None].to(tl.int64) * stride_qn
                 + cols[None, :], mask=(rows[:, None] < NQ) & (cols[None, :] < D), other=0.0)
    k_base = PK + b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
    bias_base = BIAS + b.to(tl.int64) * stride_bias_b
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    for n0 in range(0, NK, BLOCK_N):
        keys = n0 + tl.arange(0, BLOCK_N)
        pk = tl.load(k_base + keys[None, :].to(tl.int64) * stride_kn + cols[:, None],
                     mask=(keys[None, :] < NK) & (cols[:, None] < D), other=0.0)  # [BLOCK_D, BLOCK_N]
        bias = tl.load(bias_base + keys, mask=keys < NK, other=float("-inf"))
        s = tl.dot(pq, pk, input_precision="ieee") * scale + bias[None, :]
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        # rows with no live key block so far keep m = -inf; shift by 0 there so that exp never sees inf - inf
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        l_i = l_i * tl.exp(m_i - shift) + tl.sum(tl.exp(s - shift[:, None]), axis=1)
        m_i = m_new
    shift = tl.where(m_i == float("-inf"), 0.0, m_i)
    inv_l = tl.where(l_i > 0, 1.0 / tl.where(l_i > 0, l_i, 1.0), 0.0)  # a row without live key blocks writes zeros
    p_base = P + b.to(tl.int64) * stride_pb + h.to(tl.int64) * stride_ph + rows[:, None].to(tl.int64) * stride_pq
    for n0 in range(0, NK, BLOCK_N):
        keys = n0 + tl.arange(0, BLOCK_N)
        pk = tl.load(k_base + keys[None, :].to(tl.int64) * stride_kn + cols[:, None],
                     mask=(keys[None, :] < NK) & (cols[:, None] < D), other=0.0)
        bias = tl.load(bias_base + keys, mask=keys < NK, other=float("-inf"))
        s = tl.dot(pq, pk, input_precision="ieee") * scale + bias[None, :]
        p = tl.exp(s - shift[:, None]) * inv_l[:, None]
        tl.store(p_base + keys[None, :], p, mask=(rows[:, None] < NQ) & (keys[None, :] < NK))
