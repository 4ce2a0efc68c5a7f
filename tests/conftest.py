"""Test set-up shared by every test file.

Without a CUDA GPU the Triton kernels run in Triton's interpreter. Triton reads TRITON_INTERPRET when a
`@triton.jit` function is decorated, and vidsparse imports its kernel module only on the first launch, so
setting the variable here, before any test runs, is early enough. A value the caller set is kept.

Tests marked `@pytest.mark.gpu` (declared in pyproject.toml) are skipped when no CUDA GPU is present.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip_gpu)
