"""`block_sparse_attention` (the Triton kernel) against `block_sparse_attention_reference`.

Error budget (as in FlexAttention's and flash-attention's tests): the golden output is the reference
run on float64 copies of the inputs. The kernel's relative error ||o - golden|| / ||golden|| may be at
most twice the error of the reference run on the inputs as given (PyTorch's own rounding at that
dtype), with a small floor for float32, where the reference can be almost exact.

Every kernel run allocates its outputs poisoned with NaN (see `_run_kernel`), so an element the
kernel fails to write is caught. Inputs are fresh random numbers; lengths are ragged (1, 127, 129,
217, 1000) because real sequences never fill their last block.

Without a GPU the kernel runs in Triton's interpreter (see conftest.py), which is slow: shapes are
tiny and the one long case is S = 1000. Tests marked `gpu` run bf16 at real shapes on an H200.

One exception to the budget's definition: the interpreter casts float32 to bfloat16 by truncation
(`cast_impl` in triton/runtime/interpreter.py passes no rounding mode), where PyTorch and the GPU
round to nearest. Under the interpreter, the bf16 budget is therefore twice the error of the
reference truncated to bf16 the same way.
"""

import re

import pytest
import torch
import torch.nn.functional as F
from attention_checks import poisoned_outputs, qkv, rel_err, truncate_to_bf16

from vidsparse import KernelConfig, SparseMask, block_sparse_attention, block_sparse_attention_reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
B = 2
FLOOR = {torch.float32: 1e-5, torch.float16: 1e-4, torch.bfloat16: 1e-3}  # below eager's own error for half types
LSE_FLOOR = 1e-5  # absolute, in nats; |lse| stays below about 10 here


def _config(block_m, block_n, use_tma):
    return KernelConfig(block_m=block_m, block_n=block_n, num_warps=4, num_stages=1, use_tma=use_tma)


def _config_id(config):
    return f"tiles{config.block_m}x{config.block_n}-{'tma' if config.use_tma else 'ptr'}"


def _skip_tma_without_hopper(config):
    if config is not None and config.use_tma and DEVICE == "cuda" and torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("tensor-descriptor (TMA) loads need a Hopper GPU")


def _qkv(h, s, d, *, dtype=torch.float32, layout="bhsd", seed=0, batch=B):
    """Fresh random q, k, v `[B, H, S, D]` in one of `attention_checks.qkv`'s layouts."""
    return qkv(batch, h, s, d, dtype=dtype, layout=layout, seed=seed)


def _random_mask(density, h, s, q_block=64, k_block=64, *, batch=None, text=None, seed=0):
    g = torch.Generator().manual_seed(1000 + seed)
    mask = SparseMask.random(density, h, s, q_block, k_block, batch=batch, text=text, generator=g)
    return mask.to(DEVICE)


def _run_kernel(*args, **kwargs):
    """The kernel, with every floating-point tensor it allocates (o, lse) pre-filled with NaN."""
    with poisoned_outputs() as poisoned:
        result = block_sparse_attention(*args, **kwargs)
    assert poisoned, "the launcher no longer allocates through torch.empty: update the poisoning here"
    return result


_truncate_to_bf16, _rel_err = truncate_to_bf16, rel_err


