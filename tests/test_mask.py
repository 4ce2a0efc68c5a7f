"""SparseMask: constructors, inspection, text ranges, FlexAttention interop and input checks.

Sizes are ragged on purpose (S = 217 with 32 x 64 blocks: the last query block holds 25 tokens and
the last key block 25), because real sequences (17,776 or 119,056 tokens) never fill their last block.
"""

import re

import pytest
import torch
from torch.nn.attention.flex_attention import BlockMask, create_mask

from vidsparse import SparseMask, block_sparse_attention_reference

S = 217
Q_BLOCK, K_BLOCK = 32, 64
N_Q, N_K = 7, 4  # ceil(217 / 32), ceil(217 / 64)


def _random_blocks(*lead, n_q=N_Q, n_k=N_K, p=0.4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*lead, n_q, n_k, generator=g) < p


def _expand_blocks(blocks, q_block, k_block, seq_len):
    """Token mask [..., S, S] from a block mask [..., nQ, nK]: token (i, j) is in block (i // q_block, j // k_block)."""
    rows = torch.arange(seq_len) // q_block
    cols = torch.arange(seq_len) // k_block
    return blocks[..., rows[:, None], cols[None, :]]


# ---------------------------------------------------------------------------------------------- construction
def test_from_block_mask_shared_counts_and_ascending_indices():
    blocks = _random_blocks(3)  # [H, nQ, nK]: one mask for every batch element
    mask = SparseMask.from_block_mask(blocks, Q_BLOCK, K_BLOCK, S)

    assert (mask.batch, mask.num_heads, mask.num_q_blocks, mask.num_k_blocks) == (1, 3, N_Q, N_K)
    assert mask.kv_num_blocks.dtype == mask.kv_indices.dtype == torch.int32
    assert torch.equal(mask.kv_num_blocks[0], blocks.sum(-1).int())
    for h in range(3):
        for i in range(N_Q):
            n = int(mask.kv_num_blocks[0, h, i])
            visited = mask.kv_indices[0, h, i, :n].tolist()
            assert visited == torch.nonzero(blocks[h, i]).flatten().tolist()  # ascending, exactly the selected


def test_from_block_mask_per_batch():
    blocks = _random_blocks(2, 3, seed=1)  # [B, H, nQ, nK]
    mask = SparseMask.from_block_mask(blocks, Q_BLOCK, K_BLOCK, S)

    assert (mask.batch, mask.num_heads) == (2, 3)
    assert torch.equal(mask.kv_num_blocks, blocks.sum(-1).int())
    assert not torch.equal(mask.kv_num_blocks[0], mask.kv_num_blocks[1])  # the two elements really differ


@pytest.mark.parametrize("lead", [(3,), (2, 3)], ids=["shared", "per-batch"])
@pytest.mark.parametrize("seed", range(3))
def test_to_blocks_round_trip(lead, seed):
    blocks = _random_blocks(*lead, p=0.5, seed=seed)
    mask = SparseMask.from_block_mask(blocks, Q_BLOCK, K_BLOCK, S)
    expected = blocks if len(lead) == 2 else blocks.unsqueeze(0)
    assert torch.equal(mask.to_blocks(), expected)


def test_to_dense_crops_ragged_blocks_and_matches_expansion():
    blocks = _random_blocks(2, 3, seed=2)
    mask = SparseMask.from_block_mask(blocks, Q_BLOCK, K_BLOCK, S)
    dense = mask.to_dense()

    assert dense.shape == (2, 3, S, S) and dense.dtype == torch.bool
    assert torch.equal(dense, _expand_blocks(blocks, Q_BLOCK, K_BLOCK, S))


