"""vidsparse: sparse attention for video diffusion transformers in diffusers.

    >>> import vidsparse
    >>> handle = vidsparse.apply(pipe, "spatial")   # or a vidsparse.SparseConfig
    >>> handle.remove()

The diffusers integration (`apply`, `remove`, `sparse_attn_processors`) imports diffusers on
first use, so the kernels and masks load without it.
"""

from . import plan, planner  # noqa: F401  (the plan seam, for `vidsparse.plan.AttentionPlan` and planners)
from .config import METHODS, PRESETS, SparseConfig, register_method
from .kernels import KernelConfig, block_sparse_attention, block_sparse_attention_reference
from .layout import FRAME_MAJOR, SPATIAL_MAJOR, TokenLayout, TokenOrder
from .mask import SparseMask
from .plan import AttentionPlan, HeadGroup, PlanContext, Probe

__version__ = "0.1.0"

__all__ = [
    "AttentionPlan", "FRAME_MAJOR", "HeadGroup", "KernelConfig", "METHODS", "PRESETS", "PlanContext", "Probe",
    "SPATIAL_MAJOR", "SparseConfig", "SparseMask", "TokenLayout", "TokenOrder", "apply", "register_method",
    "block_sparse_attention", "block_sparse_attention_reference", "remove", "sparse_attn_processors",
    "__version__",
]


def apply(target, config="dense", *, planner=None):
    """Install vidsparse on a pipeline or transformer; see `vidsparse.pipelines.apply`."""
    from .pipelines import apply as _apply

    return _apply(target, config, planner=planner)


def remove(target) -> None:
    """Undo `apply` / `sparse_attn_processors`; see `vidsparse.pipelines.remove`."""
    from .pipelines import remove as _remove

    _remove(target)


def sparse_attn_processors(transformer, config="dense") -> dict:
    """The per-layer processor dict for `set_attn_processor`; see `vidsparse.pipelines.sparse_attn_processors`."""
    from .pipelines import sparse_attn_processors as _procs

    return _procs(transformer, config)
