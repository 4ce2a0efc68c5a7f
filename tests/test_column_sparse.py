"""`column_sparse_attention` (the Triton kernel) against `column_sparse_attention_reference`, and
`topk_columns`.

Error budget, as in test_block_sparse.py (whose docstring explains it and the interpreter's
truncating bf16 casts): the golden output is the reference on float64 copies of the inputs; the
kernel's relative error may be at most twice the reference's own error at the input dtype, with a
small floor. Outputs are poisoned with NaN, and list entries past each count hold out-of-range
garbage, so that an unwritten output or a read past the count is caught. Lengths are ragged
(217, 300) and shapes tiny: the kernel runs in Triton's interpreter without a GPU.
"""

import math
import re

import pytest
import torch
import torch.nn.functional as F
from attention_checks import DEVICE, FLOOR, LSE_FLOOR, poisoned_outputs, qkv, rel_err, truncate_to_bf16

from vidsparse.kernels import (
    ColumnKernelConfig,
    column_bitmask,
    column_sparse_attention,
    column_sparse_attention_reference,
    topk_columns,
)

B = 2
GARBAGE = 1 << 30  # list entries past the count: a kernel that reads one faults or goes wrong


def _columns(batch, h, s, q_block, n_cols, *, text=None, seed=0, sort=True, min_count=None):
    """Random column lists `[batch, H, nQ, n_cols]` of distinct non-text keys, and their counts
    (random in [min_count, n_cols], default n_cols // 2); entries past a count are GARBAGE."""
    g = torch.Generator().manual_seed(100 + seed)
    n_q = -(-s // q_block)
    allowed = torch.ones(s, dtype=torch.bool)
    if text is not None:
        allowed[text[0] : text[1]] = False
    keys = allowed.nonzero().squeeze(1)
    order = torch.rand(batch, h, n_q, keys.numel(), generator=g).argsort(-1)[..., :n_cols]
    columns = keys[order]
    if sort:
        columns = columns.sort(-1).values
    low = n_cols // 2 if min_count is None else min_count
    counts = torch.randint(low, n_cols + 1, (batch, h, n_q), generator=g)
    columns = torch.where(torch.arange(n_cols) < counts.unsqueeze(-1), columns, GARBAGE)
    return columns.int().to(DEVICE), counts.int().to(DEVICE)


def _config(block_m=64, block_n=64):
    return ColumnKernelConfig(block_m=block_m, block_n=block_n, num_warps=4, num_stages=1)


def _run_kernel(*args, **kwargs):
    with poisoned_outputs() as poisoned:
        result = column_sparse_attention(*args, **kwargs)
    assert poisoned, "the launcher no longer allocates through torch.empty: update the poisoning here"
    return result


def _check(q, k, v, columns, counts, *, q_block, config=None, **kw):
    """Kernel o and lse held to twice the reference's own error against float64; rows without a
    live key exactly 0 with lse -inf. Returns (o, lse)."""
    kw = dict(kw, q_block=q_block, return_lse=True)
    out, lse = _run_kernel(q, k, v, columns, counts, config=config, **kw)
    golden, golden_lse = column_sparse_attention_reference(q.double(), k.double(), v.double(), columns, counts, **kw)
    eager, eager_lse = column_sparse_attention_reference(q, k, v, columns, counts, **kw)
    if q.dtype == torch.bfloat16 and DEVICE == "cpu":  # the interpreter truncates: see the module docstring
        upcast = (t.float() for t in (q, k, v))
        eager = truncate_to_bf16(column_sparse_attention_reference(*upcast, columns, counts, **kw)[0])

    assert out.shape == q.shape and out.dtype == q.dtype
    assert lse.shape == q.shape[:3] and lse.dtype == torch.float32
    assert torch.isfinite(out).all(), "non-finite output (NaN means an element was never written)"
    assert not lse.isnan().any(), "NaN log-sum-exp (an element was never written)"

    empty = torch.isneginf(golden_lse)
    assert torch.equal(torch.isneginf(lse), empty), "lse must be -inf exactly on the rows without a live key"
    assert (out[empty] == 0).all(), "rows without a live key must be exactly 0"

    err, eager_err = rel_err(out, golden), rel_err(eager, golden)
    budget = max(2 * eager_err, FLOOR[q.dtype])
    assert err <= budget, f"kernel error {err:.3g} > budget {budget:.3g} (reference's own error {eager_err:.3g})"
    live = ~empty
    lse_err = (lse[live].double() - golden_lse[live].double()).abs().max().item()
    eager_lse_err = (eager_lse[live].double() - golden_lse[live].double()).abs().max().item()
    assert lse_err <= max(2 * eager_lse_err, LSE_FLOOR), f"lse error {lse_err:.3g}"
    return out, lse


# ---------------------------------------------------------------------------------------------- shapes, lists
@pytest.mark.parametrize(("seq_len", "head_dim"), [(217, 64), (300, 128)])
def test_ragged_lengths_shared_lists(seq_len, head_dim):
    q, k, v = qkv(B, 2, seq_len, head_dim, seed=seq_len)
    columns, counts = _columns(1, 2, seq_len, 64, 100, seed=seq_len)
    _check(q, k, v, columns, counts, q_block=64)


def test_per_batch_lists():
    q, k, v = qkv(B, 2, 217, 64, seed=1)
    columns, counts = _columns(B, 2, 217, 64, 80, seed=1)
    out, _ = _check(q, k, v, columns, counts, q_block=64, config=_config(32, 32))
    # The two batch elements really use their own lists: batch 0's on both would be far off.
    first = column_sparse_attention_reference(q, k, v, columns[:1], counts[:1], q_block=64)
    assert rel_err(first[1], out[1]) > 0.05


@pytest.mark.parametrize("text", [(0, 40), (217 - 45, 217)], ids=["text-first", "text-last"])
def test_text_ranges(text):
    q, k, v = qkv(B, 2, 217, 64, seed=2)
    columns, counts = _columns(1, 2, 217, 64, 70, text=text, seed=2)
    _check(q, k, v, columns, counts, q_block=64, text=text)


def test_unsorted_lists_give_the_same_attention():
    q, k, v = qkv(B, 2, 217, 128, seed=3)
    columns, counts = _columns(B, 2, 217, 64, 90, seed=3, sort=False)
    out, lse = _check(q, k, v, columns, counts, q_block=64)
    live = torch.arange(90, device=DEVICE) < counts.unsqueeze(-1)
    ordered = torch.where(live, columns, GARBAGE).sort(-1).values  # GARBAGE sorts past the live entries
    out_sorted, lse_sorted = _run_kernel(q, k, v, ordered, counts, q_block=64, return_lse=True)
    torch.testing.assert_close(out_sorted, out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lse_sorted, lse, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("q_block", "config"),
    [(192, None), (32, _config(32, 16)), (128, _config(64, 32))],
    ids=["voxel-192-default", "32-tiles32x16", "128-two-tiles-a-block"],
)
def test_block_and_tile_sizes(q_block, config):
    q, k, v = qkv(1, 2, 300, 64, seed=q_block)
    columns, counts = _columns(1, 2, 300, q_block, 50, seed=q_block, min_count=0)
    _check(q, k, v, columns, counts, q_block=q_block, config=config)


def test_all_video_columns_plus_text_is_dense_attention():
    s, text = 217, (0, 37)
    q, k, v = qkv(B, 2, s, 64, seed=4)
    n_q = -(-s // 64)
    columns = torch.arange(text[1], s, dtype=torch.int32, device=DEVICE).expand(1, 2, n_q, -1).contiguous()
    counts = torch.full((1, 2, n_q), s - text[1], dtype=torch.int32, device=DEVICE)
    out = _run_kernel(q, k, v, columns, counts, q_block=64, text=text)
    golden = F.scaled_dot_product_attention(q.double(), k.double(), v.double())
    sdpa_err = rel_err(F.scaled_dot_product_attention(q, k, v), golden)
    assert rel_err(out, golden) <= max(2 * sdpa_err, FLOOR[torch.float32])


def test_text_only_with_empty_lists():
    q, k, v = qkv(1, 2, 105, 64, seed=5)
    columns = torch.zeros(1, 2, 2, 0, dtype=torch.int32, device=DEVICE)
    counts = torch.zeros(1, 2, 2, dtype=torch.int32, device=DEVICE)
    out = _run_kernel(q, k, v, columns, counts, q_block=64, text=(60, 105))
    golden = F.scaled_dot_product_attention(q.double(), k[:, :, 60:].double(), v[:, :, 60:].double())
    assert rel_err(out, golden) <= FLOOR[torch.float32]


# ---------------------------------------------------------------------------------------------- padding, empty rows
def test_key_padding_of_listed_and_text_keys():
    text = (217 - 50, 217)
    q, k, v = qkv(B, 2, 217, 64, seed=6)
    padding = torch.rand(B, 217, generator=torch.Generator().manual_seed(6)).to(DEVICE) < 0.3
    columns, counts = _columns(B, 2, 217, 64, 80, text=text, seed=6)
    _check(q, k, v, columns, counts, q_block=64, text=text, key_padding_mask=padding)


def test_rows_without_a_live_key():
    # Query block 0 lists nothing and batch 0 pads all its text; block 2 lists only padded keys.
    text = (0, 30)
    q, k, v = qkv(B, 2, 217, 64, seed=7)
    columns, counts = _columns(1, 2, 217, 64, 40, text=text, seed=7)
    counts[:, :, 0] = 0
    padding = torch.zeros(B, 217, dtype=torch.bool, device=DEVICE)
    padding[0, :30] = True
    padding[:, columns[0, :, 2, :20].flatten().long()] = True
    counts[:, :, 2] = 20
    out, lse = _check(q, k, v, columns, counts, q_block=64, text=text, key_padding_mask=padding)
    assert (out[0, :, :64] == 0).all() and torch.isneginf(lse[0, :, :64]).all()
    assert (out[0, :, 128:192] == 0).all() and torch.isneginf(lse[0, :, 128:192]).all()
    assert torch.isfinite(lse[1]).all() and torch.isfinite(lse[0, :, 64:128]).all()


def test_counts_past_the_list_length_read_only_the_list():
    q, k, v = qkv(1, 2, 105, 64, seed=8)
    columns, counts = _columns(1, 2, 105, 64, 30, seed=8, min_count=30)
    out = _run_kernel(q, k, v, columns, counts + 1000, q_block=64)
    torch.testing.assert_close(out, column_sparse_attention_reference(q, k, v, columns, counts, q_block=64))


# ---------------------------------------------------------------------------------------------- strides, dtypes
@pytest.mark.parametrize("layout", ["qkv", "bshd", "dstride"])
def test_strided_inputs(layout):
    q, k, v = qkv(B, 2, 217, 64, layout=layout, seed=9)
    assert not (q.is_contiguous() or k.is_contiguous() or v.is_contiguous())
    columns, counts = _columns(B, 2, 217, 64, 60, text=(0, 20), seed=9)
    _check(q, k, v, columns, counts, q_block=64, text=(0, 20))


def test_strided_lists():
    q, k, v = qkv(1, 2, 217, 64, seed=10)
    columns, counts = _columns(1, 2, 217, 64, 60, seed=10)
    columns = columns.transpose(-1, -2).contiguous().transpose(-1, -2)  # last dim strided
    counts = counts.transpose(1, 2).contiguous().transpose(1, 2)
    _check(q, k, v, columns, counts, q_block=64)


@pytest.mark.parametrize(
    ("dtype", "head_dim", "padded"), [(torch.float16, 64, True), (torch.bfloat16, 128, False), (torch.bfloat16, 64, True)]
)
def test_half_precision(dtype, head_dim, padded):
    q, k, v = qkv(B, 2, 217, head_dim, dtype=dtype, seed=11)
    padding = torch.rand(B, 217, generator=torch.Generator().manual_seed(11)).to(DEVICE) < 0.3 if padded else None
    columns, counts = _columns(1, 2, 217, 64, 80, text=(0, 40), seed=11)
    _check(q, k, v, columns, counts, q_block=64, text=(0, 40), key_padding_mask=padding)


@pytest.mark.parametrize("scale", [1.0, 0.05], ids=["peaky", "flat"])
def test_custom_scale(scale):
    q, k, v = qkv(1, 2, 217, 64, seed=12)
    columns, counts = _columns(1, 2, 217, 64, 90, seed=12)
    out, _ = _check(q, k, v, columns, counts, q_block=64, scale=scale)
    assert torch.equal(out, _run_kernel(q, k, v, columns, counts, q_block=64, scale=scale))  # lse changes nothing


# ---------------------------------------------------------------------------------------------- bad input
def _bad_input_cases():
    q, k, v = qkv(B, 2, 217, 64)
    columns, counts = _columns(1, 2, 217, 64, 20)
    cases = {
        "rank": ((q[0], k, v, columns, counts), {}, re.escape("q must be a 4-D tensor [B, H, S, D]; got (2, 217, 64)")),
        "shapes": ((q, k[:, :, :216], v, columns, counts), {}, re.escape("q, k and v must have the same shape")),
        "dtypes": ((q, k, v.half(), columns, counts), {}, re.escape("q, k and v must share a dtype")),
        "float64": (
            (q.double(), k.double(), v.double(), columns, counts), {}, re.escape("dtype torch.float64 is not supported")
        ),
        "head-dim": (
            tuple(t[..., :48] for t in (q, k, v)) + (columns, counts), {},
            re.escape("head dim 48 is not supported by the Triton kernel (supported: (64, 128)); use "
                      "vidsparse.kernels.column_sparse_attention_reference"),
        ),
        "q-block": ((q, k, v, columns, counts), {"q_block": 40}, re.escape("q_block must be a positive multiple of 16")),
        "columns-shape": (
            (q, k, v, columns[:, :, :3], counts), {},
            re.escape("columns must be a tensor [B', H, nQ, K] = [1 or 2, 2, 4, K] (nQ = ceil(S=217 / q_block=64)); "
                      "got (1, 2, 3, 20)"),
        ),
        "columns-batch": (
            (q, k, v, columns.expand(3, -1, -1, -1), counts), {}, re.escape("columns must be a tensor [B', H, nQ, K]")
        ),
        "counts-shape": (
            (q, k, v, columns, counts[..., :3]), {},
            re.escape("counts must be a tensor [B', H, nQ] = [1, 2, 4], matching columns; got (1, 2, 3)"),
        ),
        "columns-dtype": ((q, k, v, columns.long(), counts), {}, re.escape("columns must be int32; got torch.int64")),
        "counts-dtype": ((q, k, v, columns, counts.float()), {}, re.escape("counts must be int32; got torch.float32")),
        "columns-device": ((q, k, v, columns.to("meta"), counts), {}, rf"columns is on meta, q on {DEVICE}"),
        "text-range": (
            (q, k, v, columns, counts), {"text": (200, 230)},
            re.escape("text must be a non-empty token range (start, stop) with 0 <= start < stop <= S=217; got (200, 230)"),
        ),
        "text-type": ((q, k, v, columns, counts), {"text": 5}, re.escape("text must be a (start, stop) token range")),
        "padding-shape": (
            (q, k, v, columns, counts), {"key_padding_mask": torch.zeros(B, 218, dtype=torch.bool, device=DEVICE)},
            re.escape("key_padding_mask must be a bool tensor [B, S] = [2, 217]"),
        ),
        "scale": ((q, k, v, columns, counts), {"scale": 0.0}, re.escape("scale must be positive; got 0.0")),
        "tiles": (
            (q, k, v, columns, counts), {"config": _config(128, 64)},
            re.escape("config block_m=128 must divide q_block=64"),
        ),
    }
    return [pytest.param(*case, id=name) for name, case in cases.items()]


@pytest.mark.parametrize(("args", "kwargs", "message"), _bad_input_cases())
def test_bad_input(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        column_sparse_attention(*args, **{"q_block": 64, **kwargs})


def test_reference_checks_the_live_indices():
    q, k, v = qkv(1, 2, 105, 64)
    columns, counts = _columns(1, 2, 105, 64, 20, min_count=20)
    columns[0, 1, 1, 3] = 105
    with pytest.raises(ValueError, match=re.escape("every live column index must be in [0, S=105)")):
        column_sparse_attention_reference(q, k, v, columns, counts, q_block=64)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"block_m": 48}, r"block_m must be a power of two >= 16"),
        ({"block_n": 8}, r"block_n must be a power of two >= 16"),
        ({"num_warps": 3}, r"num_warps must be one of 1, 2, 4, 8, 16; got 3"),
        ({"num_stages": 0}, r"num_stages must be an int >= 1; got 0"),
    ],
)
def test_kernel_config_is_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ColumnKernelConfig(**kwargs)


