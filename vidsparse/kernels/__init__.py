"""Triton attention kernels. Each has one validated public launcher and a PyTorch reference beside it."""

from .block_scores import block_scores, estimate_block_mass, pool_blocks
from .block_sparse import SUPPORTED_HEAD_DIMS, KernelConfig, block_sparse_attention
from .column_sparse import (
    ColumnKernelConfig, attention_topk_and_rest, column_bitmask, column_sparse_attention, topk_columns,
)
from .merge import merge_attention, subtract_attention
from .permute import permute_tokens, permute_tokens_reference
from .reference import (
    block_sparse_attention_gathered, block_sparse_attention_reference, column_sparse_attention_reference,
)

__all__ = [
    "SUPPORTED_HEAD_DIMS",
    "attention_topk_and_rest",
    "block_scores",
    "estimate_block_mass",
    "pool_blocks",
    "ColumnKernelConfig",
    "KernelConfig",
    "block_sparse_attention",
    "block_sparse_attention_gathered",
    "block_sparse_attention_reference",
    "column_bitmask",
    "column_sparse_attention",
    "column_sparse_attention_reference",
    "merge_attention",
    "permute_tokens",
    "permute_tokens_reference",
    "subtract_attention",
    "topk_columns",
]
