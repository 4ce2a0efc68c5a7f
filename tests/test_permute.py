"""`permute_tokens` (the Triton gather/scatter kernel) against `permute_tokens_reference`.

The kernel only moves elements, so every comparison is exact (torch.equal), outputs are poisoned
with NaN so that an unwritten element is caught, and every forward call is undone by its inverse.
"""

import re

import pytest
import torch
from attention_checks import DEVICE, poisoned_outputs, qkv

from vidsparse.kernels import permute_tokens, permute_tokens_reference

B = 2


def _perms(p, s, seed=0, dtype=torch.int64):
    g = torch.Generator().manual_seed(seed)
    rows = [torch.arange(s)] + [torch.randperm(s, generator=g) for _ in range(p - 1)]  # row 0: identity
    return torch.stack(rows).to(dtype).to(DEVICE)


def _orders(shape, p, seed=0):
    return torch.randint(0, p, shape, generator=torch.Generator().manual_seed(seed)).to(DEVICE)


def _permute(*args, **kwargs):
    with poisoned_outputs() as poisoned:
        y = permute_tokens(*args, **kwargs)
    assert poisoned, "the launcher no longer allocates through torch.empty: update the poisoning here"
    return y


def _check_round_trip(x, perms, order):
    y = _permute(x, perms, order)
    assert y.is_contiguous() and y.shape == x.shape and y.dtype == x.dtype
    assert torch.equal(y, permute_tokens_reference(x, perms, order))
    back = _permute(y, perms, order, inverse=True)
    assert torch.equal(back, permute_tokens_reference(y, perms, order, inverse=True))
    assert torch.equal(back, x)
    return y


@pytest.mark.parametrize(("seq_len", "head_dim"), [(217, 64), (105, 128), (1, 40)])
def test_round_trip_and_reference_per_batch_and_head(seq_len, head_dim):
    x = qkv(B, 3, seq_len, head_dim, seed=seq_len)[0]
    perms = _perms(4, seq_len, seed=seq_len)
    y = _check_round_trip(x, perms, _orders((B, 3), 4, seed=seq_len))
    assert seq_len == 1 or not torch.equal(y, x)


def test_shared_order_over_the_batch():
    x = qkv(B, 4, 217, 64, seed=1)[0]
    perms = _perms(3, 217, seed=1, dtype=torch.int32)
    order = torch.tensor([2, 0, 1, 2], device=DEVICE, dtype=torch.int32)
    y = _check_round_trip(x, perms, order)
    for h, row in enumerate(order.tolist()):  # each head really uses its own row
        assert torch.equal(y[:, h], x[:, h, perms[row].long()])


def test_default_order_is_row_zero_for_every_head():
    x = qkv(B, 3, 105, 64, seed=2)[0]
    perms = _perms(2, 105, seed=2).flip(0)  # row 0 now the random one
    y = _check_round_trip(x, perms, None)
    assert torch.equal(y, x[:, :, perms[0]])


@pytest.mark.parametrize("layout", ["qkv", "bshd", "dstride"])
def test_strided_inputs(layout):
    q, k, _ = qkv(B, 3, 217, 64, layout=layout, seed=3)
    assert not q.is_contiguous()
    perms = _perms(3, 217, seed=3)
    order = _orders((B, 3), 3, seed=3)
    for x in (q, k):
        _check_round_trip(x, perms, order)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_dtypes(dtype):
    x = qkv(B, 2, 105, 128, dtype=dtype, seed=4)[0]
    _check_round_trip(x, _perms(2, 105, seed=4), _orders((2,), 2, seed=4))


def test_strided_order_and_perms():
    # order_index as a column of a larger table, perms as a transposed view: strides are honoured.
    x = qkv(B, 3, 105, 64, seed=5)[0]
    perms = _perms(3, 105, seed=5).t().contiguous().t()
    order = _orders((3, B), 3, seed=5).t()
    assert perms.stride(1) != 1 and order.stride(1) != 1
    _check_round_trip(x, perms, order)


@pytest.mark.skipif(DEVICE == "cuda", reason="checks the plain fallback for CPU tensors without the interpreter")
def test_cpu_without_interpreter_falls_back_to_the_reference(monkeypatch):
    import triton

    monkeypatch.setattr(triton.knobs.runtime, "interpret", False)
    x = qkv(B, 2, 105, 64, seed=6)[0]
    perms, order = _perms(2, 105, seed=6), _orders((B, 2), 2, seed=6)
    y = permute_tokens(x, perms, order)
    assert torch.equal(y, permute_tokens_reference(x, perms, order))
    assert torch.equal(permute_tokens(y, perms, order, inverse=True), x)


def _bad_input_cases():
    x = qkv(B, 3, 105, 64)[0]
    perms = _perms(2, 105)
    cases = {
        "rank": ((x[0], perms), {}, re.escape("x must be a 4-D tensor [B, H, S, D]; got (3, 105, 64)")),
        "not-float": ((x.int(), perms), {}, re.escape("x must be floating point; got torch.int32")),
        "perms-length": ((x, perms[:, :104]), {}, re.escape("perms must be a tensor [P, S] = [P, 105]") + r".*got \(2, 104\)"),
        "perms-rank": ((x, perms[0]), {}, re.escape("perms must be a tensor [P, S] = [P, 105]") + r".*got \(105,\)"),
        "perms-dtype": ((x, perms.float()), {}, re.escape("perms must be int32 or int64; got torch.float32")),
        "perms-device": ((x, perms.to("meta")), {}, rf"perms is on meta, x on {DEVICE}"),
        "order-shape": (
            (x, perms, torch.zeros(4, dtype=torch.long, device=DEVICE)), {},
            re.escape("order_index must be a tensor [H] = [3] or [B, H] = [2, 3]; got (4,)"),
        ),
        "order-dtype": (
            (x, perms, torch.zeros(3, device=DEVICE)), {}, re.escape("order_index must be int32 or int64; got torch.float32")
        ),
        "order-device": (
            (x, perms, torch.zeros(3, dtype=torch.long, device="meta")), {}, rf"order_index is on meta, x on {DEVICE}"
        ),
    }
    return [pytest.param(*case, id=name) for name, case in cases.items()]


@pytest.mark.parametrize(("args", "kwargs", "message"), _bad_input_cases())
def test_bad_input(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        permute_tokens(*args, **kwargs)
    with pytest.raises(ValueError, match=message):
        permute_tokens_reference(*args, **kwargs)