# ---------------------------------------------------------------------------------------------- topk_columns
def _full_lse(q, k, v, **kw):
    s = q.shape[2]
    everything = torch.arange(s, dtype=torch.int32, device=DEVICE).expand(1, q.shape[1], 1, -1).contiguous()
    counts = torch.full((1, q.shape[1], 1), s, dtype=torch.int32, device=DEVICE)
    return column_sparse_attention_reference(q, k, v, everything, counts, q_block=((s + 15) // 16) * 16,
                                             return_lse=True, **kw)[1]


def _planted(s=217, h=2, d=64, planted=(5, 77, 150, 201), seed=13):
    """Head 1's queries all point along one direction that only the planted keys share strongly."""
    q, k, v = qkv(B, h, s, d, seed=seed)
    direction = torch.randn(d, generator=torch.Generator().manual_seed(seed)).to(DEVICE)
    direction /= direction.norm()
    q[:, 1] += 8 * direction
    k[:, 1, list(planted)] += 8 * direction
    return q, k, v, list(planted)


def test_topk_finds_planted_columns():
    q, k, v, planted = _planted()
    lse = _full_lse(q, k, v)
    columns, counts = topk_columns(q, k, lse, q_block=64, count=len(planted))
    assert columns.shape == (B, 2, 4, len(planted)) and columns.dtype == counts.dtype == torch.int32
    assert (counts == len(planted)).all()
    assert (columns[:, 1] == torch.tensor(planted, dtype=torch.int32, device=DEVICE)).all()
    assert (columns.diff(dim=-1) > 0).all(), "columns must be ascending"


def test_topk_mass_matches_exact_probabilities():
    # With every row of each block sampled, the chosen columns are the top of the exact summed attention.
    q, k, v = qkv(1, 2, 112, 64, seed=14)
    lse = _full_lse(q, k, v)
    columns, counts = topk_columns(q, k, lse, q_block=16, count=10, rows_per_block=16)
    probs = torch.softmax(q.double() @ k.double().transpose(-1, -2) / 8, -1)  # [1, H, S, S], scale 1/sqrt(64)
    mass = probs.view(1, 2, 7, 16, 112).sum(3)
    assert torch.equal(columns.long(), mass.topk(10, -1).indices.sort(-1).values)
    assert (counts == 10).all()


def test_topk_leaves_out_text_and_padding():
    q, k, v, planted = _planted()
    padding = torch.zeros(B, 217, dtype=torch.bool, device=DEVICE)
    padding[0, planted[0]] = True
    text = (190, 217)  # holds the planted key 201
    lse = _full_lse(q, k, v, key_padding_mask=padding)
    columns, counts = topk_columns(q, k, lse, q_block=64, count=20, text=text, key_padding_mask=padding)
    live = torch.arange(20, device=DEVICE) < counts.unsqueeze(-1)
    chosen = columns[live]
    assert ((chosen < 190)).all(), "text keys are never chosen"
    assert not (columns[0][live[0]] == planted[0]).any(), "padded keys are never chosen"
    assert (columns[1, 1] == planted[0]).any(dim=-1).all(), "the planted key unpadded in batch 1 is chosen"
    assert columns.shape[-1] == 20 and (counts == 20).all()


@pytest.mark.parametrize("text", [(0, 24), (217 - 24, 217)], ids=["text-first", "text-last"])
def test_topk_never_lists_a_text_key_even_the_most_attended(text):
    """Every text key, its last one included, draws far more attention than any video key: none is listed."""
    q, k, _ = qkv(B, 2, 217, 64, seed=19)
    direction = torch.randn(64, generator=torch.Generator().manual_seed(19)).to(DEVICE)
    direction /= direction.norm()
    q += 8 * direction
    k[:, :, text[0] : text[1]] += 8 * direction
    k[:, :, text[1] - 1] += 4 * direction  # the last text key the most attractive of all
    lse = _full_lse(q, k, k)
    video = 217 - (text[1] - text[0])
    columns, counts = topk_columns(q, k, lse, q_block=64, count=video, text=text)  # room for every video key
    assert (counts == video).all()
    listed = columns[torch.arange(video, device=DEVICE) < counts.unsqueeze(-1)]
    assert not ((listed >= text[0]) & (listed < text[1])).any(), "a text key was listed"
    everything = torch.arange(217, device=DEVICE)
    video_keys = everything[(everything < text[0]) | (everything >= text[1])].int()
    assert torch.equal(columns, video_keys.expand_as(columns))


def test_topk_counts_fall_short_where_padding_leaves_fewer_keys():
    q, k, v = qkv(B, 2, 105, 64, seed=15)
    padding = torch.ones(B, 105, dtype=torch.bool, device=DEVICE)
    padding[0, :40] = False  # batch 0 keeps 40 keys, batch 1 keeps 10
    padding[1, 50:60] = False
    lse = _full_lse(q, k, v, key_padding_mask=padding)
    columns, counts = topk_columns(q, k, lse, q_block=64, fraction=0.25, key_padding_mask=padding)  # K = 26
    assert columns.shape[-1] == 26
    assert (counts[0] == 26).all() and (counts[1] == 10).all()
    assert torch.equal(columns[1, :, :, :10], torch.arange(50, 60, dtype=torch.int32, device=DEVICE).expand(2, 2, 10))
    assert (columns[1, :, :, 10:] == 0).all()


def test_topk_chunking_and_seed():
    q, k, v = qkv(B, 3, 217, 64, seed=16)
    lse = _full_lse(q, k, v)
    whole = topk_columns(q, k, lse, q_block=64, fraction=0.1)
    chunked = topk_columns(q, k, lse, q_block=64, fraction=0.1, max_elements=1)  # one head and query block at a time
    for a, b in zip(whole, chunked):
        assert torch.equal(a, b)
    assert torch.equal(topk_columns(q, k, lse, q_block=64, fraction=0.1)[0], whole[0])  # deterministic
    assert not torch.equal(topk_columns(q, k, lse, q_block=64, fraction=0.1, rows_per_block=4, seed=1)[0], whole[0])


@pytest.mark.parametrize(
    ("dtype", "head_dim", "rows_per_block", "splits"),
    [(torch.float32, 64, 16, 1), (torch.bfloat16, 128, 10, 1), (torch.float16, 64, 3, 3)],
)
def test_mass_kernel_matches_pytorch(dtype, head_dim, rows_per_block, splits, monkeypatch):
    from vidsparse.kernels import column_sparse as cs

    monkeypatch.setattr(cs, "_mass_key_splits", lambda *a: splits)  # 3: key ranges 0-127, 128-255, 256-299
    q, k, v = qkv(B, 2, 300, head_dim, dtype=dtype, seed=18)
    lse = _full_lse(q.float(), k.float(), v.float())
    rows = cs._sample_rows(300, 64, rows_per_block, 0, DEVICE)
    with poisoned_outputs():
        mass = cs._block_mass(q, k, lse, rows, 1, 5, 0.125)  # query blocks 1..4 of 5
    expected = cs._block_mass_reference(q.double(), k.double(), lse.double(), rows, 1, 5, 0.125)
    eager = cs._block_mass_reference(q, k, lse, rows, 1, 5, 0.125)  # the scores rounded to the dtype
    assert mass.shape == (B, 2, 4, 300) and torch.isfinite(mass).all()
    assert rel_err(mass, expected) <= max(2 * rel_err(eager, expected), 1e-5)


@pytest.mark.parametrize(("dtype", "head_dim", "rows_per_block", "padded"),
                         [(torch.float32, 64, 16, True), (torch.bfloat16, 128, 5, True), (torch.float16, 64, 8, False)])
def test_sampled_lse_is_the_full_attention_lse_of_the_sampled_rows(dtype, head_dim, rows_per_block, padded,
                                                                   monkeypatch):
    """`topk_columns(q, k, None, ...)` takes the sampled rows' log-sum-exp from its own QK pass (kernel and PyTorch
    path), padding left out: that of full attention at those rows, -inf at every other row."""
    from vidsparse.kernels import column_sparse as cs

    s = 217
    q, k, v = qkv(B, 2, s, head_dim, dtype=dtype, seed=21)
    padding = None
    if padded:
        padding = torch.zeros(B, s, dtype=torch.bool, device=DEVICE)
        padding[1, -40:] = True
    rows = cs._sample_rows(s, 64, rows_per_block, 0, DEVICE)
    golden = _full_lse(q.double(), k.double(), v.double(), key_padding_mask=padding)
    eager = _full_lse(q, k, v, key_padding_mask=padding)
    sampled = rows.reshape(-1).unique()
    others = torch.ones(s, dtype=torch.bool, device=DEVICE)
    others[sampled] = False
    for kernel in (True, False):
        monkeypatch.setattr(cs, "_mass_kernel_runs", lambda *a, kernel=kernel: kernel)
        with poisoned_outputs():
            lse = cs.sampled_lse(q, k, rows, padding, head_dim**-0.5)
        assert lse.dtype == torch.float32 and torch.isneginf(lse[:, :, others]).all()
        err = (lse[:, :, sampled].double() - golden[:, :, sampled]).abs().max().item()
        eager_err = (eager[:, :, sampled].double() - golden[:, :, sampled]).abs().max().item()
        assert err <= max(2 * eager_err, LSE_FLOOR), (kernel, err, eager_err)


def test_topk_from_its_own_lse_picks_what_the_full_lse_picks():
    q, k, v, planted = _planted()
    padding = torch.zeros(B, 217, dtype=torch.bool, device=DEVICE)
    padding[0, 200:] = True
    lse = _full_lse(q, k, v, key_padding_mask=padding)
    given = topk_columns(q, k, lse, q_block=64, count=30, text=(0, 3), key_padding_mask=padding)
    own = topk_columns(q, k, None, q_block=64, count=30, text=(0, 3), key_padding_mask=padding)
    for a, b in zip(given, own):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------- packed lists


@pytest.mark.parametrize("s", [217, 40_000, 65_536, 65_537, 200_000])
def test_packed_lists_round_trip(s):
    """pack_columns then unpack_columns gives ascending lists back (entries past a count 0), in half the bytes;
    W = ceil(S / 2^16) - 1 wrap positions, each the number of live entries below its multiple of 2^16."""
    from vidsparse.core.columns import pack_columns, packed_wraps, unpack_columns

    columns, counts = _columns(B, 3, s, 64 if s < 1000 else 8192, 40, min_count=0, seed=s % 7)
    columns = torch.where(torch.arange(40, device=DEVICE) < counts.unsqueeze(-1), columns, 0)
    low, wraps = pack_columns(columns, counts, s)
    assert low.dtype == torch.int16 and low.shape == columns.shape
    assert wraps.shape == (*counts.shape, packed_wraps(s)) and packed_wraps(s) == -(-s // 65536) - 1
    assert torch.equal(unpack_columns(low, wraps, counts), columns)
    live = torch.arange(40, device=DEVICE) < counts.unsqueeze(-1)
    for w in range(wraps.shape[-1]):
        assert torch.equal(wraps[..., w], (live & (columns < (w + 1) * 65536)).sum(-1, dtype=torch.int32))


def test_packed_lists_are_validated():
    from vidsparse.core.columns import pack_columns

    q, k, v = qkv(1, 2, 100, 64)
    columns, counts = _columns(1, 2, 100, 64, 8)
    low, wraps = pack_columns(torch.where(columns == GARBAGE, 0, columns), counts, 100)
    with pytest.raises(ValueError, match="pass their wraps too"):
        column_sparse_attention(q, k, v, low, counts, q_block=64)
    with pytest.raises(ValueError, match=re.escape("wraps must be int32 [B', H, nQ, W] = [1, 2, 2, 0]")):
        column_sparse_attention(q, k, v, low, counts, q_block=64, wraps=torch.zeros(1, 2, 2, 1, dtype=torch.int32))
    with pytest.raises(ValueError, match="packed columns .* must be int16"):
        column_sparse_attention(q, k, v, columns, counts, q_block=64, wraps=wraps)
    with pytest.raises(ValueError, match="must be int32"):
        pack_columns(columns.long(), counts, 100)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_lists_give_the_same_attention(dtype):
    """The kernel and the reference read packed lists as the int32 lists they pack: the same outputs, bit for bit."""
    from vidsparse.core.columns import pack_columns

    s = 217
    q, k, v = qkv(B, 2, s, 64, dtype=dtype)
    columns, counts = _columns(B, 2, s, 64, 24, text=(190, 217))
    low, wraps = pack_columns(torch.where(columns == GARBAGE, 0, columns), counts, s)
    plain = _check(q, k, v, columns, counts, q_block=64, text=(190, 217))
    packed = _run_kernel(q, k, v, low, counts, q_block=64, text=(190, 217), return_lse=True, wraps=wraps)
    assert all(torch.equal(a, b) for a, b in zip(plain, packed))
    ref = column_sparse_attention_reference(q, k, v, columns, counts, q_block=64, text=(190, 217), return_lse=True)
    ref_packed = column_sparse_attention_reference(q, k, v, low, counts, q_block=64, text=(190, 217),
                                                   return_lse=True, wraps=wraps)
    assert all(torch.equal(a, b) for a, b in zip(ref, ref_packed))


def test_packed_lists_past_two_to_the_16_keys():
    """65,600 keys (one wrap): lists that cross 2^16 decode in the kernel to the int32 lists' attention, with a
    ragged last tile whose slots past the count must not decode past S."""
    from vidsparse.core.columns import pack_columns

    s, n_cols = 65_600, 40
    q, k, v = qkv(1, 1, s, 64)
    g = torch.Generator().manual_seed(0)
    n_q = -(-s // 1024)
    # half the columns of each block below 2^16, half above it; counts ragged
    below = torch.rand(1, 1, n_q, 65_536, generator=g).argsort(-1)[..., : n_cols // 2]
    above = 65_536 + torch.rand(1, 1, n_q, s - 65_536, generator=g).argsort(-1)[..., : n_cols // 2]
    columns = torch.cat([below, above], -1).sort(-1).values.int().to(DEVICE)
    counts = torch.randint(n_cols // 2 - 3, n_cols + 1, (1, 1, n_q), generator=g).int().to(DEVICE)
    columns = torch.where(torch.arange(n_cols, device=DEVICE) < counts.unsqueeze(-1), columns, 0)
    low, wraps = pack_columns(columns, counts, s)
    assert wraps.shape[-1] == 1 and (wraps[..., 0] < counts).any()
    kw = dict(q_block=1024, return_lse=True, config=_config(64, 32))
    plain = _run_kernel(q, k, v, columns, counts, **kw)
    packed = _run_kernel(q, k, v, low, counts, wraps=wraps, **kw)
    assert all(torch.equal(a, b) for a, b in zip(plain, packed))


@pytest.mark.gpu
def test_gpu_packed_lists_at_the_720p_shape():
    """Two heads at HunyuanVideo 720p's length (119,312 keys, one wrap), 7% of the keys a block of 128, bf16, the
    text at the end and padded keys: packed lists give the int32 lists' outputs and lse, bit for bit."""
    from vidsparse.core.columns import pack_columns

    s, n_cols, text = 119_312, 8_334, (119_056, 119_312)
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, 2, s, 128, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    n_q = -(-s // 128)
    columns = torch.rand(1, 2, n_q, text[0], device="cuda", generator=g).topk(n_cols, -1).indices.sort(-1).values.int()
    counts = torch.randint(n_cols - 100, n_cols + 1, (1, 2, n_q), device="cuda", generator=g).int()
    columns = torch.where(torch.arange(n_cols, device="cuda") < counts.unsqueeze(-1), columns, 0)
    padding = torch.zeros(1, s, dtype=torch.bool, device="cuda")
    padding[0, -40:] = True
    low, wraps = pack_columns(columns, counts, s)
    kw = dict(q_block=128, text=text, key_padding_mask=padding, return_lse=True)
    plain = column_sparse_attention(q, k, v, columns, counts, **kw)
    packed = column_sparse_attention(q, k, v, low, counts, wraps=wraps, **kw)
    assert all(torch.equal(a, b) for a, b in zip(plain, packed))


def _select_both(mass, banned, count):
    from vidsparse.kernels.column_sparse import _top_columns

    return (_top_columns(mass.clone(), banned, count, kernel=True),
            _top_columns(mass.clone(), banned, count, kernel=False))


@pytest.mark.parametrize(("s", "count"), [(300, 17), (217, 1), (130, 130), (77, 64)])
def test_selection_kernel_picks_what_topk_picks(s, count):
    """Distinct masses: the radix select and torch.topk plus a sort give the same lists, with banned keys, zero
    masses (live, and the smallest), rows where banning leaves fewer than K, and a row with every key banned."""
    g = torch.Generator().manual_seed(s)
    mass = torch.rand(2, 3, 4, s, generator=g, dtype=torch.float64).float().to(DEVICE)
    mass[0, 0, 0, :7] = 0.0
    mass[1, 2, 3] *= 1e-30  # tiny masses order by their bits too
    banned = torch.zeros(2, s, dtype=torch.bool, device=DEVICE)
    banned[1, ::3] = True
    banned[0, -5:] = True
    (cols, counts), (want_cols, want_counts) = _select_both(mass, banned, count)
    assert torch.equal(counts, want_counts) and torch.equal(cols, want_cols)
    assert counts[1].max() <= s - len(range(0, s, 3))
    everything = torch.ones(2, s, dtype=torch.bool, device=DEVICE)
    (cols, counts), _ = _select_both(mass, everything, count)
    assert counts.eq(0).all() and cols.eq(0).all()


def test_topk_keeps_torch_topk_where_the_selection_kernel_fails(monkeypatch, caplog):
    """A selection kernel that does not build (or disagrees) is found by a one-off check: topk_columns then picks
    with torch.topk, what the kernel would have picked, and says so once in the log."""
    from vidsparse.kernels import column_sparse as cs

    q, k, v, planted = _planted(d=64)
    lse = _full_lse(q, k, v)
    want = topk_columns(q, k, lse, q_block=64, count=30, text=(0, 3))

    def broken(*args, **kwargs):
        raise RuntimeError("no histogram on this triton")

    monkeypatch.setattr(cs, "_select_columns", broken)
    cs._selection_kernel_works.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="vidsparse.kernels.column_sparse"):
            for _ in range(2):
                got = topk_columns(q, k, lse, q_block=64, count=30, text=(0, 3))
                assert all(torch.equal(a, b) for a, b in zip(got, want))
        assert sum("does not build here (RuntimeError: no histogram" in r.message for r in caplog.records) == 1
    finally:
        cs._selection_kernel_works.cache_clear()


def test_selection_kernel_breaks_ties_at_the_lowest_keys():
    """Masses with many ties: the list holds every key above the K-th largest mass, then the lowest-numbered keys
    equal to it, ascending; entries past a count are 0."""
    s, count = 200, 50
    g = torch.Generator().manual_seed(0)
    mass = torch.randint(0, 4, (1, 2, 3, s), generator=g).float().to(DEVICE)
    banned = torch.zeros(1, s, dtype=torch.bool, device=DEVICE)
    banned[0, 10:20] = True
    (cols, counts), _ = _select_both(mass, banned, count)
    assert counts.eq(count).all()
    for row, got in zip(mass.view(-1, s), cols.view(-1, count)):
        live = row.masked_fill(banned[0], -1)
        kth = live.sort(descending=True).values[count - 1]
        above = (live > kth).nonzero().squeeze(1)
        ties = (live == kth).nonzero().squeeze(1)[: count - len(above)]
        assert got.tolist() == sorted(above.tolist() + ties.tolist())


@pytest.mark.gpu
def test_gpu_selection_kernel_at_the_720p_shape():
    """Two heads of HunyuanVideo 720p's masses (932 query blocks x 119,312 keys, K = 8,334, the text banned): the
    kernel takes the same masses as torch.topk; the lists agree wherever no two masses tie at the K-th largest."""
    s, count, n_q = 119_312, 8_334, 932
    g = torch.Generator(device="cuda").manual_seed(0)
    mass = torch.randn(1, 2, n_q, s, device="cuda", generator=g).mul_(3).exp_()  # heavy-tailed, as attention mass
    banned = torch.zeros(1, s, dtype=torch.bool, device="cuda")
    banned[0, -256:] = True
    (cols, counts), (want_cols, want_counts) = _select_both(mass, banned, count)
    assert torch.equal(counts, want_counts) and counts.eq(count).all()
    assert (cols.diff(dim=-1) > 0).all() and (cols < s - 256).all()
    live = mass.masked_fill(banned[:, None, None, :], -1.0)
    got, want = (live.gather(-1, c.long()).sort(-1).values for c in (cols, want_cols))
    assert torch.equal(got, want)
    assert (cols != want_cols).any(-1).float().mean() < 0.01


@pytest.mark.parametrize("text", [None, (0, 5), (190, 217), (30, 64)])
def test_column_bitmask_sets_the_live_columns_and_the_text(text):
    from vidsparse.kernels.reference import bitmask_keys

    s = 217
    columns, counts = _columns(B, 3, s, 64, 40, text=text, seed=5, min_count=0)
    columns[0, 0, 0, :2] = torch.tensor([31, 63], dtype=torch.int32)  # bit 31 of a word: its sign bit
    counts[0, 0, 0] = max(int(counts[0, 0, 0]), 2)
    words = column_bitmask(columns, counts, s, text)
    assert words.dtype == torch.int32 and words.shape == (B, 3, 4, 7)
    keys = bitmask_keys(words, s)
    for i in range(B):
        for j in range(3):
            for n in range(4):
                want = set(columns[i, j, n, : counts[i, j, n]].tolist())
                if text:
                    want |= set(range(*text))
                assert set(keys[i, j, n].nonzero().squeeze(1).tolist()) == want
    assert torch.equal(words[0, 0, 0, 0] < 0, torch.tensor(True, device=DEVICE))  # bit 31 set


def test_topk_without_the_kernel_picks_the_same(monkeypatch):
    from vidsparse.kernels import column_sparse as cs

    q, k, v, planted = _planted(d=64)
    lse = _full_lse(q, k, v)
    with_kernel = topk_columns(q, k, lse, q_block=64, count=30, text=(0, 3))
    monkeypatch.setattr(cs, "_mass_kernel_runs", lambda *a: False)
    for a, b in zip(with_kernel, topk_columns(q, k, lse, q_block=64, count=30, text=(0, 3))):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize(("s", "q_block", "rows_per_block", "text"), [(217, 64, 16, (190, 217)), (77, 16, 8, None)])
@pytest.mark.parametrize("chunks", ["one", "head pairs", "block pairs"])
def test_attention_topk_and_rest_equals_the_refresh_in_four_calls(dtype, s, q_block, rows_per_block, text, chunks,
                                                                  monkeypatch):
    """The CPU refresh in one pass gives what the reference backend's refresh computes in four calls: full attention
    with its lse, topk_columns (over sampled rows, some repeated in a ragged last block), the column attention and the
    subtraction, here of float64 references. bf16 scores in float32 where topk_columns multiplies in bf16, so there
    its columns hold at least their exact mass (to rounding) instead of being equal, and the rest is checked against
    the columns it chose."""
    from vidsparse.kernels import attention_topk_and_rest, column_sparse, subtract_attention

    # chunks of every (batch, head) and query block at once, of 2 (batch, head) pairs x 1 block, or of all pairs x 2
    piece = {"one": None, "head pairs": 2 * q_block * s, "block pairs": B * 3 * 2 * q_block * s}[chunks]
    if piece is not None:
        monkeypatch.setattr(column_sparse, "_ROWS_PIECE", piece)
    q, k, v = (t.cpu().to(dtype) for t in qkv(B, 3, s, 64, seed=19))
    padding = torch.zeros(B, s, dtype=torch.bool)
    padding[1, :5] = True
    padding[0, -3:] = True
    for key_padding, fraction in ((None, 0.2), (padding, 0.2), (padding, 0.99)):  # 0.99: fewer live keys than slots
        kw = dict(q_block=q_block, fraction=fraction, rows_per_block=rows_per_block, text=text,
                  key_padding_mask=key_padding)
        out, lse, columns, counts, o_rest, lse_rest = attention_topk_and_rest(q, k, v, **kw)
        assert (counts < columns.shape[-1]).any() == (fraction == 0.99)
        compute = torch.float64 if dtype == torch.float64 else torch.float32
        everything = torch.arange(s, dtype=torch.int32).expand(1, 3, 1, -1).contiguous()
        expect, expect_lse = column_sparse_attention_reference(
            q.double(), k.double(), v.double(), everything, torch.full((1, 3, 1), s, dtype=torch.int32),
            q_block=((s + 15) // 16) * 16, key_padding_mask=key_padding, return_lse=True)
        assert out.dtype == compute and o_rest.dtype == compute
        assert lse.dtype == torch.float32 and lse_rest.dtype == torch.float32
        torch.testing.assert_close(out.double(), expect, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(lse, expect_lse.float(), atol=1e-5, rtol=1e-5)
        expect_columns, expect_counts = topk_columns(q, k, expect_lse.float(), **kw)
        assert torch.equal(counts, expect_counts)
        if dtype != torch.bfloat16:
            assert torch.equal(columns, expect_columns)
        else:
            scores = q.double() @ k.double().transpose(-1, -2) / 8
            if key_padding is not None:
                scores = scores.masked_fill(key_padding[:, None, None, :], float("-inf"))
            from vidsparse.kernels.column_sparse import _sample_rows

            rows = _sample_rows(s, q_block, rows_per_block, 0, "cpu")
            mass = scores.softmax(-1)[:, :, rows.view(-1)].view(B, 3, *rows.shape, s).sum(3)  # exact, sampled rows
            held = lambda c: mass.gather(-1, c.long()).sum(-1)  # noqa: E731
            assert (held(columns) >= held(expect_columns) * (1 - 1e-2)).all()
        o_k, lse_k = column_sparse_attention_reference(q.double(), k.double(), v.double(), columns, counts,
                                                       q_block=q_block, text=text, key_padding_mask=key_padding,
                                                       return_lse=True)
        expect_rest, expect_lse_rest = subtract_attention(expect, expect_lse, o_k, lse_k)
        # A rest empty in one and not the other holds no more than rounding of the row's mass in the other.
        live, expect_live = torch.isfinite(lse_rest), torch.isfinite(expect_lse_rest)
        assert (o_rest[~live] == 0).all()
        share = lambda l: (l.double() - expect_lse.double()).exp()  # noqa: E731  the rest's share of the mass
        assert (share(lse_rest)[live & ~expect_live] < 1e-5).all()
        assert (share(expect_lse_rest)[expect_live & ~live] < 1e-5).all()
        live &= expect_live
        # The rest's error grows like rounding / its share (1 - r); weighted by the share, as it enters a merge, it
        # is rounding of the whole row.
        weight = share(expect_lse_rest).unsqueeze(-1)
        torch.testing.assert_close((o_rest.double() * weight)[live], (expect_rest * weight)[live], atol=1e-5, rtol=0)
        torch.testing.assert_close(share(lse_rest)[live], share(expect_lse_rest)[live], atol=4e-6, rtol=1e-5)
        held = live & (weight.squeeze(-1) > 0.5)  # a rest that holds half the mass is float32-accurate itself
        torch.testing.assert_close(o_rest.double()[held], expect_rest[held], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(lse_rest.double()[held], expect_lse_rest[held].double(), atol=1e-5, rtol=1e-5)


def test_topk_columns_feed_the_kernel():
    # End to end on a head whose attention sits on 38 planted keys (text aside): the chosen columns
    # run through the kernel within budget and reproduce dense attention, where as many random
    # columns do not.
    text = (0, 30)
    q, k, v, planted = _planted(planted=tuple(range(31, 217, 5)), seed=17)
    lse = _full_lse(q, k, v)
    columns, counts = topk_columns(q, k, lse, q_block=64, count=len(planted), text=text)
    out, _ = _check(q, k, v, columns, counts, q_block=64, text=text)
    dense = F.scaled_dot_product_attention(q, k, v)
    at_random = column_sparse_attention_reference(
        q, k, v, *_columns(B, 2, 217, 64, len(planted), text=text, seed=17, min_count=len(planted)), q_block=64, text=text
    )
    assert rel_err(out[:, 1], dense[:, 1]) < 0.02 < 0.5 < rel_err(at_random[:, 1], dense[:, 1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give exactly one of fraction and count"),
        ({"fraction": 0.1, "count": 3}, "give exactly one of fraction and count"),
        ({"fraction": 1.5}, re.escape("fraction must be in (0, 1]; got 1.5")),
        ({"count": 300}, re.escape("count must be an int in [1, 217] (the video keys); got 300")),
        ({"count": 3, "rows_per_block": 0}, "rows_per_block must be a positive int; got 0"),
        ({"count": 3, "q_block": 20}, "q_block must be a positive multiple of 16"),
        ({"count": 3, "k": "half"}, re.escape("q and k must share shape, dtype and device; got q (1, 2, 217, 64) "
                                              "torch.float32")),
        ({"count": 3, "k": "rank"}, re.escape("k must be a 4-D tensor [B, H, S, D]; got (2, 217, 64)")),
    ],
)
def test_topk_bad_input(kwargs, message):
    q, k, v = qkv(1, 2, 217, 64)
    kwargs = dict(kwargs)
    bad_k = {"half": k.half(), "rank": k[0]}.get(kwargs.pop("k", None), k)
    lse = torch.zeros(1, 2, 217, device=DEVICE)
    with pytest.raises(ValueError, match=message):
        topk_columns(q, bad_k, lse, **{"q_block": 64, **kwargs})
    with pytest.raises(ValueError, match=re.escape("lse must be None or a float tensor [B, H, S] = [1, 2, 217]")):
        topk_columns(q, k, lse[:, :, :5], q_block=64, count=3)


# ---------------------------------------------------------------------------------------------- narrow lists
# A width-1 list once made ptxas crash on the H200 (triton 3.6): Triton specialised the width and the list's
# stride, both 1. The launcher pads such a list; every narrow width must compile and match the reference.
@pytest.mark.parametrize("width", [1, 2, 3])
def test_narrow_lists(width):
    q, k, v = qkv(1, 2, 150, 64, seed=21)
    columns, counts = _columns(1, 2, 150, 64, width, seed=21, min_count=width)
    _check(q, k, v, columns, counts, q_block=64, config=_config())
    counts_over = torch.full_like(counts, 5)  # past the width: reads only the list, padded or not
    out = column_sparse_attention(q, k, v, columns, counts_over, q_block=64, config=_config())
    torch.testing.assert_close(out, column_sparse_attention(q, k, v, columns, counts.clamp(max=width), q_block=64,
                                                            config=_config()))


@pytest.mark.gpu
@pytest.mark.parametrize("width", [1, 2, 3, 8])
@pytest.mark.parametrize(("head_dim", "padded", "lse"), [(64, True, True), (64, True, False), (128, False, True),
                                                         (128, False, False), (128, True, False), (128, True, True)])
def test_narrow_lists_compile_on_the_gpu(width, head_dim, padded, lse):
    """The cases that crashed ptxas at width 1 (issue 23), at a model-like length, default kernel config."""
    s = 4096
    q, k, v = qkv(1, 4, s, head_dim, dtype=torch.bfloat16, seed=22)
    padding = (torch.arange(s, device=DEVICE) >= s - 100).unsqueeze(0) if padded else None
    columns, counts = _columns(1, 4, s, 128, width, seed=22, min_count=1)
    out = column_sparse_attention(q, k, v, columns, counts, q_block=128, key_padding_mask=padding, return_lse=lse)
    out = out[0] if lse else out
    golden = column_sparse_attention_reference(q.double(), k.double(), v.double(), columns, counts, q_block=128,
                                               key_padding_mask=padding)
    golden = golden[0] if isinstance(golden, tuple) else golden
    live = torch.isfinite(golden).all(-1) & (golden.abs().sum(-1) > 0)
    assert torch.isfinite(out).all()
    assert rel_err(out[live], golden[live]) <= 2e-2


# ------------------------------------------------------------------------------------- subtractable outputs
def _hot_inputs(b, h, s, d, hot, seed):
    """bf16 q, k, v where `hot` keys take about 99% of every row's mass (as a delta refresh's columns do)."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(d, generator=gen)
    u = u / u.norm()
    q = 16 * u + 0.3 * torch.randn(b, h, s, d, generator=gen)
    k = torch.randn(b, h, s, d, generator=gen) * 0.3
    logit = math.log(99 * s / hot.numel())  # the hot keys' score: four of them against s others near 0
    k[:, :, hot] += logit * d**0.5 / 16 * u
    return (t.bfloat16().to(DEVICE) for t in (q, k, torch.randn(b, h, s, d, generator=gen)))


@pytest.mark.parametrize("size", [
    pytest.param((150, 64, 64, None), id="cpu-ragged"),
    pytest.param((4096, 128, 128, None), marks=pytest.mark.gpu, id="gpu-4096"),
])
def test_float32_outputs_of_both_kernels_subtract_without_amplified_rounding(size):
    """`out_dtype=torch.float32` (the delta refresh): the full and the column kernel's outputs over keys that hold
    about 99% of each row's mass, subtracted, give the rest over the other keys within its own bf16 rounding, not
    that rounding amplified a hundredfold (issue 23, defect 5). Text keys, padding and ragged tiles included."""
    from vidsparse import SparseMask
    from vidsparse.kernels import block_sparse_attention, subtract_attention

    s, d, q_block, config = size
    text = (s - 10, s)
    gen = torch.Generator().manual_seed(5)
    hot = torch.randperm(s - 10, generator=gen)[:4]
    q, k, v = _hot_inputs(B, 2, s, d, hot, seed=5)
    padding = torch.zeros(B, s, dtype=torch.bool, device=DEVICE)
    padding[1, -3:] = True  # padded text keys of the second element
    n_q = -(-s // q_block)
    extra = torch.rand(B, 2, n_q, s - 10, generator=gen).argsort(-1)[..., : max(4, s // 20)]
    listed = torch.zeros(B, 2, n_q, s, dtype=torch.bool)
    listed.scatter_(-1, extra, True)
    listed[..., hot] = True
    counts = listed.sum(-1).int()
    width = int(counts.max())
    columns = torch.where(listed, torch.arange(s), s).sort(-1).values[..., :width]
    columns = torch.where(torch.arange(width) < counts.unsqueeze(-1), columns, GARBAGE).int().to(DEVICE)
    counts = counts.to(DEVICE)

    kw = dict(key_padding_mask=padding, return_lse=True, out_dtype=torch.float32)
    o, lse = block_sparse_attention(q, k, v, SparseMask.full(2, s, q_block, q_block, device=DEVICE), **kw)
    o_k, lse_k = column_sparse_attention(q, k, v, columns, counts, q_block=q_block, text=text, **kw,
                                         config=_config() if DEVICE == "cpu" else None)
    o_rest, _ = subtract_attention(o, lse, o_k, lse_k)

    scores = (q.double() @ k.double().transpose(-1, -2)) / d**0.5
    scores = scores.masked_fill(padding[:, None, None, :], float("-inf"))
    in_part = listed.to(DEVICE).repeat_interleave(q_block, dim=2)[:, :, :s]
    in_part[..., text[0] : text[1]] = True
    share = (scores.masked_fill(~in_part, float("-inf")).logsumexp(-1) - scores.logsumexp(-1)).exp()
    assert 0.97 < share.min() and share.max() < 0.999
    exact = scores.masked_fill(in_part, float("-inf")).softmax(-1) @ v.double()
    full = scores.softmax(-1) @ v.double()
    error = ((1 - share).unsqueeze(-1) * (o_rest.double() - exact)).norm(dim=-1)  # as it enters a merged output
    # the rest's own bf16 rounding, plus float32 rounding of sums that both kernels run over their tiles in their own
    # order (on the GPU it grows like the square root of the number of 128-key tiles)
    sums = 16 * math.sqrt(max(1.0, s / 128)) * torch.finfo(torch.float32).eps
    bound = (1 - share) * exact.norm(dim=-1) * 2.0**-7 + sums * full.norm(dim=-1)
    assert (error <= bound).all(), (error / bound).max()
