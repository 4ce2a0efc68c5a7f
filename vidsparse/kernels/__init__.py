"""Triton attention kernels. Each has one validated public launcher and a PyTorch reference beside it."""

from .block_sparse import SUPPORTED_HEAD_DIMS, KernelConfig, block_sparse_attention
from .reference import block_sparse_attention_reference

__all__ = ["SUPPORTED_HEAD_DIMS", "KernelConfig", "block_sparse_attention", "block_sparse_attention_reference"]
