"""The "static" method: each head its searched pattern (Sparse-vDiT's idea), from a pattern file of `vidsparse search`.

The pattern file is in grid units, so masks are compiled per token layout: each distinct pattern once, as one compact
mask row (only the visited blocks are stored) shared by every head and layer that uses it. A layer's call stacks its
heads' rows into one mask on the device, so all heads of a layer run in one kernel launch and stored mask memory
grows with the number of distinct patterns, not with layers x heads.

Example::

    >>> vidsparse.apply(pipe, {"method": "static", "patterns": "patterns.safetensors", "eps": 0.2})
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import SparseConfig
from .registry import register_method
from ..core.mask import SparseMask
from ..core.pattern_file import PatternFile
from ..core.plan import AttentionPlan, PlanContext, Probe
from .base import Planner

__all__ = ["StaticOptions", "StaticPlanner"]

_KEEP_LAYER_MASK_BYTES = 4 << 20  # layer masks up to this size are kept whole (the yardstick's: ~0.1 MB)


@dataclass(frozen=True)
class StaticOptions:
    """"static" options.

    Attributes:
        patterns: the pattern file's path (`vidsparse search` writes one), required.
        eps, lam: choose the heads' patterns again from the file's measured errors under this error budget and
            cost weight (None: the file's own choice). Block sizes come from the file (the blocks it was searched at).
    """

    patterns: str | None = None
    eps: float | None = None
    lam: float | None = None

    def __post_init__(self):
        if not self.patterns:
            raise ValueError(
                "method 'static' needs a pattern file: {'method': 'static', 'patterns': 'path.safetensors'}; "
                "make one with `vidsparse search`"
            )
        for name in ("eps", "lam"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or value < 0):
                raise ValueError(f"{name} must be a number >= 0 or None; got {value!r}")


@register_method("static", StaticOptions)
class StaticPlanner(Planner):
    """Each head its pattern from the file; all heads of a layer in one launch (see the module docstring)."""

    def __init__(self, config: SparseConfig):
        super().__init__(config)
        o = config.options
        self.file = PatternFile.load(o.patterns)
        if o.eps is not None or o.lam is not None:
            self.file = self.file.reselect(o.eps, o.lam)
        self.q_block, self.k_block = self.file.params["q_block"], self.file.params["k_block"]
        self._rows: dict[tuple, tuple[SparseMask, torch.Tensor]] = {}  # (layout, pattern, device) -> row, density
        self._layers: dict[int, tuple] = {}  # layer -> its patterns, or None when every head is full
        self._info: dict[tuple, tuple] = {}

    def bind(self, transformer, num_layers: int, num_heads: int | None) -> None:
        self.file.check(transformer, num_layers, num_heads)

    def reset(self) -> None:
        super().reset()
        self._rows.clear()
        self._info.clear()

    def patterns(self, layer: int):
        if layer not in self._layers:
            patterns = self.file.patterns(layer)
            self._layers[layer] = None if all(p.kind == "full" for p in patterns) else tuple(patterns)
        return self._layers[layer]

    def row(self, layout, pattern, device) -> tuple[SparseMask, torch.Tensor]:
        key = (layout, pattern, str(device))
        if key not in self._rows:
            mask = pattern.mask(layout, 1, self.q_block, self.k_block, device).compact()
            self._rows[key] = (mask, mask.density_per_head()[0])
        return self._rows[key]

    def stored_bytes(self) -> int:
        """Bytes of every compiled mask row held (the planner's mask memory)."""
        kept = sum(info[3].nbytes for info in self._info.values() if info[3] is not None)
        return sum(mask.nbytes for mask, _ in self._rows.values()) + kept

    def plan(self, ctx: PlanContext, probe: Probe | None) -> AttentionPlan:
        patterns = self.patterns(ctx.layer)
        if patterns is not None:  # this call's heads: all of them, or a rank's under Ulysses
            patterns = patterns[ctx.head_offset : ctx.head_offset + ctx.heads]
        if patterns is None or all(p.kind == "full" for p in patterns):
            return AttentionPlan.dense(ctx.heads, "full")
        key = (ctx.layer, ctx.head_offset, ctx.heads, ctx.layout, str(ctx.device))
        if key not in self._info:  # built once per layer: labels, densities and, when small, the stacked mask
            rows = [self.row(ctx.layout, p, ctx.device) for p in patterns]
            labels = tuple(dict.fromkeys(p.family for p in patterns))
            label_index = torch.tensor([[labels.index(p.family) for p in patterns]], device=ctx.device)
            density = torch.stack([d for _, d in rows]).view(1, -1)
            stacked = SparseMask.stack_heads([m for m, _ in rows])
            # A small layer mask is kept (the same object every call, so the sdpa backend's token mask is reused);
            # a large one is stacked again per call from the shared rows, so that stored memory stays per pattern.
            keep = stacked if stacked.nbytes <= _KEEP_LAYER_MASK_BYTES else None
            self._info[key] = (labels, label_index, density, keep, patterns)
        labels, label_index, density, mask, patterns = self._info[key]
        if mask is None:
            mask = SparseMask.stack_heads([self.row(ctx.layout, p, ctx.device)[0] for p in patterns])
        return AttentionPlan.sparse(mask, labels, label_index=label_index, density=density)
