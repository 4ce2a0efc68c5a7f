"""The token gather/scatter kernel. Private: call it through `vidsparse.kernels.permute_tokens`,
which validates the inputs.

Imported lazily by the launcher, for the reason given in `_block_sparse_fwd.py`: `triton.jit`
decides at decoration time whether the kernel compiles for the GPU or runs in the interpreter.
"""

import triton
import triton.language as tl


@triton.jit
def _permute_tokens(
    X, Y, PERMS, ORDER,
    stride_xb, stride_xh, stride_xs, stride_xd,
    stride_yb, stride_yh, stride_ys,
    stride_pp, stride_ps,
    stride_ob, stride_oh,
    H, S, D,
    BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
    HAS_ORDER: tl.constexpr, INVERSE: tl.constexpr,
):
    pid_s = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H

    # The permutation row of this (b, h) is read on the device: no host sync, one launch for any
    # mix of per-head orders. A shared [H] order has stride 0 over the batch.
    if HAS_ORDER:
        row = tl.load(ORDER + b * stride_ob + h * stride_oh).to(tl.int64)
    else:
        row = 0
    offs_s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    in_seq = offs_s < S
    perm = tl.load(PERMS + row * stride_pp + offs_s.to(tl.int64) * stride_ps, mask=in_seq, other=0).to(tl.int64)

    # Forward reads scattered rows and writes this tile's rows in order; inverse reads in order and
    # writes scattered rows. Either way each token row is D contiguous elements, so both sides stay
    # coalesced along D. int64 offsets: B x H x S x D passes 2^31 at HunyuanVideo sizes.
    if INVERSE:
        src, dst = offs_s.to(tl.int64), perm
    else:
        src, dst = perm, offs_s.to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    live = in_seq[:, None] & (cols[None, :] < D)
    x_base = X + b.to(tl.int64) * stride_xb + h.to(tl.int64) * stride_xh
    y_base = Y + b.to(tl.int64) * stride_yb + h.to(tl.int64) * stride_yh
    tile = tl.load(x_base + src[:, None] * stride_xs + cols[None, :] * stride_xd, mask=live)
    tl.store(y_base + dst[:, None] * stride_ys + cols[None, :], tile, mask=live)
