"""Helpers shared by the kernel tests of the column-sparse, permute and merge modules: random
inputs in the layouts diffusers produces, outputs poisoned with NaN, and the error measures of
test_block_sparse.py's budget (whose module docstring explains them, the interpreter's
truncating bf16 casts included); and `cpu_paths`, the interpreter switched off for a test that runs what a CPU
user runs."""

import contextlib
from unittest import mock

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FLOOR = {torch.float32: 1e-5, torch.float16: 1e-4, torch.bfloat16: 1e-3}  # below eager's own error for half types
LSE_FLOOR = 1e-5  # absolute, in nats; |lse| stays below about 10 here


def qkv(batch, h, s, d, *, dtype=torch.float32, layout="bhsd", seed=0):
    """Fresh random q, k, v `[B, H, S, D]`.

    layout: "bhsd" contiguous; "bshd" transposed views of `[B, S, H, D]` tensors (diffusers' layout);
    "qkv" slices of one fused `[B, S, 3, H, D]` projection; "dstride" views whose last dim is not
    contiguous (`[B, H, D, S]` transposed).
    """
    g = torch.Generator(device=DEVICE).manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, device=DEVICE, dtype=torch.float32).to(dtype)

    if layout == "bhsd":
        return tuple(randn(batch, h, s, d) for _ in range(3))
    if layout == "bshd":
        return tuple(randn(batch, s, h, d).transpose(1, 2) for _ in range(3))
    if layout == "qkv":
        fused = randn(batch, s, 3, h, d)
        return tuple(fused[:, :, i].transpose(1, 2) for i in range(3))
    if layout == "dstride":
        return tuple(randn(batch, h, d, s).transpose(2, 3) for _ in range(3))
    raise AssertionError(layout)


_torch_empty = torch.empty


@contextlib.contextmanager
def poisoned_outputs():
    """Every floating-point tensor allocated through torch.empty inside is pre-filled with NaN.

    Yields the list of those tensors, so that a test can assert the launcher still allocates this way.
    """
    poisoned = []

    def empty_with_nan(*a, **kw):
        t = _torch_empty(*a, **kw)
        if t.is_floating_point():
            t.fill_(float("nan"))
            poisoned.append(t)
        return t

    with mock.patch.object(torch, "empty", empty_with_nan):
        yield poisoned


def truncate_to_bf16(x):
    """float32 -> bfloat16 by dropping the low 16 bits, as Triton's interpreter casts."""
    return (x.float().view(torch.int32) & -65536).view(torch.float32).to(torch.bfloat16)


def rel_err(x, golden):
    return ((x.double() - golden.double()).norm() / golden.double().norm()).item()


@contextlib.contextmanager
def cpu_paths():
    """The PyTorch paths a CPU user's run takes: conftest puts Triton in its interpreter (read at each launch), which
    runs the kernels at a hundredth of the speed; inside this context it is off, and restored after it."""
    import pytest
    import triton

    with pytest.MonkeyPatch.context() as mp:
        # The knob first: monkeypatch restores the value it reads now, which after the delenv would be False for good.
        if hasattr(triton, "knobs"):  # the knob keeps the value it read once Triton ran in the interpreter
            mp.setattr(triton.knobs.runtime, "interpret", False)
        mp.delenv("TRITON_INTERPRET", raising=False)
        yield
