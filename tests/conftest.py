"""Test set-up shared by every test file.

Without a CUDA GPU the Triton kernels run in Triton's interpreter. Triton reads TRITON_INTERPRET when a
`@triton.jit` function is decorated, and vidsparse imports its kernel module only on the first launch, so
setting the variable here, before any test runs, is early enough. A value the caller set is kept.

Under pytest-xdist (`-n 2`, the README's test command) each worker runs torch on one thread, as do the
processes the tests start: two workers of two threads on two cores run slower than one.

Tests marked `@pytest.mark.gpu` (declared in pyproject.toml) are skipped when no CUDA GPU is present.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
if os.environ.get("PYTEST_XDIST_WORKER") and not torch.cuda.is_available():
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip_gpu)
