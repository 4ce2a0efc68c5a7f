"""`merge_attention` and `subtract_attention`: the log-sum-exp algebra of partial attentions.

Partial attentions come from the column-sparse reference (plain PyTorch, so these tests are fast):
a random split of every query block's keys into two disjoint column lists, each with its own
attention, against the attention over both lists together.
"""

import re

import pytest
import torch
from attention_checks import DEVICE, qkv, rel_err

from vidsparse.kernels import column_sparse_attention_reference, merge_attention, subtract_attention

B, H, S, D, Q_BLOCK = 2, 3, 217, 64, 32


def _split(seed=0, dtype=torch.float32):
    """(q, k, v), and the (o, lse) of the whole, of part A and of part B (B = whole minus A)."""
    q, k, v = qkv(B, H, S, D, dtype=dtype, seed=seed)
    n_q = -(-S // Q_BLOCK)
    g = torch.Generator().manual_seed(seed)
    order = torch.rand(B, H, n_q, S, generator=g).argsort(-1).int().to(DEVICE)  # a random order of every key
    cut = torch.randint(1, S, (B, H, n_q), generator=g).int().to(DEVICE)

    def attend(columns, counts):
        return column_sparse_attention_reference(q, k, v, columns, counts, q_block=Q_BLOCK, return_lse=True)

    whole = attend(order, torch.full_like(cut, S))
    part_a = attend(order, cut)  # the first `cut` keys of the order
    part_b = attend(_shift(order, cut), S - cut)  # the others
    return (q, k, v), whole, part_a, part_b


def _shift(order, cut):
    """Each list rotated left by its cut: the keys past the cut come first."""
    idx = (torch.arange(S, device=DEVICE) + cut.unsqueeze(-1).long()) % S
    return order.gather(-1, idx)


def test_merge_of_two_disjoint_parts_is_the_whole():
    _, (o, lse), (o_a, lse_a), (o_b, lse_b) = _split(seed=1)
    merged, merged_lse = merge_attention(o_a, lse_a, o_b, lse_b)
    assert merged.dtype == o.dtype and merged_lse.dtype == torch.float32
    torch.testing.assert_close(merged, o, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(merged_lse, lse, rtol=1e-6, atol=1e-5)
    swapped, swapped_lse = merge_attention(o_b, lse_b, o_a, lse_a)
    torch.testing.assert_close(swapped, merged, rtol=1e-6, atol=1e-7)


def test_subtract_then_merge_gives_the_whole_back():
    _, (o, lse), (o_a, lse_a), (o_b, lse_b) = _split(seed=2)
    o_rest, lse_rest = subtract_attention(o, lse, o_a, lse_a)
    # The rest is the attention over the other part, up to the rounding that cancellation amplifies.
    assert rel_err(o_rest, o_b) < 1e-4
    torch.testing.assert_close(lse_rest, lse_b, rtol=1e-5, atol=1e-4)
    back, back_lse = merge_attention(o_rest, lse_rest, o_a, lse_a)
    torch.testing.assert_close(back, o, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(back_lse, lse, rtol=1e-6, atol=1e-5)


def test_subtract_into_the_parts_own_buffer_is_the_same_rest():
    """`out=o_part` (the delta refresh reuses the column output's buffer): the same rest, written in place."""
    _, (o, lse), (o_a, lse_a), _ = _split(seed=3)
    expect = subtract_attention(o, lse, o_a, lse_a)
    buffer = o_a.clone()
    o_rest, lse_rest = subtract_attention(o, lse, buffer, lse_a, out=buffer)
    assert o_rest.data_ptr() == buffer.data_ptr()
    assert torch.equal(o_rest, expect[0]) and torch.equal(lse_rest, expect[1])
    with pytest.raises(ValueError, match="out must be a"):
        subtract_attention(o, lse, o_a, lse_a, out=o_a[..., :8])


def test_half_precision_outputs_keep_their_dtype():
    _, (o, lse), (o_a, lse_a), (o_b, lse_b) = _split(seed=3, dtype=torch.bfloat16)
    merged, merged_lse = merge_attention(o_a, lse_a, o_b, lse_b)
    assert merged.dtype == torch.bfloat16 and merged_lse.dtype == torch.float32
    assert rel_err(merged, o) < 1e-2  # two bf16 roundings of the parts and one of the sum
    o_rest, _ = subtract_attention(o, lse, o_a, lse_a)
    assert o_rest.dtype == torch.bfloat16


def test_merge_with_an_empty_side():
    _, _, (o_a, lse_a), _ = _split(seed=4)
    empty_o, empty_lse = torch.zeros_like(o_a), torch.full_like(lse_a, float("-inf"))
    for merged, merged_lse in (merge_attention(o_a, lse_a, empty_o, empty_lse), merge_attention(empty_o, empty_lse, o_a, lse_a)):
        assert torch.equal(merged, o_a) and torch.equal(merged_lse, lse_a)
    both, both_lse = merge_attention(empty_o, empty_lse, empty_o, empty_lse)
    assert (both == 0).all() and torch.isneginf(both_lse).all()


def test_subtract_edge_cases():
    _, (o, lse), _, _ = _split(seed=5)
    # A part that is the whole leaves nothing; an empty part leaves the whole.
    rest, rest_lse = subtract_attention(o, lse, o, lse)
    assert (rest == 0).all() and torch.isneginf(rest_lse).all()
    # ... also with the part's lse a rounding above the whole's.
    rest, rest_lse = subtract_attention(o, lse, o, lse + 4 * torch.finfo(torch.float32).eps * lse.abs())
    assert (rest == 0).all() and torch.isneginf(rest_lse).all()
    empty_o, empty_lse = torch.zeros_like(o), torch.full_like(lse, float("-inf"))
    rest, rest_lse = subtract_attention(o, lse, empty_o, empty_lse)
    assert torch.equal(rest, o) and torch.equal(rest_lse, lse)
    # An empty whole: nothing to subtract from, whatever the part says.
    rest, rest_lse = subtract_attention(empty_o, empty_lse, empty_o, empty_lse)
    assert (rest == 0).all() and torch.isneginf(rest_lse).all()
    assert not rest.isnan().any()


def test_a_rest_below_the_outputs_rounding_is_empty_in_bf16_and_kept_in_float32():
    """A part with all but 0.1% of the mass: bf16 outputs round at 0.4%, so `o - r o_part` is noise four times
    the size of the rest it stands for, and the rest is empty (issue 23, defect 5); float32 outputs keep it."""
    _, (o, lse), _, _ = _split(seed=6)
    part_lse = lse + torch.log1p(torch.tensor(-1e-3))  # r = 0.999
    rest, rest_lse = subtract_attention(o.bfloat16(), lse, o.bfloat16(), part_lse)
    assert (rest == 0).all() and torch.isneginf(rest_lse).all()
    rest, rest_lse = subtract_attention(o, lse, o, part_lse)
    assert torch.isfinite(rest_lse).all() and torch.allclose(rest, o, atol=1e-3)  # o's own rest: o


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: (a[0][..., :32], *a[1:]), re.escape("o1 and o2 must share shape and dtype")),
        (lambda a: (a[0].half(), *a[1:]), re.escape("o1 and o2 must share shape and dtype")),
        (lambda a: (a[0], a[1][..., :4], *a[2:]), re.escape("lse1 and lse2 must have the shape of o1 without its last dim")),
        (lambda a: (a[0], a[1].int(), *a[2:]), re.escape("lse1 must be a floating-point tensor; got torch.int32")),
        (lambda a: (a[0], a[1], a[2].to("meta"), a[3]), re.escape("all four tensors must be on one device")),
        (lambda a: (a[0], a[1], a[2], a[3].to("meta")), re.escape("all four tensors must be on one device")),
    ],
    ids=["o-shape", "o-dtype", "lse-shape", "lse-dtype", "o-device", "lse-device"],
)
def test_bad_input(change, message):
    o = torch.zeros(B, H, 5, D, device=DEVICE)
    lse = torch.zeros(B, H, 5, device=DEVICE)
    args = change((o, lse, o.clone(), lse.clone()))
    with pytest.raises(ValueError, match=message):
        merge_attention(*args)
    with pytest.raises(ValueError, match=message.replace("o1", "o").replace("o2", "o_part").replace("lse1", "lse").replace("lse2", "lse_part")):
        subtract_attention(*args)
