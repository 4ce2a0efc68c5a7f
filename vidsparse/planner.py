"""The planner seam: which mask each attention layer uses at each denoising step.

A processor asks its planner for a `SparseMask` at (layer, step, branch) for the current token
layout; `None` means "run dense, exactly as stock". This module ships the fixed grid-unit
patterns with dense warm-up. The pattern search, online profiling and cached deltas plug into the
same `Planner.plan` call.

Example::

    >>> from vidsparse.layout import TokenLayout
    >>> planner = FixedPatternPlanner(SparseConfig(method="spatial", frames=1, warmup_steps=2))
    >>> layout = TokenLayout(frames=4, height=8, width=8, text_len=16)
    >>> planner.plan(PlanContext(layer=0, step=0, branch="cond", layout=layout, heads=2, device="cpu")) is None
    True
    >>> planner.plan(PlanContext(layer=0, step=2, branch="cond", layout=layout, heads=2, device="cpu")).num_heads
    2
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import SparseConfig
from .layout import TokenLayout
from .mask import SparseMask
from .patterns import frame_band, temporal

__all__ = ["PlanContext", "Planner", "FixedPatternPlanner", "StaticPlanner", "planner_for"]


@dataclass(frozen=True)
class PlanContext:
    """Where an attention call sits: replaced-layer index, denoising step and CFG branch of this
    generation ("cond", "uncond", "cond_uncond" for CogVideoX's batched CFG, or None outside a
    pipeline), the token layout, and the head count and device of q."""

    layer: int
    step: int
    branch: str | None
    layout: TokenLayout
    heads: int
    device: torch.device | str


class Planner:
    """Base planner: always dense. Subclasses return a `SparseMask` for the calls they sparsify."""

    def plan(self, ctx: PlanContext) -> SparseMask | None:
        return None

    def reset(self) -> None:
        """Forget per-generation state (called between generations)."""

    def bind(self, transformer, num_layers: int, num_heads: int | None) -> None:
        """Called once at installation with the transformer and its replaced layers; refuse a model that does not fit."""

    def describe(self, mask: SparseMask) -> tuple[list[float], list[str]]:
        """Per head: the realised density of a mask this planner returned, and the pattern's name
        (for reports; computing densities synchronises with the device)."""
        per_head = mask.density_per_head().mean(0).tolist()
        return per_head, ["sparse"] * len(per_head)


class FixedPatternPlanner(Planner):
    """The same grid-unit pattern for every head of every layer, after dense warm-up.

    Masks are built once per (layout, heads, device) and reused by every layer and step, together
    with their per-head density (measured once, at build time: it synchronises).
    """

    def __init__(self, config: SparseConfig):
        self.config = config
        self._cache: dict[tuple, SparseMask] = {}
        self._described: dict[int, tuple[list[float], list[str]]] = {}

    def plan(self, ctx: PlanContext) -> SparseMask | None:
        cfg = self.config
        if cfg.method == "dense" or ctx.step < cfg.warmup_steps or ctx.layer < cfg.warmup_layers:
            return None
        key = (ctx.layout, ctx.heads, str(ctx.device))
        if key not in self._cache:
            if cfg.method == "spatial":
                mask = frame_band(ctx.layout, ctx.heads, cfg.frames, cfg.q_block, cfg.k_block, device=ctx.device)
            else:
                mask = temporal(ctx.layout, ctx.heads, cfg.radius, cfg.q_block, cfg.k_block, device=ctx.device)
            self._cache[key] = mask
            per_head = mask.density_per_head().mean(0).tolist()
            self._described[id(mask)] = (per_head, [cfg.method] * len(per_head))
        return self._cache[key]

    def describe(self, mask: SparseMask) -> tuple[list[float], list[str]]:
        """Measured once, when the mask was built."""
        return self._described.get(id(mask)) or super().describe(mask)


class StaticPlanner(Planner):
    """Each head its searched pattern (`vidsparse search`), after dense warm-up.

    The pattern file is in grid units: masks are compiled per token layout, each distinct pattern once, and cached per
    (layout, layer). All heads of a layer run in one kernel launch, each with its own block list.
    """

    def __init__(self, config: SparseConfig):
        from .search.pattern_file import PatternFile

        self.config = config
        self.file = PatternFile.load(config.patterns)
        if config.eps is not None or config.lam is not None:
            self.file = self.file.reselect(config.eps, config.lam)
        self.q_block, self.k_block = self.file.params["q_block"], self.file.params["k_block"]
        self._blocks: dict[tuple, torch.Tensor] = {}
        self._masks: dict[tuple, SparseMask] = {}
        self._described: dict[int, tuple[list[float], list[str]]] = {}

    def bind(self, transformer, num_layers: int, num_heads: int | None) -> None:
        self.file.check(transformer, num_layers, num_heads)

    def plan(self, ctx: PlanContext) -> SparseMask | None:
        cfg = self.config
        if ctx.step < cfg.warmup_steps or ctx.layer < cfg.warmup_layers:
            return None
        patterns = self.file.patterns(ctx.layer)
        if all(p.kind == "full" for p in patterns):
            return None
        key = (ctx.layout, ctx.layer, str(ctx.device))
        if key not in self._masks:
            blocks = []
            for p in patterns:
                pkey = (ctx.layout, p, str(ctx.device))
                if pkey not in self._blocks:
                    self._blocks[pkey] = p.blocks(ctx.layout, self.q_block, self.k_block, ctx.device)
                blocks.append(self._blocks[pkey])
            mask = SparseMask.from_block_mask(
                torch.stack(blocks), self.q_block, self.k_block, ctx.layout.seq_len, text=ctx.layout.text_range
            )
            self._masks[key] = mask
            per_head = mask.density_per_head().mean(0).tolist()
            self._described[id(mask)] = (per_head, [p.family for p in patterns])
        return self._masks[key]

    def describe(self, mask: SparseMask) -> tuple[list[float], list[str]]:
        return self._described.get(id(mask)) or super().describe(mask)


def planner_for(config: SparseConfig) -> Planner:
    """The planner that runs `config.method`."""
    if config.method == "dense":
        return Planner()
    if config.method == "static":
        return StaticPlanner(config)
    return FixedPatternPlanner(config)