@pytest.mark.parametrize(
    ("seq_len", "q_block", "k_block"), [(217, 32, 64), (100, 16, 64), (129, 64, 16), (256, 64, 64)]
)
def test_density_counts_ragged_blocks_exactly(seq_len, q_block, k_block):
    n_q, n_k = -(-seq_len // q_block), -(-seq_len // k_block)
    mask = SparseMask.from_block_mask(_random_blocks(2, 3, n_q=n_q, n_k=n_k, seed=3), q_block, k_block, seq_len)
    dense = mask.to_dense().float()

    assert mask.density() == pytest.approx(dense.mean().item(), rel=1e-6)
    torch.testing.assert_close(mask.density_per_head(), dense.mean((-1, -2)))


def test_density_of_hand_built_mask():
    # Module docstring example: 5 of 9 blocks, S = 40 with 16-token blocks (the last block has 8 tokens).
    # Visited token pairs: row block 0 -> 16*16, row block 1 -> 16*32, row block 2 -> 8*(16+8).
    blocks = torch.tensor([[[1, 0, 0], [1, 1, 0], [0, 1, 1]]], dtype=torch.bool)
    mask = SparseMask.from_block_mask(blocks, q_block=16, k_block=16, seq_len=40)
    assert mask.density() == pytest.approx((16 * 16 + 16 * 32 + 8 * 24) / 40**2)


# ---------------------------------------------------------------------------------------------- text ranges
@pytest.mark.parametrize("text", [(0, 77), (S - 45, S)], ids=["text-first", "text-last"])
def test_text_range_is_never_dropped(text):
    start, stop = text
    blocks = _random_blocks(2, 3, p=0.2, seed=4)
    mask = SparseMask.from_block_mask(blocks, Q_BLOCK, K_BLOCK, S, text=text)
    dense = mask.to_dense()

    assert mask.text == text
    assert dense[..., :, start:stop].all(), "every query row must visit every text key"
    assert dense[..., start:stop, :].all(), "text query rows must be dense"
    # Text only adds blocks: whatever the input selected is still selected.
    assert (mask.to_blocks() | ~blocks).all()
    # Blocks that hold no text token keep the input's choice.
    text_q = torch.zeros(N_Q, dtype=torch.bool)
    text_q[start // Q_BLOCK : -(-stop // Q_BLOCK)] = True
    text_k = torch.zeros(N_K, dtype=torch.bool)
    text_k[start // K_BLOCK : -(-stop // K_BLOCK)] = True
    untouched = ~text_q[:, None] & ~text_k[None, :]
    assert torch.equal(mask.to_blocks()[..., untouched], blocks[..., untouched])


@pytest.mark.parametrize("text", [(10, 50), (0, 0), (50, 10), (0, S + 1), (-1, 20), (S, S)])
def test_bad_text_range(text):
    expected = rf"text must be .* \(stop=seq_len={S}\) of the sequence; got {re.escape(repr(text))}"
    with pytest.raises(ValueError, match=expected):
        SparseMask.from_block_mask(_random_blocks(3), Q_BLOCK, K_BLOCK, S, text=text)


# ---------------------------------------------------------------------------------------------- presets
def test_full_visits_everything():
    mask = SparseMask.full(num_heads=2, seq_len=S, q_block=Q_BLOCK, k_block=K_BLOCK)
    assert mask.density() == 1.0
    assert mask.to_dense().all()
    assert (mask.kv_num_blocks == N_K).all()


def test_random_density_per_head_and_batch():
    # S fills its blocks, so every row keeps exactly round(0.25 * 16) = 4 of 16 key blocks.
    g = torch.Generator().manual_seed(5)
    mask = SparseMask.random(0.25, num_heads=4, seq_len=1024, q_block=64, k_block=64, batch=2, generator=g)

    assert (mask.batch, mask.num_heads) == (2, 4)
    assert (mask.kv_num_blocks == 4).all()
    assert mask.density() == 0.25
    blocks = mask.to_blocks()
    assert not torch.equal(blocks[:, 0], blocks[:, 1]), "heads draw their masks independently"
    assert not torch.equal(blocks[0], blocks[1]), "batch elements draw their masks independently"


def test_random_keeps_at_least_one_block_and_is_seeded():
    def draw(seed):
        g = torch.Generator().manual_seed(seed)
        return SparseMask.random(0.01, num_heads=2, seq_len=S, q_block=Q_BLOCK, k_block=K_BLOCK, generator=g)

    assert (draw(6).kv_num_blocks == 1).all()
    assert torch.equal(draw(6).to_blocks(), draw(6).to_blocks())


@pytest.mark.parametrize("density", [0.0, -0.5, 1.5])
def test_random_bad_density(density):
    with pytest.raises(ValueError, match=rf"density must be in \(0, 1\]; got {density}"):
        SparseMask.random(density, num_heads=2, seq_len=S)


# ---------------------------------------------------------------------------------------------- repr / to
def test_repr_small_mask_draws_grid():
    blocks = torch.tensor([[[1, 0, 0], [1, 1, 0], [0, 1, 1]]], dtype=torch.bool)
    text = repr(SparseMask.from_block_mask(blocks, q_block=16, k_block=16, seq_len=40))

    assert "heads=1, seq_len=40, blocks=16x16, grid=3x3" in text
    assert "density=0.6000" in text  # (256 + 512 + 192) / 1600, see test_density_of_hand_built_mask
    assert text.splitlines()[-4:] == ["[batch 0, head 0]", "#..", "##.", ".##"]


def test_repr_large_mask_has_no_grid():
    mask = SparseMask.full(num_heads=2, seq_len=33 * 16, q_block=16, k_block=16)  # 33 query blocks > 32
    text = repr(mask)
    assert "grid=33x33" in text and "density=1.0000" in text
    assert "\n" not in text and "#" not in text


def test_to_device():
    mask = SparseMask.random(0.5, num_heads=2, seq_len=S, q_block=Q_BLOCK, k_block=K_BLOCK, text=(0, 20))
    moved = mask.to("cpu")
    assert moved.device == torch.device("cpu")
    assert torch.equal(moved.to_blocks(), mask.to_blocks())
    assert (moved.q_block, moved.k_block, moved.seq_len, moved.text) == (Q_BLOCK, K_BLOCK, S, (0, 20))

    meta = mask.to("meta")  # a mask without data still describes itself
    assert meta.device == torch.device("meta")
    assert "density" not in repr(meta) and "grid=7x4" in repr(meta)


# ---------------------------------------------------------------------------------------------- FlexAttention
def _flex_token_mask(block_mask, batch):
    """The token mask FlexAttention applies for `block_mask`, read from its public fields: a full block is
    attended everywhere, a partial block where `mask_mod` allows, and nothing past `seq_lengths`."""
    q_bs, kv_bs = block_mask.BLOCK_SIZE
    s_q, s_kv = block_mask.seq_lengths

    def blocks_of(num, idx):
        if num is None:
            return torch.zeros_like(block_mask.to_dense(), dtype=torch.bool)
        return BlockMask.from_kv_blocks(num, idx, BLOCK_SIZE=(q_bs, kv_bs)).to_dense().bool()

    rows, cols = torch.arange(s_q) // q_bs, torch.arange(s_kv) // kv_bs
    full = blocks_of(block_mask.full_kv_num_blocks, block_mask.full_kv_indices)[..., rows[:, None], cols[None, :]]
    partial = blocks_of(block_mask.kv_num_blocks, block_mask.kv_indices)[..., rows[:, None], cols[None, :]]
    heads = partial.shape[1]
    allowed = create_mask(block_mask.mask_mod, batch, heads, s_q, s_kv, device="cpu")
    return full | (partial & allowed)


@pytest.mark.parametrize("per_batch", [False, True], ids=["shared", "per-batch"])
def test_to_flex_block_mask_same_token_mask(per_batch):
    lead = (2, 3) if per_batch else (3,)
    mask = SparseMask.from_block_mask(_random_blocks(*lead, seed=7), Q_BLOCK, K_BLOCK, S, text=(S - 30, S))
    flex = mask.to_flex_block_mask()

    assert flex.BLOCK_SIZE == (Q_BLOCK, K_BLOCK) and flex.seq_lengths == (S, S)
    assert torch.equal(flex.to_dense().bool(), mask.to_blocks())
    assert (flex.kv_num_blocks == 0).all(), "without padding every block is full: no mask_mod work"
    assert torch.equal(_flex_token_mask(flex, batch=mask.batch), mask.to_dense())


def test_to_flex_block_mask_with_key_padding_same_token_mask():
    mask = SparseMask.from_block_mask(_random_blocks(3, seed=8), Q_BLOCK, K_BLOCK, S, text=(0, 40))
    padding = torch.rand(2, S, generator=torch.Generator().manual_seed(9)) < 0.3
    flex = mask.to_flex_block_mask(key_padding_mask=padding)

    assert torch.equal(flex.to_dense().bool(), mask.to_blocks())
    expected = mask.to_dense() & ~padding[:, None, None, :]  # [2, 3, S, S]
    assert torch.equal(_flex_token_mask(flex, batch=2), expected)


def test_compiled_flex_attention_with_padding_matches_reference():
    # Eager flex_attention ignores the block structure (it applies only mask_mod on the dense score
    # matrix), so the kernel run must be compiled. On CPU, torch 2.13's inductor compiles the
    # partial-block form (with key padding) but not the full-block form ("'kv_indices' was not declared"
    # in the generated C++); the full-block form is compared on the GPU in test_block_sparse.py.
    from torch.nn.attention.flex_attention import flex_attention

    g = torch.Generator().manual_seed(10)
    q, k, v = (torch.randn(2, 3, S, 64, generator=g) for _ in range(3))
    mask = SparseMask.from_block_mask(_random_blocks(3, seed=11), Q_BLOCK, K_BLOCK, S, text=(S - 30, S))
    padding = torch.rand(2, S, generator=g) < 0.3
    try:
        out = torch.compile(flex_attention)(q, k, v, block_mask=mask.to_flex_block_mask(padding))
    except Exception as exc:  # inductor wraps these in InductorError: no usable C++ toolchain here
        if "CppCompileError" in str(exc) or "InvalidCxxCompiler" in str(exc):
            pytest.skip(f"inductor cannot compile FlexAttention for CPU here: {str(exc).splitlines()[0]}")
        raise
    expected = block_sparse_attention_reference(q, k, v, mask, key_padding_mask=padding)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("block", [24, 8, 0, 100, 16.0])
@pytest.mark.parametrize("side", ["q_block", "k_block"])
def test_bad_block_size(side, block):
    sizes = {"q_block": 32, "k_block": 32, side: block}
    blocks = torch.ones(2, 14, 14, dtype=torch.bool)
    with pytest.raises(ValueError, match=rf"{side} must be a power of two >= 16 .*; got {block!r}"):
        SparseMask.from_block_mask(blocks, sizes["q_block"], sizes["k_block"], seq_len=430)


@pytest.mark.parametrize("shape", [(2, 3, N_Q, N_K + 1), (3, N_Q + 1, N_K)])
def test_blocks_shape_for_another_seq_len(shape):
    blocks = torch.ones(*shape, dtype=torch.bool)
    expected = f"blocks for seq_len={S}, q_block=32, k_block=64 must end in [nQ, nK] = [7, 4]; got shape {shape}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        SparseMask.from_block_mask(blocks, Q_BLOCK, K_BLOCK, S)


@pytest.mark.parametrize("shape", [(N_Q, N_K), (1, 2, 3, N_Q, N_K)])
def test_blocks_wrong_rank(shape):
    blocks = torch.ones(*shape, dtype=torch.bool)
    with pytest.raises(ValueError, match=re.escape(f"[H, nQ, nK] or [B, H, nQ, nK]; got shape {shape}")):
        SparseMask.from_block_mask(blocks, Q_BLOCK, K_BLOCK, S)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.float32])
def test_blocks_not_bool(dtype):
    blocks = torch.ones(3, N_Q, N_K, dtype=dtype)
    with pytest.raises(ValueError, match=rf"blocks must be a bool tensor; got dtype {dtype}"):
        SparseMask.from_block_mask(blocks, Q_BLOCK, K_BLOCK, S)


@pytest.mark.parametrize("seq_len", [0, -5, 217.0])
def test_bad_seq_len(seq_len):
    with pytest.raises(ValueError, match=rf"seq_len must be a positive int; got {seq_len!r}"):
        SparseMask.from_block_mask(torch.ones(3, 1, 1, dtype=torch.bool), Q_BLOCK, K_BLOCK, seq_len)


def test_to_dense_refuses_huge_masks():
    mask = SparseMask.full(num_heads=2, seq_len=12_000)  # 2 * 12,000^2 = 288M booleans > 2^28
    with pytest.raises(ValueError, match=r"would build 288,000,000 booleans \(B'=1, H=2, S=12000\)"):
        mask.to_dense()


def test_module_docstring_example():
    import doctest

    import vidsparse.core.mask

    result = doctest.testmod(vidsparse.core.mask, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