def _check(q, k, v, mask, *, config=None, key_padding_mask=None, scale=None, exclude=None):
    """Run the kernel and hold o and lse to twice the reference's own error against the float64 golden.

    Also: no NaN or inf anywhere, rows without a live key exactly 0 with lse -inf. Returns (o, lse).
    """
    kw = dict(key_padding_mask=key_padding_mask, scale=scale, return_lse=True, exclude=exclude)
    out, lse = _run_kernel(q, k, v, mask, config=config, **kw)
    golden, golden_lse = block_sparse_attention_reference(q.double(), k.double(), v.double(), mask, **kw)
    eager, eager_lse = block_sparse_attention_reference(q, k, v, mask, **kw)
    if q.dtype == torch.bfloat16 and DEVICE == "cpu":  # the interpreter truncates: see the module docstring
        eager = _truncate_to_bf16(block_sparse_attention_reference(q.float(), k.float(), v.float(), mask, **kw)[0])

    assert out.shape == q.shape and out.dtype == q.dtype
    assert lse.shape == q.shape[:3] and lse.dtype == torch.float32
    assert torch.isfinite(out).all(), "non-finite output (NaN means an element was never written)"
    assert not lse.isnan().any(), "NaN log-sum-exp (an element was never written)"

    empty = torch.isneginf(golden_lse)  # rows that select no live key
    assert torch.equal(torch.isneginf(lse), empty), "lse must be -inf exactly on the rows without a live key"
    assert (out[empty] == 0).all(), "rows without a live key must be exactly 0"
    assert torch.isfinite(lse[~empty]).all()

    err, eager_err = _rel_err(out, golden), _rel_err(eager, golden)
    budget = max(2 * eager_err, FLOOR[q.dtype])
    assert err <= budget, f"kernel error {err:.3g} > budget {budget:.3g} (reference's own error {eager_err:.3g})"

    live = ~empty
    lse_err = (lse[live].double() - golden_lse[live].double()).abs().max().item()
    eager_lse_err = (eager_lse[live].double() - golden_lse[live].double()).abs().max().item()
    lse_budget = max(2 * eager_lse_err, LSE_FLOOR)
    assert lse_err <= lse_budget, f"lse error {lse_err:.3g} > budget {lse_budget:.3g}"
    return out, lse


