"""Planners: which attention each replaced layer runs at each denoising step, as an `AttentionPlan`.

A planner is any object with `plan(ctx, probe) -> AttentionPlan` (see `vidsparse.core.plan`); `Planner` is the base
with the optional `bind` and `reset`. Methods register a planner class with its options dataclass by name
(`vidsparse.methods.config.register_method`), so `SparseConfig(method=name)` runs it. The runtime runs the dense warm-up
(`warmup_steps`, `warmup_layers`) itself and asks the planner only after it.

This module holds the base, "dense", and the fixed grid-unit patterns "spatial" and "temporal"; "static",
"profile" and "delta" live in their own modules.

Example::

    >>> from vidsparse.core.layout import TokenLayout
    >>> planner = planner_for(SparseConfig.make("spatial", frames=1))
    >>> layout = TokenLayout(frames=4, height=8, width=8, text_len=16)
    >>> planner.plan(PlanContext(layer=0, step=2, branch="cond", layout=layout, heads=2, device="cpu"), None).groups[0].mode
    'sparse'
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import SparseConfig
from .registry import lookup, register_method
from ..core.layout import FRAME_MAJOR, SPATIAL_MAJOR, TokenLayout
from ..core.mask import SparseMask
from ..core.patterns import Pattern
from ..core.plan import AttentionPlan, PlanContext, Probe

__all__ = ["DenseOptions", "Planner", "SpatialOptions", "TemporalOptions", "planner_for", "check_blocks"]


def check_blocks(q_block: int, k_block: int) -> None:
    for name, value in (("q_block", q_block), ("k_block", k_block)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 16 or value & (value - 1):
            raise ValueError(f"{name} must be a power of two >= 16; got {value!r}")


class Planner:
    """Base planner: every call dense, in model order (the stock computation).

    `memo` is where a planner keeps what it derives from a layout (masks, tables, index tensors): `memoised(key,
    build)` builds each once, and `reset()` (between generations and at `remove()`) empties it. Per-layer choices
    and caches are not the planner's: they live in `PlanContext.state`, which the runtime owns."""

    caches_deltas = False  # True: the runtime keeps and reports delta caches for this planner

    def __init__(self, config: SparseConfig | None = None):
        self.config = config or SparseConfig()
        self.memo: dict = {}

    def memoised(self, key, build):
        """`memo[key]`, built by `build()` on first use."""
        if key not in self.memo:
            self.memo[key] = build()
        return self.memo[key]

    def plan(self, ctx: PlanContext, probe: Probe | None) -> AttentionPlan:
        return AttentionPlan.dense(ctx.heads)

    def scheduled(self, ctx: PlanContext):
        """The options with their step schedule scaled to this generation's step count (`ctx.num_steps`, where the
        pipeline says; see `SparseConfig.for_steps`). Planners read refresh steps and periods from here."""
        return self.config.for_steps(ctx.num_steps).options

    def reset(self) -> None:
        """Forget what was derived from the last generation's layouts (called between generations)."""
        self.memo.clear()

    def bind(self, transformer, num_layers: int, num_heads: int | None) -> None:
        """Called once at installation with the transformer and its replaced layers; refuse a model that does not fit."""

    def report(self) -> dict:
        """What the planner wants the report to say (JSON-able); empty by default."""
        return {}


@dataclass(frozen=True)
class DenseOptions:
    """"dense" takes no options."""


register_method("dense", DenseOptions)(Planner)


@dataclass(frozen=True)
class SpatialOptions:
    """"spatial": each video query sees its own frame and `frames` frames either side (latent frames).

    q_block, k_block: mask block sizes in tokens (powers of two >= 16)."""

    frames: int = 1
    q_block: int = 128
    k_block: int = 128

    def __post_init__(self):
        if not isinstance(self.frames, int) or self.frames < 0:
            raise ValueError(f"frames must be an int >= 0; got {self.frames!r}")
        check_blocks(self.q_block, self.k_block)


@dataclass(frozen=True)
class TemporalOptions:
    """"temporal": each video query sees its own spatial position, +-`radius` rows and columns, in every frame.
    It runs in spatial-major order, where that is a dense band of blocks."""

    radius: int = 0
    q_block: int = 128
    k_block: int = 128

    def __post_init__(self):
        if not isinstance(self.radius, int) or self.radius < 0:
            raise ValueError(f"radius must be an int >= 0; got {self.radius!r}")
        check_blocks(self.q_block, self.k_block)


class FixedPatternPlanner(Planner):
    """The same grid-unit pattern for every head of every layer. One mask row per layout, shared by every head
    (stride 0) and every layer, with its density measured once."""

    def __init__(self, config: SparseConfig):
        super().__init__(config)
        o = config.options
        if config.method == "spatial":
            self.pattern, self.order = Pattern.make("window", radius=-1, frames=o.frames), FRAME_MAJOR
        else:
            self.pattern, self.order = Pattern.make("temporal", radius=o.radius, every=1), SPATIAL_MAJOR

    def mask(self, layout: TokenLayout, heads: int, device) -> tuple[SparseMask, object]:
        def build():
            o = self.config.options
            mask = self.pattern.mask(layout, 1, o.q_block, o.k_block, device, self.order).compact()
            return mask.expand_heads(heads), mask.density_per_head().expand(1, heads)

        return self.memoised((layout, heads, str(device)), build)

    def plan(self, ctx: PlanContext, probe: Probe | None) -> AttentionPlan:
        mask, density = self.mask(ctx.layout, ctx.heads, ctx.device)
        return AttentionPlan.sparse(mask, self.config.method, density=density, order=self.order)

register_method("spatial", SpatialOptions)(FixedPatternPlanner)
register_method("temporal", TemporalOptions)(FixedPatternPlanner)


def planner_for(config: SparseConfig) -> Planner:
    """The planner that runs `config.method`."""
    return lookup(config.method).planner(config)
