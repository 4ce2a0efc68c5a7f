"""The top-K selection kernel behind `topk_columns`. Private: call it through
`vidsparse.kernels.topk_columns`, which validates the inputs.

One program takes one row of column masses (one query block of one head) and writes the indices of its K largest,
ascending, with no sort: a radix select finds the K-th largest value from the bits of the masses, then one
compacting pass keeps, in key order, every mass above it and the first of those equal to it. `torch.topk` plus a
sort of its indices did the same in two passes over S and two over K, and was two thirds of `topk_columns` at
HunyuanVideo 720p (`kernels/REFRESH.md`). Imported lazily by the launcher, for the reason given in
`_block_sparse_fwd.py`.
"""

import triton
import triton.language as tl


@triton.jit
def _row_keys(base, cols, S):
    """The masses' ordering keys: a non-negative float's bits order as int32 do; -1 for a banned key (a negative
    mass, set by the launcher), a NaN and the padding past S."""
    x = tl.load(base + cols, mask=cols < S, other=-1.0)
    return tl.where(x >= 0, x.to(tl.int32, bitcast=True) & 0x7FFFFFFF, -1)  # & drops the sign of -0.0


@triton.jit
def _select_top(
    MASS, COLS, COUNTS,
    stride_mr, stride_cr,
    S, top_k,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    base = MASS + row * stride_mr
    offs = tl.arange(0, BLOCK)
    bins = tl.arange(0, 256)

    # Radix select over the 31 bits of a key, most significant digit first (7, 8, 8 and 8 bits): each pass counts
    # the digit of the keys that share the prefix found so far, and fixes the digit that holds the `want`-th
    # largest of them. After four passes `prefix` is the K-th largest key, and `want` the number of keys equal to
    # it to take.
    prefix = 0
    want = top_k
    for p in tl.static_range(4):
        shift = 24 - 8 * p
        hist = tl.zeros([256], dtype=tl.int32)
        others = 0  # keys counted in bin 0 that do not share the prefix (no histogram mask: older tritons lack it)
        for c0 in range(0, S, BLOCK):
            key = _row_keys(base, c0 + offs, S)
            match = key >= 0
            if p > 0:
                match = match & ((key >> (shift + 8)) == (prefix >> (shift + 8)))
            hist += tl.histogram(tl.where(match, (key >> shift) & 0xFF, 0), 256)
            others += tl.sum((match == 0).to(tl.int32))
        hist -= tl.where(bins == 0, others, 0)
        if p == 0:
            want = tl.minimum(tl.sum(hist), top_k)  # every live key, where fewer than top_k are live
            live = want
        at_or_above = tl.sum(hist) - tl.cumsum(hist, 0) + hist
        digit = tl.minimum(tl.max(tl.where(at_or_above >= want, bins, -1)), 255)
        want -= tl.sum(tl.where(bins == digit, at_or_above - hist, 0))  # the keys above this digit are all taken
        prefix = prefix | (digit << shift)

    # Compact in key order: every key above the threshold, and the first `want` equal to it.
    col_base = COLS + row * stride_cr
    taken = 0
    equal = 0
    for c0 in range(0, S, BLOCK):
        cols = c0 + offs
        key = _row_keys(base, cols, S)
        live_key = key >= 0  # a row without a live key ends with prefix -1 (every digit 255), a banned key's value
        eq = ((key == prefix) & live_key).to(tl.int32)
        sel = ((key > prefix) & live_key) | ((eq != 0) & (equal + tl.cumsum(eq, 0) <= want))
        pos = taken + tl.cumsum(sel.to(tl.int32), 0) - 1
        tl.store(col_base + pos, cols, mask=sel)
        taken += tl.sum(sel.to(tl.int32))
        equal += tl.sum(eq)
    # Entries past the count are 0, as the PyTorch path leaves them.
    for c0 in range(0, top_k, BLOCK):
        pos = c0 + offs
        tl.store(col_base + pos, tl.zeros([BLOCK], dtype=tl.int32), mask=(pos >= live) & (pos < top_k))
    tl.store(COUNTS + row, live)
