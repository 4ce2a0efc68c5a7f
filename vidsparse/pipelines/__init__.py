"""diffusers integration: model adapters, sparse attention processors, the step hook, apply/remove."""

from .adapters import ModelAdapter, adapter_for, register_adapter, supported_classes
from .apply import SparseHandle, apply, remove, sparse_attn_processors
from .context_parallel import cp_plan_for

__all__ = [
    "ModelAdapter", "SparseHandle", "adapter_for", "apply", "cp_plan_for", "register_adapter", "remove",
    "sparse_attn_processors", "supported_classes",
]
