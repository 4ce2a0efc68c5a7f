"""Installing vidsparse on a diffusers pipeline or transformer, reversibly.

Two ways in, on diffusers' own extension points (per-layer attention processors and a model hook):

    >>> handle = vidsparse.apply(pipe, "spatial")            # every transformer of the pipeline
    >>> video = pipe(prompt, ...).frames[0]
    >>> handle.report()["density"], handle.report()["fallbacks"]
    >>> handle.remove()                                       # stock processors back, hook gone

or, for code that manages processors itself:

    >>> procs = vidsparse.sparse_attn_processors(pipe.transformer, "spatial")
    >>> pipe.transformer.set_attn_processor(procs)

`sparse_attn_processors` returns the complete per-layer dict that `set_attn_processor` needs
(vidsparse's processors where the adapter replaces attention, the current ones elsewhere) and
registers the step hook the processors read; `vidsparse.remove(pipe.transformer)` undoes both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..methods.config import SparseConfig
from ..methods.base import planner_for
from .adapters import adapter_for
from .hooks import HOOK_NAME, StepHook
from ..runtime.runtime import SparseRuntime

__all__ = ["apply", "remove", "sparse_attn_processors", "SparseHandle"]


def _as_config(config) -> SparseConfig:
    if isinstance(config, SparseConfig):
        return config
    if isinstance(config, str):
        return SparseConfig.preset(config)
    if isinstance(config, dict):
        return SparseConfig.from_dict(config)
    raise ValueError(f"config must be a preset name, a SparseConfig or a dict; got {type(config).__name__}")


def _transformers(target) -> list[torch.nn.Module]:
    """The transformers of a pipeline (Wan 2.2 has two), or the transformer itself."""
    if isinstance(target, torch.nn.Module):
        return [getattr(target, "_orig_mod", target)]
    found = [getattr(target, name, None) for name in ("transformer", "transformer_2")]
    found = [getattr(t, "_orig_mod", t) for t in found if isinstance(t, torch.nn.Module)]
    if not found:
        raise ValueError(
            f"expected a diffusers pipeline with a `transformer` or a transformer module; got {type(target).__name__}"
        )
    return found


def attn_processors(transformer: torch.nn.Module) -> dict:
    """`transformer.attn_processors`; for a transformer that is no diffusers `AttentionMixin` (Cosmos, Mochi), the
    same dict read off its attention modules: each submodule with a `processor`, keyed `<module>.processor`."""
    if hasattr(transformer, "attn_processors"):
        return dict(transformer.attn_processors)
    return {f"{name}.processor": module.processor for name, module in transformer.named_modules()
            if name and callable(getattr(module, "processor", None))}


def set_attn_processors(transformer: torch.nn.Module, processors: dict) -> None:
    """`transformer.set_attn_processor(processors)`, or per module (`set_processor`, else the `processor` attribute)
    on a transformer without it; `processors` keeps its entries (set_attn_processor empties the dict it is given)."""
    if hasattr(transformer, "set_attn_processor"):
        transformer.set_attn_processor(dict(processors))
        return
    for key, processor in processors.items():
        module = transformer.get_submodule(key.removesuffix(".processor"))
        if hasattr(module, "set_processor"):
            module.set_processor(processor)
        else:
            module.processor = processor


@dataclass
class _Install:
    transformer: torch.nn.Module
    original: dict
    runtime: SparseRuntime


def _install(transformer: torch.nn.Module, config: SparseConfig, planner=None,
             scheduler=None) -> tuple[dict, _Install]:
    from diffusers.hooks import HookRegistry

    adapter = adapter_for(transformer)
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    if registry.get_hook(HOOK_NAME) is not None:
        raise ValueError(
            f"vidsparse is already installed on this {type(transformer).__name__}; call vidsparse.remove() first"
        )
    original = attn_processors(transformer)
    runtime = SparseRuntime(config, planner if planner is not None else planner_for(config), adapter.name,
                            adapter.text_position, ask_planner_when_dense=planner is not None)
    processors, layer = {}, 0
    for key, current in original.items():
        if adapter.replaces(key):
            processors[key] = adapter.processor(runtime, layer, key)
            layer += 1
        else:
            processors[key] = current
    if layer == 0:
        raise ValueError(f"found no attention layer to replace in {type(transformer).__name__}")
    bind = getattr(runtime.planner, "bind", None)  # optional for a planner given to apply()
    if bind is not None:
        bind(transformer, layer, getattr(transformer.config, "num_attention_heads", None))
    hook = StepHook(runtime, adapter, scheduler)
    hook.original_processors = original  # what remove() puts back, however vidsparse was installed
    registry.register_hook(hook, HOOK_NAME)
    return processors, _Install(transformer, original, runtime)


def _uninstall(install: _Install) -> None:
    from diffusers.hooks import HookRegistry

    set_attn_processors(install.transformer, install.original)
    registry = HookRegistry.check_if_exists_or_initialize(install.transformer)
    hook = registry.get_hook(HOOK_NAME)
    if hook is not None:  # every branch's caches, on the GPU and in pinned host memory, go at once
        hook.reset_state(install.transformer)
        registry.remove_hook(HOOK_NAME, recurse=False)
    install.runtime.release()


class SparseHandle:
    """What `apply` installed: `report()` says what ran, `remove()` restores the stock model."""

    def __init__(self, installs: list[_Install]):
        self._installs = installs
        self.removed = False

    @property
    def runtimes(self) -> list[SparseRuntime]:
        return [i.runtime for i in self._installs]

    def reset(self) -> None:
        """Start a new generation (pipelines do this themselves at the end of every call)."""
        from diffusers.hooks import HookRegistry

        if self.removed:
            return
        for install in self._installs:
            hook = HookRegistry.check_if_exists_or_initialize(install.transformer).get_hook(HOOK_NAME)
            hook.reset_state(install.transformer)

    def report(self) -> dict:
        """Layers replaced, calls, realised attention density (1 for dense calls, averaged over every
        replaced-layer call) and fallback reasons; per transformer under "transformers"."""
        parts = [r.report() for r in self.runtimes]
        calls = sum(p["calls"] for p in parts)
        density = sum(p["density"] * p["calls"] for p in parts) / calls if calls else 1.0
        return {
            "config": parts[0]["config"],
            "layers": sum(p["layers"] for p in parts),
            "calls": calls,
            "sparse_calls": sum(p["sparse_calls"] for p in parts),
            "density": density,
            "fallbacks": sorted({f for p in parts for f in p["fallbacks"]}),
            # per replaced layer and head, every transformer's layers one after the other
            "heads": {key: [row for p in parts for row in p["heads"][key]] for key in parts[0]["heads"]},
            "sparse_calls_per_step": _summed([p["sparse_calls_per_step"] for p in parts]),
            "transformers": parts,
        }

    def remove(self) -> None:
        """Put back the processors found at `apply` time, take the step hook off and free every cache (GPU and
        pinned host memory) and memoised mask. The report stays readable."""
        if self.removed:
            return
        for install in self._installs:
            _uninstall(install)
        self.removed = True

    def __enter__(self) -> "SparseHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _summed(counts: list[dict]) -> dict:
    out: dict = {}
    for c in counts:
        for key, n in c.items():
            out[key] = out.get(key, 0) + n
    return out


def apply(target, config="dense", *, planner=None) -> SparseHandle:
    """Replace the video self-attention of a diffusers pipeline (or transformer) with vidsparse's.

    Args:
        target: a pipeline (every transformer it holds, Wan 2.2's `transformer_2` included) or a
            supported transformer (`vidsparse.pipelines.supported_classes()`: CogVideoX, HunyuanVideo, Wan
            and the families of `vidsparse/pipelines/families/`).
        config: a preset name (`vidsparse.PRESETS`), a `SparseConfig`, or a dict of its fields
            (`SparseConfig.from_dict`).
        planner: optional: your own planner, any object with `plan(ctx, probe) -> AttentionPlan`
            (`vidsparse.core.plan`), asked at every call after the config's warm-up, the dense method included
            (the pattern search's calibrator plugs in here); `bind`, `reset` and `report` are optional. One
            object serves every transformer of the pipeline (Wan 2.2's two), so it must not keep per-layer state
            of its own (`PlanContext.state` is per transformer). Default: the planner of `config.method`, one
            per transformer.

    Returns:
        A `SparseHandle`; `handle.remove()` restores the stock processors exactly.

    Example::

        >>> handle = vidsparse.apply(pipe, vidsparse.SparseConfig.make(method="spatial", frames=1, warmup_steps=10))
        >>> frames = pipe("a red circle bouncing", num_inference_steps=50).frames[0]
        >>> print(handle.report()["density"])
        >>> handle.remove()
    """
    cfg = _as_config(config)
    scheduler = None if isinstance(target, torch.nn.Module) else getattr(target, "scheduler", None)
    installs = []
    try:
        for transformer in _transformers(target):
            processors, install = _install(transformer, cfg, planner, scheduler)
            installs.append(install)
            set_attn_processors(transformer, processors)
    except Exception:
        for install in installs:
            _uninstall(install)
        raise
    for install in installs:  # Wan 2.2's experts: whichever runs frees the other's caches
        install.runtime.siblings = [i.runtime for i in installs if i is not install]
    return SparseHandle(installs)


def sparse_attn_processors(transformer: torch.nn.Module, config="dense") -> dict:
    """The complete per-layer processor dict for `transformer.set_attn_processor(...)`.

    Registers the step hook the processors need; `vidsparse.remove(transformer)` takes both off.
    """
    transformer = getattr(transformer, "_orig_mod", transformer)
    processors, _ = _install(transformer, _as_config(config))
    return processors


def remove(target) -> None:
    """Undo `apply` or `sparse_attn_processors` on a pipeline or transformer."""
    from diffusers.hooks import HookRegistry

    for transformer in _transformers(target):
        hook = HookRegistry.check_if_exists_or_initialize(transformer).get_hook(HOOK_NAME)
        if hook is None:
            raise ValueError(f"vidsparse is not installed on this {type(transformer).__name__}")
        _uninstall(_Install(transformer, hook.original_processors, hook.runtime))