# ---------------------------------------------------------------------------------------------- left-out keys
def _bitmask(keys: torch.Tensor) -> torch.Tensor:
    """int32 words `[..., ceil(S / 32)]` of a bool `[..., S]`, built bit by bit (the definition, in Python ints)."""
    *lead, s = keys.shape
    words = torch.zeros(*lead, -(-s // 32), dtype=torch.int64)
    for j in range(s):
        words[..., j // 32] += keys[..., j].long() << (j % 32)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32).to(DEVICE)


@pytest.mark.parametrize(("head_dim", "seq_len", "density", "per_batch", "padded", "config"), [
    (64, 217, 1.0, False, False, None),
    (64, 217, 0.5, True, True, None),
    (128, 129, 1.0, True, True, _config(32, 32, use_tma=True)),
    (64, 100, 1.0, False, True, _config(32, 64, use_tma=False)),
    (64, 100, 0.5, True, False, _config(32, 16, use_tma=False)),
], ids=["d64-shared", "d64-sparse-per-batch-padded", "d128-tma-tiles32", "d64-ptr-tiles32x64", "d64-tiles32x16"])
def test_excluded_keys(head_dim, seq_len, density, per_batch, padded, config):
    """`exclude` leaves each query block's set keys out (the delta refresh's rest): against the references with the
    same bits, and the reference against attention over the kept keys, built from the definition."""
    _skip_tma_without_hopper(config)
    heads = 2
    q, k, v = _qkv(heads, seq_len, head_dim, seed=seq_len + head_dim)
    mask = _random_mask(density, heads, seq_len, seed=3)
    g = torch.Generator().manual_seed(seq_len)
    left_out = torch.rand(B if per_batch else 1, heads, mask.num_q_blocks, seq_len, generator=g) < 0.4
    left_out[..., 31] = True  # bit 31: the sign bit of its word
    padding = None
    if padded:
        padding = torch.zeros(B, seq_len, dtype=torch.bool, device=DEVICE)
        padding[1, -10:] = True
    exclude = _bitmask(left_out)
    _check(q, k, v, mask, config=config, key_padding_mask=padding, exclude=exclude)
    # the reference's own reading of the bits: a mask that is the blocks minus the set keys, token by token
    allowed = mask.to_dense().to(DEVICE)  # [B', H, S, S]
    allowed = allowed & ~left_out.to(DEVICE).repeat_interleave(mask.q_block, 2)[:, :, :seq_len]
    if padding is not None:
        allowed = allowed & ~padding[:, None, None, :]
    scores = (q.double() @ k.double().transpose(-1, -2)) / head_dim**0.5
    scores = scores.masked_fill(~allowed, float("-inf"))
    expect = torch.nan_to_num(scores.softmax(-1)) @ v.double()
    got = block_sparse_attention_reference(q.double(), k.double(), v.double(), mask, key_padding_mask=padding,
                                           exclude=exclude)
    torch.testing.assert_close(got, expect, atol=1e-10, rtol=1e-10)


def test_excluding_every_key_of_a_block_empties_its_rows():
    q, k, v = _qkv(2, 150, 64, seed=31)
    mask = _random_mask(1.0, 2, 150)
    left_out = torch.zeros(1, 2, mask.num_q_blocks, 150, dtype=torch.bool)
    left_out[:, 1, 1] = True  # head 1, query block 1: nothing left
    out, lse = _check(q, k, v, mask, exclude=_bitmask(left_out))
    assert torch.isneginf(lse[:, 1, 64:128]).all() and (out[:, 1, 64:128] == 0).all()
    assert torch.isfinite(lse[:, 0]).all()


def test_exclude_is_validated():
    q, k, v = _qkv(2, 100, 64)
    mask = _random_mask(1.0, 2, 100)
    good = torch.zeros(1, 2, mask.num_q_blocks, 4, dtype=torch.int32, device=DEVICE)
    strided = torch.zeros(1, 2, mask.num_q_blocks, 8, dtype=torch.int32, device=DEVICE)[..., ::2]
    for bad in (good.long(), good[..., :3], good[:, :1], torch.zeros(3, 2, 2, 4, dtype=torch.int32, device=DEVICE),
                strided):
        with pytest.raises(ValueError, match=re.escape("exclude must be an int32 bitmask, last dim contiguous, "
                                                       "[B or 1, H, nQ, ceil(S / 32)] = [2, 2, 2, 4]")):
            block_sparse_attention(q, k, v, mask, exclude=bad)
    if DEVICE == "cpu":
        with pytest.raises(ValueError, match="exclude is on meta, q on cpu"):
            block_sparse_attention(q, k, v, mask, exclude=good.to("meta"))


# ---------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("density", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("seq_len", [1, 127, 129, 217])
def test_ragged_lengths(seq_len, head_dim, density):
    heads = 3 if head_dim == 64 else 2
    q, k, v = _qkv(heads, seq_len, head_dim, seed=seq_len + head_dim)
    _check(q, k, v, _random_mask(density, heads, seq_len, seed=seq_len))


@pytest.mark.parametrize(
    ("head_dim", "density", "q_block", "k_block", "config", "per_batch", "text"),
    [
        (64, 0.5, 64, 64, None, False, None),
        (128, 0.1, 128, 128, _config(64, 64, use_tma=True), True, (1000 - 150, 1000)),
    ],
    ids=["d64-pointer", "d128-tma-per-batch-text"],
)
def test_long_sequence(head_dim, density, q_block, k_block, config, per_batch, text):
    _skip_tma_without_hopper(config)
    q, k, v = _qkv(2, 1000, head_dim, seed=7)
    mask = _random_mask(density, 2, 1000, q_block, k_block, batch=B if per_batch else None, text=text, seed=7)
    _check(q, k, v, mask, config=config)


@pytest.mark.parametrize(
    ("q_block", "k_block", "config"),
    [
        (16, 16, None),  # the default config shrinks its tiles to 16 x 16
        (32, 64, _config(32, 64, use_tma=True)),
        (64, 32, _config(64, 32, use_tma=False)),
        (64, 64, _config(32, 32, use_tma=True)),  # tiles smaller than the mask blocks, both sides
        (64, 64, _config(64, 32, use_tma=False)),  # two key tiles per mask block
        (128, 64, _config(64, 16, use_tma=False)),
        (32, 128, _config(16, 64, use_tma=True)),
        (128, 128, _config(128, 128, use_tma=True)),
    ],
    ids=lambda p: _config_id(p) if isinstance(p, KernelConfig) else str(p),
)
def test_block_and_tile_sizes(q_block, k_block, config):
    _skip_tma_without_hopper(config)
    q, k, v = _qkv(2, 217, 64, seed=q_block + k_block)
    _check(q, k, v, _random_mask(0.4, 2, 217, q_block, k_block, seed=q_block * k_block), config=config)


@pytest.mark.parametrize("use_tma", [False, True], ids=["ptr", "tma"])
@pytest.mark.parametrize("per_batch", [False, True], ids=["shared", "per-batch"])
def test_shared_and_per_batch_masks(per_batch, use_tma):
    config = _config(32, 64, use_tma)
    _skip_tma_without_hopper(config)
    q, k, v = _qkv(3, 217, 64, seed=11)
    mask = _random_mask(0.3, 3, 217, 32, 64, batch=B if per_batch else None, seed=11)
    out, _ = _check(q, k, v, mask, config=config)
    if per_batch:
        # The two batch elements really use different masks: batch 0's mask on both would be far off.
        first_only = SparseMask.from_block_mask(mask.to_blocks()[0], 32, 64, 217)
        assert _rel_err(block_sparse_attention_reference(q, k, v, first_only), out) > 0.05


@pytest.mark.parametrize("use_tma", [False, True], ids=["ptr", "tma"])
@pytest.mark.parametrize("text", [(0, 77), (217 - 45, 217)], ids=["text-first", "text-last"])
def test_text_ranges(text, use_tma):
    config = _config(32, 32, use_tma)
    _skip_tma_without_hopper(config)
    q, k, v = _qkv(2, 217, 64, seed=12)
    _check(q, k, v, _random_mask(0.2, 2, 217, 32, 64, text=text, seed=12), config=config)


# ---------------------------------------------------------------------------------------------- padding, empty rows
@pytest.mark.parametrize("use_tma", [False, True], ids=["ptr", "tma"])
@pytest.mark.parametrize("per_batch", [False, True], ids=["shared", "per-batch"])
def test_random_key_padding(per_batch, use_tma):
    config = _config(32, 32, use_tma)
    _skip_tma_without_hopper(config)
    q, k, v = _qkv(2, 217, 64, seed=13)
    padding = torch.rand(B, 217, generator=torch.Generator().manual_seed(13)).to(DEVICE) < 0.3
    mask = _random_mask(0.5, 2, 217, 32, 64, batch=B if per_batch else None, text=(0, 30), seed=13)
    _check(q, k, v, mask, key_padding_mask=padding, config=config)


def _blocks_with_empty_rows(heads, n_q, n_k, seed):
    g = torch.Generator().manual_seed(seed)
    blocks = torch.rand(heads, n_q, n_k, generator=g) < 0.5
    blocks[..., 0, :] = False  # the first query block selects nothing
    blocks[..., -1, :] = False  # nor the last, ragged one
    blocks[..., 1:-1, 0] = True  # every other row has a key block
    return blocks


@pytest.mark.parametrize("use_tma", [False, True], ids=["ptr", "tma"])
def test_rows_that_select_no_key_block(use_tma):
    config = _config(32, 32, use_tma)
    _skip_tma_without_hopper(config)
    q, k, v = _qkv(2, 217, 64, seed=14)
    blocks = _blocks_with_empty_rows(2, 7, 4, seed=14)
    mask = SparseMask.from_block_mask(blocks, 32, 64, 217).to(DEVICE)
    out, lse = _check(q, k, v, mask, config=config)
    for rows in (slice(0, 32), slice(192, 217)):
        assert (out[:, :, rows] == 0).all()
        assert torch.isneginf(lse[:, :, rows]).all()
    assert torch.isfinite(lse[:, :, 32:192]).all()


@pytest.mark.parametrize("use_tma", [False, True], ids=["ptr", "tma"])
def test_key_padding_that_empties_rows(use_tma):
    # Query block 0 visits only key block 1 (keys 64..127), and batch 0 pads all of those keys:
    # batch 0's first 32 rows see no live key, while batch 1 is untouched.
    config = _config(32, 64, use_tma)
    _skip_tma_without_hopper(config)
    q, k, v = _qkv(2, 217, 64, seed=15)
    blocks = torch.rand(2, 7, 4, generator=torch.Generator().manual_seed(15)) < 0.5
    blocks[:, 0] = torch.tensor([False, True, False, False])
    blocks[:, 1:, 0] = True
    mask = SparseMask.from_block_mask(blocks, 32, 64, 217).to(DEVICE)
    padding = torch.rand(B, 217, generator=torch.Generator().manual_seed(16)) < 0.2
    padding[0, 64:128] = True
    padding[1, 64:128] = False
    padding[:, :64] = False
    out, lse = _check(q, k, v, mask, key_padding_mask=padding.to(DEVICE), config=config)
    assert (out[0, :, :32] == 0).all() and torch.isneginf(lse[0, :, :32]).all()
    assert torch.isfinite(lse[1]).all() and torch.isfinite(lse[0, :, 32:]).all()


def test_every_key_padded():
    q, k, v = _qkv(2, 129, 64, seed=17)
    padding = torch.ones(B, 129, dtype=torch.bool, device=DEVICE)
    padding[1, 5] = False  # batch 1 keeps one key
    mask = SparseMask.full(2, 129, 64, 64, device=DEVICE)
    out, lse = _run_kernel(q, k, v, mask, key_padding_mask=padding, return_lse=True)
    assert (out[0] == 0).all() and torch.isneginf(lse[0]).all()
    torch.testing.assert_close(out[1], v[1, :, 5:6].expand(-1, 129, -1))  # one live key: every row is its value


# ---------------------------------------------------------------------------------------------- strides, options
@pytest.mark.parametrize("use_tma", [False, True], ids=["ptr", "tma"])
@pytest.mark.parametrize("layout", ["bshd", "qkv", "dstride"])
def test_strided_inputs(layout, use_tma):
    config = _config(32, 64, use_tma)
    _skip_tma_without_hopper(config)
    q, k, v = _qkv(3, 217, 64, layout=layout, seed=18)
    assert not (q.is_contiguous() or k.is_contiguous() or v.is_contiguous())
    _check(q, k, v, _random_mask(0.5, 3, 217, 32, 64, batch=B, text=(0, 20), seed=18), config=config)


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
@pytest.mark.parametrize("scale", [1.0, 0.05], ids=["peaky", "flat"])
def test_custom_scale(scale, padded):
    # scale 1 with D = 64 makes scores of std 8: the running maximum moves a lot between key tiles.
    config = _config(64, 16, use_tma=False)
    q, k, v = _qkv(2, 217, 64, seed=19)
    padding = torch.rand(B, 217, generator=torch.Generator().manual_seed(19)).to(DEVICE) < 0.3 if padded else None
    mask = _random_mask(0.6, 2, 217, 64, 64, seed=19)
    _check(q, k, v, mask, config=config, scale=scale, key_padding_mask=padding)


def test_return_lse_does_not_change_the_output():
    q, k, v = _qkv(2, 217, 128, seed=20)
    mask = _random_mask(0.5, 2, 217, 32, 32, seed=20)
    out_only = _run_kernel(q, k, v, mask)
    out, _ = _run_kernel(q, k, v, mask, return_lse=True)
    assert isinstance(out_only, torch.Tensor)
    assert torch.equal(out_only, out)


@pytest.mark.parametrize("head_dim", [64, 128])
def test_density_one_matches_sdpa(head_dim):
    q, k, v = _qkv(3, 217, head_dim, seed=21)
    out = _run_kernel(q, k, v, SparseMask.full(3, 217, 64, 32, device=DEVICE))
    golden = F.scaled_dot_product_attention(q.double(), k.double(), v.double())
    sdpa_err = _rel_err(F.scaled_dot_product_attention(q, k, v), golden)
    err = _rel_err(out, golden)
    assert err <= max(2 * sdpa_err, FLOOR[torch.float32]), f"kernel {err:.3g} vs SDPA {sdpa_err:.3g}"


# ---------------------------------------------------------------------------------------------- half precision
@pytest.mark.parametrize(
    ("head_dim", "use_tma", "padded"), [(64, False, False), (128, True, False), (64, True, True), (128, False, True)]
)
def test_float16(head_dim, use_tma, padded):
    config = _config(32, 32, use_tma)
    _skip_tma_without_hopper(config)
    q, k, v = _qkv(2, 217, head_dim, dtype=torch.float16, seed=22)
    padding = torch.rand(B, 217, generator=torch.Generator().manual_seed(22)).to(DEVICE) < 0.3 if padded else None
    _check(q, k, v, _random_mask(0.5, 2, 217, 32, 64, text=(0, 40), seed=22), key_padding_mask=padding, config=config)


@pytest.mark.parametrize(
    ("head_dim", "use_tma", "padded"), [(64, False, False), (128, True, False), (64, True, True), (128, False, True)]
)
def test_bfloat16(head_dim, use_tma, padded):
    # Under the interpreter the kernel runs its products in fp32 on the bf16 values (Triton's
    # interpreter multiplies bf16 bit patterns in tl.dot, triton-lang/triton#11584); see also the
    # module docstring on the interpreter's truncating casts.
    config = _config(32, 32, use_tma)
    _skip_tma_without_hopper(config)
    q, k, v = _qkv(2, 217, head_dim, dtype=torch.bfloat16, seed=23)
    padding = torch.rand(B, 217, generator=torch.Generator().manual_seed(23)).to(DEVICE) < 0.3 if padded else None
    _check(q, k, v, _random_mask(0.5, 2, 217, 32, 64, text=(0, 40), seed=23), key_padding_mask=padding, config=config)


# ---------------------------------------------------------------------------------------------- bad input
def _bad_input_cases():
    q, k, v = _qkv(2, 217, 64)
    mask = _random_mask(0.5, 2, 217, 32, 32)
    cases = {
        "rank": ((q[0], k, v, mask), {}, re.escape("q must be a 4-D tensor [B, H, S, D]; got (2, 217, 64)")),
        "not-a-tensor": ((q, k.tolist(), v, mask), {}, re.escape("k must be a 4-D tensor [B, H, S, D]; got list")),
        "shapes": (
            (q, k[:, :, :216], v, mask), {},
            re.escape("same shape [B, H, S, D]; got q (2, 2, 217, 64), k (2, 2, 216, 64), v (2, 2, 217, 64)"),
        ),
        "dtypes": (
            (q, k, v.half(), mask), {},
            re.escape("q, k and v must share a dtype; got torch.float32, torch.float32, torch.float16"),
        ),
        "int": (
            (q.int(), k.int(), v.int(), mask), {},
            re.escape("dtype torch.int32 is not supported") + r".*\(supported: bfloat16, float16, float32\)",
        ),
        "float64": ((q.double(), k.double(), v.double(), mask), {}, re.escape("dtype torch.float64 is not supported")),
        "mask-type": ((q, k, v, mask.to_blocks()), {}, "mask must be a vidsparse.SparseMask; got Tensor"),
        "mask-seq-len": (
            (q, k, v, _random_mask(0.5, 2, 216, 32, 32)), {},
            re.escape("mask was built for seq_len=216, but q has S=217"),
        ),
        "mask-heads": ((q, k, v, _random_mask(0.5, 3, 217, 32, 32)), {}, "mask has 3 heads, but q has H=2"),
        "mask-batch": (
            (q, k, v, _random_mask(0.5, 2, 217, 32, 32, batch=3)), {},
            re.escape("mask batch must be 1 (shared) or B=2; got 3"),
        ),
        "mask-device": (
            (q, k, v, mask.to("meta")), {},
            rf"q, k, v and mask must be on one device; got q {DEVICE}.*, mask meta",
        ),
        "head-dim": (
            tuple(t[..., :48] for t in (q, k, v)) + (mask,), {},
            re.escape("head dim 48 is not supported by the Triton kernel (supported: (64, 128))"),
        ),
        "padding-shape": (
            (q, k, v, mask), {"key_padding_mask": torch.zeros(B, 218, dtype=torch.bool, device=DEVICE)},
            re.escape("key_padding_mask must be a bool tensor [B, S] = [2, 217]") + r".*got torch\.bool \(2, 218\)",
        ),
        "padding-dtype": (
            (q, k, v, mask), {"key_padding_mask": torch.zeros(B, 217, device=DEVICE)},
            re.escape("key_padding_mask must be a bool tensor [B, S] = [2, 217]") + r".*got torch\.float32 \(2, 217\)",
        ),
        "padding-device": (
            (q, k, v, mask), {"key_padding_mask": torch.zeros(B, 217, dtype=torch.bool, device="meta")},
            rf"key_padding_mask is on meta, q on {DEVICE}",
        ),
        "scale-zero": ((q, k, v, mask), {"scale": 0.0}, re.escape("scale must be positive; got 0.0")),
        "scale-negative": ((q, k, v, mask), {"scale": -0.125}, re.escape("scale must be positive; got -0.125")),
        "tiles": (
            (q, k, v, mask), {"config": _config(64, 32, use_tma=False)},
            re.escape("config tiles 64x32 must divide the mask blocks 32x32"),
        ),
    }
    return [pytest.param(*case, id=name) for name, case in cases.items()]


@pytest.mark.parametrize(("args", "kwargs", "message"), _bad_input_cases())
def test_bad_input(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        block_sparse_attention(*args, **kwargs)


def test_reference_takes_what_the_kernel_refuses():
    # The reference is the fallback for head dims the kernel lacks; it still refuses non-float inputs.
    q, k, v = _qkv(2, 217, 48, seed=24)
    mask = _random_mask(0.5, 2, 217, 32, 32, seed=24)
    expected = block_sparse_attention_reference(q.double(), k.double(), v.double(), mask)
    torch.testing.assert_close(block_sparse_attention_reference(q, k, v, mask), expected.float())
    with pytest.raises(ValueError, match=re.escape("q, k and v must be floating point; got torch.int32")):
        block_sparse_attention_reference(q.int(), k.int(), v.int(), mask)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize(("seq_len", "q_block", "k_block"), [(77, 16, 16), (200, 16, 32), (150, 64, 16)])
def test_gathered_cpu_path_equals_the_reference(dtype, seq_len, q_block, k_block):
    """`block_sparse_attention_gathered` (the CPU fallback of sparse masks: each query block over its blocks' keys)
    against the reference: shared and per-batch masks, ragged blocks, padding, a block without keys, small chunks."""
    from vidsparse.kernels.reference import block_sparse_attention_gathered

    gen = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 3, seq_len, 64, generator=gen).to(dtype) for _ in range(3))
    padding = torch.zeros(2, seq_len, dtype=torch.bool)
    padding[1, :k_block] = True  # the first key block of batch element 1
    for batch in (None, 2):
        blocks = SparseMask.random(0.3, 3, seq_len, q_block, k_block, batch=batch, text=(0, 9),
                                   generator=gen).to_blocks()
        blocks[..., 1, :] = False  # a query block without a key block
        blocks[..., 2, :] = False
        blocks[..., 2, 0] = True  # one that sees only the padded one
        mask = SparseMask.from_block_mask(blocks, q_block, k_block, seq_len)
        for key_padding in (None, padding):
            for max_elements in (1 << 27, 3000):
                out, lse = block_sparse_attention_gathered(q, k, v, mask, key_padding_mask=key_padding, return_lse=True,
                                                           max_elements=max_elements)
                expect, expect_lse = block_sparse_attention_reference(q, k, v, mask, key_padding_mask=key_padding,
                                                                      return_lse=True)
                assert out.dtype == dtype and lse.dtype == torch.float32
                tol = dict(atol=1e-2, rtol=1e-2) if dtype == torch.bfloat16 else dict(atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(out, expect, **tol)
                assert torch.equal(lse.isneginf(), expect_lse.isneginf()) and bool(lse.isneginf().any())
                torch.testing.assert_close(lse.nan_to_num(neginf=0.0), expect_lse.nan_to_num(neginf=0.0), atol=1e-5,
                                           rtol=1e-5)


@pytest.mark.skipif(DEVICE == "cuda", reason="checks the message for CPU tensors without the interpreter")
def test_cpu_without_interpreter_is_refused(monkeypatch):
    import triton

    monkeypatch.setattr(triton.knobs.runtime, "interpret", False)
    q, k, v = _qkv(2, 64, 64)
    with pytest.raises(ValueError, match=r"needs a CUDA tensor, or the interpreter \(TRITON_INTERPRET=1"):
        block_sparse_attention(q, k, v, _random_mask(0.5, 2, 64))


# ---------------------------------------------------------------------------------------------- GPU, real shapes
def _flex_error_and_reference(q, k, v, mask, padding):
    """The float32 chunked reference, and the relative error of compiled FlexAttention (same mask) against it."""
    from torch.nn.attention.flex_attention import flex_attention

    reference = block_sparse_attention_reference(q.float(), k.float(), v.float(), mask, key_padding_mask=padding)
    flex = torch.compile(flex_attention, dynamic=False)(q, k, v, block_mask=mask.to_flex_block_mask(padding))
    return _rel_err(flex, reference), reference


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("batch", "seq_len", "heads", "head_dim", "density", "text", "pad", "config"),
    [
        # CogVideoX-5b 49 frames 480p: text first (226 tokens), 17,776 tokens in all.
        (1, 17_776, 24, 64, 0.25, (0, 226), 0, None),
        (1, 17_776, 24, 64, 0.25, (0, 226), 0, KernelConfig(64, 64, num_warps=4, num_stages=2, use_tma=False)),
        # HunyuanVideo-like: ragged 32k, text last (256 tokens) with padded text keys, one mask per element.
        (2, 32_768 + 125, 24, 128, 0.1, (32_893 - 256, 32_893), 150, None),
    ],
    ids=["cogvideox-tma", "cogvideox-pointer", "hunyuan-ragged-padded"],
)
def test_gpu_bf16_real_shapes_against_flex(batch, seq_len, heads, head_dim, density, text, pad, config):
    torch.manual_seed(seq_len)
    q, k, v = (torch.randn(batch, heads, seq_len, head_dim, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    g = torch.Generator(device="cuda").manual_seed(seq_len)
    mask = SparseMask.random(
        density, heads, seq_len, 128, 128, batch=batch if batch > 1 else None, text=text, generator=g, device="cuda"
    )
    padding = None
    if pad:
        padding = torch.zeros(batch, seq_len, dtype=torch.bool, device="cuda")
        padding[:, seq_len - pad :] = True  # the tail of the text is padding, as in HunyuanVideo

    flex_err, reference = _flex_error_and_reference(q, k, v, mask, padding)
    out = _run_kernel(q, k, v, mask, key_padding_mask=padding, config=config)
    assert torch.isfinite(out).all()
    err = _rel_err(out, reference)
    assert err <= 2 * flex_err, f"kernel error {err:.3g} > 2 x FlexAttention's {flex_err:.3g}"


@pytest.mark.gpu
def test_gpu_excluded_keys_at_a_real_shape():
    """The delta refresh's rest pass at a ragged 32k shape (24 heads x 128, text last and padded): a full mask minus
    7% of the keys of every query block and the text, against the float32 reference with the same bits, within
    twice the error of the same pass without the bits against its own reference."""
    from vidsparse.kernels import column_bitmask, topk_columns

    s, h = 32_768 + 125, 24
    text = (s - 256, s)
    torch.manual_seed(s)
    q, k, v = (torch.randn(1, h, s, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    padding = torch.zeros(1, s, dtype=torch.bool, device="cuda")
    padding[:, s - 100:] = True
    mask = SparseMask.full(h, s, 128, 128, device="cuda")
    columns, counts = topk_columns(q, k, None, q_block=128, fraction=0.07, text=text, key_padding_mask=padding)
    exclude = column_bitmask(columns, counts, s, text)
    errors, lse_errors = [], []
    for bits in (None, exclude):  # with the lse, as the refresh runs it
        out, lse = _run_kernel(q, k, v, mask, key_padding_mask=padding, exclude=bits, return_lse=True)
        reference, reference_lse = block_sparse_attention_reference(
            q.float(), k.float(), v.float(), mask, key_padding_mask=padding, exclude=bits, return_lse=True)
        assert torch.isfinite(out).all() and torch.isfinite(lse).all()
        errors.append(_rel_err(out, reference))
        lse_errors.append((lse - reference_lse).abs().max().item())
    assert errors[1] <= 2 * errors[0], f"with the bits {errors[1]:.3g}, without {errors[0]:.3g}"
    assert lse_errors[1] <= max(2 * lse_errors[0], LSE_FLOOR), lse_errors


@pytest.mark.gpu
def test_gpu_flex_full_blocks_matches_reference():
    # The full-block BlockMask (no key padding) that inductor cannot compile for CPU in torch 2.13.
    # 128-token blocks: FlexAttention's default tiles must divide the mask's blocks.
    from torch.nn.attention.flex_attention import flex_attention

    q, k, v = _qkv(3, 1000, 64, seed=25)
    mask = _random_mask(0.4, 3, 1000, 128, 128, batch=B, text=(1000 - 30, 1000), seed=25)
    out = torch.compile(flex_attention, dynamic=False)(q, k, v, block_mask=mask.to_flex_block_mask())
    torch.testing.assert_close(out, block_sparse_attention_reference(q, k, v, mask), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"block_m": 0}, r"block_m must be a power of two >= 16 \(tl.dot's minimum\); got 0"),
        ({"block_n": 8}, r"block_n must be a power of two >= 16 \(tl.dot's minimum\); got 8"),
        ({"block_m": 48}, r"block_m must be a power of two >= 16"),
        ({"num_warps": 3}, r"num_warps must be one of 1, 2, 4, 8, 16; got 3"),
        ({"num_stages": 0}, r"num_stages must be an int >= 1; got 0"),
    ],
)
def test_kernel_config_is_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KernelConfig(**kwargs)
