"""vidsparse: sparse attention for video diffusion transformers in diffusers.

    >>> import vidsparse
    >>> handle = vidsparse.apply(pipe, "spatial")   # or a vidsparse.SparseConfig
    >>> handle.remove()

The package is layered; each layer imports only those below it:

- `core`: the contract, torch only (`TokenLayout`, `SparseMask`, patterns, pattern files, `AttentionPlan`, selection);
- `kernels`: the Triton kernels, one validated launcher each, with PyTorch references;
- `methods`: planners, which decide and never execute (registry, `SparseConfig`, static, profile, delta, hybrid);
- `runtime`: runs any plan and knows no model (executor, backends, statistics, per-layer state);
- `pipelines`: the only importer of diffusers (adapters, processors, the step hook, apply/remove, context parallel);
- `search`: the offline pattern search; `yardstick`: the trained built-in models;
- `app`: the product, imported by nothing in the library (CLI, generate, compare, reports, bench, model configs).

The diffusers integration (`apply`, `remove`, `sparse_attn_processors`) imports diffusers on
first use, so the kernels and masks load without it.
"""

from .methods.config import METHODS, PRESETS, SparseConfig, register_method
from .kernels import KernelConfig, block_sparse_attention, block_sparse_attention_reference
from .core.layout import FRAME_MAJOR, SPATIAL_MAJOR, TokenLayout, TokenOrder
from .core.mask import SparseMask
from .core.plan import AttentionPlan, HeadGroup, PlanContext, Probe

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


# The flat 0.1 layout: `vidsparse.plan`, `vidsparse.config`, ... still resolve for one release, with a warning.
_OLD_MODULES = (
    "builtin", "cli", "config", "configs", "delta", "generate", "hybrid", "layout", "mask", "media", "metrics",
    "pattern_file", "patterns", "plan", "planner", "profile", "report", "runinfo", "select", "selfcheck", "static",
    "wordlevel", "bench",
)


def __getattr__(name: str):
    if name in _OLD_MODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
