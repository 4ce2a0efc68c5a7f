"""diffusers integration: model adapters, sparse attention processors, the step hook, apply/remove."""

from .adapters import ModelAdapter, adapter_for, register_adapter, supported_classes
from .apply import SparseHandle, apply, remove, sparse_attn_processors
from .context_parallel import cp_plan_for, enable_context_parallel

__all__ = [
    "ModelAdapter", "SparseHandle", "adapter_for", "apply", "cp_plan_for", "enable_context_parallel",
    "register_adapter", "remove", "sparse_attn_processors", "supported_classes",
]
