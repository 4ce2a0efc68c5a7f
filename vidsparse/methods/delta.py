"""The "delta" method: Chipmunk's cached step deltas, in Triton, on any GPU, inside diffusers.

Activations change slowly between denoising steps, so a key need not be dropped to be skipped; its contribution can
be cached. Per layer and CFG branch, in voxel order (chunks of t x h x w tokens, so a query block is a compact piece
of video):

- on a **refresh** step, per query block, the `top_keys` fraction of key columns that carry most of its attention
  mass (`topk_columns`, estimated from sampled rows, on the device), their attention `o_k, lse_k`, and the rest
  `o_rest, lse_rest`, the attention over every other key, which is cached; the step's output is their merge, full
  attention (the executor's docstring says how each backend computes the rest);
- on a **delta** step, only those columns (and the text keys) with the current q, k, v: `o_k', lse_k'`, merged with
  the cached rest by log-sum-exp: `o = merge(o_rest, lse_rest; o_k', lse_k')`.

With every key a column the rest is empty and a delta step is full attention; with q, k and v unchanged since the
refresh it returns the refresh's output (both to rounding). The merge renormalises the cached rest against the new
columns' mass, where Chipmunk adds `o_rest` under the refresh step's softmax constants: the two agree at the refresh,
and the merge keeps every row's weights summing to one.

Refreshes: at `refresh_steps` (Chipmunk's defaults on HunyuanVideo: 0, 1, 10 and 40 of 50), every `refresh_every`
steps if set, and wherever a layer has no cache yet. `layers` restricts deltas to some layers (the others dense).
With `SparseConfig.schedule_steps` set (the presets: 50), `refresh_steps` and `refresh_every` are stated for that
many steps and scaled to the generation's own (`PlanContext.num_steps`; `SparseConfig.for_steps`), and the report's
"schedule" says where the refreshes ran.

Memory: a layer's cache is `o_rest` (B x H x S x D, the input dtype), `lse_rest` and the columns, packed to 16 bits a
column (`vidsparse.core.columns`); at HunyuanVideo 720p with 7% of the keys, 0.73 GB of `o_rest` in bf16 and 0.37 GB
of lists per layer. `cache_budget` bytes stay on the GPU; later layers go to pinned host memory, copied
asynchronously on a side stream (and fetched back one layer ahead); past `host_budget` a layer is not cached and
runs dense (cheaper than refreshing at every step). The report lists what was offloaded or left uncached.

Example::

    >>> vidsparse.apply(pipe, {"method": "delta", "top_keys": 0.05, "refresh_steps": [0, 1, 10, 40],
    ...                        "cache_budget": 30 * 2**30})
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .config import SparseConfig
from .registry import register_method
from ..core.layout import TokenOrder
from ..core.plan import AttentionPlan, DeltaSpec, HeadGroup, PlanContext, Probe
from .base import Planner

__all__ = ["DeltaOptions", "DeltaPlanner"]


@dataclass(frozen=True)
class DeltaOptions:
    """"delta" options.

    Attributes:
        top_keys: fraction of the video keys each query block recomputes on delta steps (Chipmunk: 0.05).
        refresh_steps: denoising steps that compute full attention and refresh the cache.
        refresh_every: also refresh every this many steps (0: only `refresh_steps`).
        layers: the replaced layers that use deltas (empty: all); the others run dense.
        voxel: the voxel order's chunk (frames, rows, columns); a query block is one chunk when their sizes match.
        q_block: query tokens per block that share one column list (a power of two >= 16).
        rows_per_block: sampled query rows per block that estimate the columns' mass on a refresh.
        cache_budget: bytes of cache kept on the GPU (None: no limit); the rest goes to host memory.
        host_budget: bytes of pinned host memory for offloaded caches (None: no limit); past it a layer runs dense.
    """

    STEP_FIELDS: ClassVar[tuple[str, ...]] = ("refresh_steps", "refresh_every")  # scaled with the step count

    top_keys: float = 0.05
    refresh_steps: tuple[int, ...] = (0, 1, 10, 40)
    refresh_every: int = 0
    layers: tuple[int, ...] = ()
    voxel: tuple[int, int, int] = (4, 4, 8)
    q_block: int = 128
    rows_per_block: int = 16
    cache_budget: int | None = None
    host_budget: int | None = None

    def __post_init__(self):
        if not isinstance(self.top_keys, (int, float)) or not 0 < self.top_keys <= 1:
            raise ValueError(f"top_keys must be in (0, 1]; got {self.top_keys!r}")
        for name in ("refresh_steps", "layers"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(isinstance(v, int) and v >= 0 for v in value):
                raise ValueError(f"{name} must be a list of ints >= 0; got {value!r}")
        if not isinstance(self.refresh_every, int) or self.refresh_every < 0:
            raise ValueError(f"refresh_every must be an int >= 0; got {self.refresh_every!r}")
        if len(self.voxel) != 3 or not all(isinstance(v, int) and v >= 1 for v in self.voxel):
            raise ValueError(f"voxel must be three ints >= 1 (frames, rows, columns); got {self.voxel!r}")
        if not isinstance(self.q_block, int) or self.q_block < 16 or self.q_block & (self.q_block - 1):
            raise ValueError(f"q_block must be a power of two >= 16; got {self.q_block!r}")
        if not isinstance(self.rows_per_block, int) or self.rows_per_block < 1:
            raise ValueError(f"rows_per_block must be an int >= 1; got {self.rows_per_block!r}")
        for name in ("cache_budget", "host_budget"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a number of bytes >= 0 or None; got {value!r}")


@register_method("delta", DeltaOptions)
class DeltaPlanner(Planner):
    """Chipmunk's cached deltas per layer and branch (see the module docstring). It decides refresh or delta; the
    runtime's executor computes both, and the layer's `LayerState.delta` holds the cache."""

    caches_deltas = True  # the runtime reports its delta store

    def __init__(self, config: SparseConfig):
        super().__init__(config)
        o = config.options
        self.order = TokenOrder.voxel(*o.voxel)
        self.spec = DeltaSpec(o.top_keys, o.q_block, o.rows_per_block)

    def refreshes(self, ctx: PlanContext) -> bool:
        """Whether this call refreshes: at a refresh step, every `refresh_every` steps, or without a cache (the
        schedule scaled to this generation's step count)."""
        return self.refresh_step(ctx) or ctx.state.delta is None

    def refresh_step(self, ctx: PlanContext) -> bool:
        """Whether the schedule refreshes at this call's step: a refresh step, or every `refresh_every` steps."""
        o = self.scheduled(ctx)
        return ctx.step in o.refresh_steps or bool(o.refresh_every and ctx.step % o.refresh_every == 0)

    def group(self, ctx: PlanContext, heads, refresh: bool) -> HeadGroup:
        """The refresh or delta group of `heads` (a delta group reads their densities from the cache)."""
        mode = "refresh" if refresh else "delta"
        density = 1.0
        if not refresh:
            entry = ctx.state.delta
            at = entry.positions(heads)
            density = entry.density if at is None else entry.density.index_select(
                1, torch.tensor(at, device=entry.density.device))
        return HeadGroup(heads, mode, None, (self.order,), delta=self.spec, labels=(mode,), density=density)

    def plan(self, ctx: PlanContext, probe: Probe | None) -> AttentionPlan:
        o = self.config.options
        if o.layers and ctx.layer not in o.layers:
            return AttentionPlan.dense(ctx.heads)
        if ctx.state is None:
            raise ValueError("the delta method keeps a cache per layer: it runs inside vidsparse's runtime only")
        if ctx.state.uncached:  # over the memory budgets: dense costs less than a refresh at every step
            return AttentionPlan.dense(ctx.heads, "uncached")
        return AttentionPlan((self.group(ctx, range(ctx.heads), self.refreshes(ctx)),))
