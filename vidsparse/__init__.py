"""vidsparse: sparse attention for video diffusion transformers in diffusers."""

from .kernels import KernelConfig, block_sparse_attention, block_sparse_attention_reference
from .mask import SparseMask

__version__ = "0.1.0"

__all__ = ["KernelConfig", "SparseMask", "block_sparse_attention", "block_sparse_attention_reference", "__version__"]
