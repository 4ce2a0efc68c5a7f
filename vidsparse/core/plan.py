"""The attention plan: what one attention call computes, per group of heads, and what a planner may look at.

A planner answers `plan(ctx, probe) -> AttentionPlan` for every replaced attention call:

- `PlanContext` says where the call sits (layer, denoising step, CFG branch, token layout, heads, device).
- `Probe` hands out this call's q, k and v and, on request only, sampled query rows.
  Nothing is computed for a planner that does not ask.
- `AttentionPlan` is a tuple of `HeadGroup`s that together cover every head once. A group's heads are a range or
  any set of head indices (a per-head hybrid puts heads that are not neighbours in one group). A group says, for
  its heads:
  - `mode`: "dense" (all keys), "sparse" (the blocks of `mask`), or Chipmunk's cached-delta modes "refresh"
    (all keys, and the rest outside `columns` is cached) and "delta" (the `columns` now, plus the cached rest);
  - the token order(s) its mask is stated in: `orders[order_index[b, h]]` for each (batch, head), so a planner
    can choose an order per head on the device without a host sync (`order_index` None: `orders[0]` for all);
  - `mask`, the `SparseMask` in that order ("sparse"), or for "refresh" and "delta" a `DeltaSpec`; the key
    columns of each query block (in the group's order) and the cached rest are the layer's `LayerState.delta`,
    which the executor writes at a refresh and reads at a delta step;
  - per head, for reports: `labels` (the names of what a head may run, e.g. ("spatial", "temporal", "dense"))
    with `label_index` (which one each (b, h) ran, a device tensor) and `density` (realised, a device tensor).

The runtime's executor runs a plan: for each group it permutes q, k and v into the group's order, runs the
kernel its mode needs, permutes back and writes the group's heads of the output. A plan that is one dense group
in model order runs the stock attention call itself, so it equals stock to the bit.

Example::

    >>> plan = AttentionPlan.dense(heads=24)
    >>> plan.is_stock
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .layout import FRAME_MAJOR, TokenLayout, TokenOrder
from .mask import SparseMask
from .state import LayerState

__all__ = ["MODES", "AttentionPlan", "DeltaSpec", "HeadGroup", "PlanContext", "Probe"]

MODES = ("dense", "sparse", "refresh", "delta")


@dataclass(frozen=True)
class PlanContext:
    """Where an attention call sits.

    Attributes:
        layer, step, branch: replaced-layer index, denoising step and CFG branch of this generation ("cond",
            "uncond", "cond_uncond" for CogVideoX's batched CFG, or None outside a pipeline).
        layout: the token layout; heads, device: of q.
        num_steps: the generation's denoising steps where the pipeline says, else None.
        state: this layer's `LayerState` in this CFG branch (reset between generations, cleared when a call does
            not match its stamp): a planner's reusable plan and the cached delta. None outside the runtime.
        head_offset: the model index of this call's head 0 (non-zero for a rank's heads under Ulysses).
    """

    layer: int
    step: int
    branch: str | None
    layout: TokenLayout
    heads: int
    device: torch.device | str
    num_steps: int | None = None
    state: LayerState | None = None
    head_offset: int = 0


@dataclass(frozen=True, eq=False)
class DeltaSpec:
    """How a "refresh" or "delta" group computes (see `vidsparse.runtime.executor`).

    Attributes:
        top_keys: the share of the video keys each query block's columns hold (a refresh chooses them).
        q_block: query tokens per block that share one column list.
        rows_per_block: sampled query rows per block that estimate the columns' mass at a refresh.

    A delta group of some of the heads of a layer's cached entry reads theirs (`CachedDelta.heads` says which).
    """

    top_keys: float
    q_block: int
    rows_per_block: int = 16


@dataclass(frozen=True)
class HeadGroup:
    """Some heads of one call and what they compute; see the module docstring.

    `heads`: a range, or a tuple of distinct head indices in any order (the group's head i is model head heads[i];
    its mask, indices and densities are in that order)."""

    heads: range | tuple[int, ...]
    mode: str = "dense"
    mask: SparseMask | None = None
    orders: tuple[TokenOrder, ...] = (FRAME_MAJOR,)
    order_index: torch.Tensor | None = None  # int64 [B' or 1, Hg]: which of `orders` each (b, h) runs in
    delta: DeltaSpec | None = None  # "refresh" / "delta": how the cached delta is made or used
    labels: tuple[str, ...] = ("dense",)
    label_index: torch.Tensor | None = None  # int64 [B' or 1, Hg] into `labels`; None: labels[0] everywhere
    density: torch.Tensor | float = 1.0  # realised density per (b, h): a float, or a tensor [B' or 1, Hg]

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {self.mode!r}")
        if isinstance(self.heads, (list, tuple)):
            object.__setattr__(self, "heads", tuple(int(h) for h in self.heads))
        ok = (isinstance(self.heads, range) and self.heads.step == 1) or (
            isinstance(self.heads, tuple) and len(set(self.heads)) == len(self.heads) and min(self.heads, default=0) >= 0)
        if not ok or len(self.heads) == 0:
            raise ValueError(f"heads must be a non-empty range with step 1 or a tuple of distinct indices; got {self.heads!r}")
        if self.mode == "sparse" and self.mask is None:
            raise ValueError("a sparse group needs a mask")
        if self.mode in ("refresh", "delta") and self.delta is None:
            raise ValueError(f"a {self.mode} group needs a DeltaSpec")
        if self.mask is not None and self.mask.num_heads != len(self.heads):
            raise ValueError(f"the group's mask has {self.mask.num_heads} heads for {len(self.heads)} heads")

    @property
    def contiguous(self) -> slice | None:
        """The group's heads as a slice when they are consecutive and ascending, else None."""
        h = self.heads
        if isinstance(h, range) or list(h) == list(range(h[0], h[0] + len(h))):
            return slice(h[0], h[0] + len(h))
        return None

    @property
    def in_model_order(self) -> bool:
        return all(o.is_identity for o in self.orders) if self.order_index is not None else self.orders[0].is_identity


@dataclass(frozen=True)
class AttentionPlan:
    """The head groups of one attention call, covering every head exactly once.

    `cache_heads`: the heads whose cached delta the layer keeps from this call on (the runtime narrows the layer's
    entry to them before running the plan, and drops it for none); None keeps the entry as it is. The hybrid sets it
    when it chooses, so that the heads that chose another candidate free their share of the cache until the next
    refresh."""

    groups: tuple[HeadGroup, ...]
    cache_heads: tuple[int, ...] | None = None

    def __post_init__(self):
        if not self.groups:
            raise ValueError("a plan needs at least one head group")
        covered = sorted(h for g in self.groups for h in g.heads)
        if covered != list(range(len(covered))):
            raise ValueError(f"the groups must cover heads 0..H-1 once each; got {[g.heads for g in self.groups]}")

    @classmethod
    def dense(cls, heads: int, label: str = "dense") -> "AttentionPlan":
        """Every head on all keys in model order: the stock computation."""
        return cls((HeadGroup(range(heads), "dense", labels=(label,)),))

    @classmethod
    def sparse(cls, mask: SparseMask, labels: tuple[str, ...] | str, label_index=None, density=None,
               order: TokenOrder = FRAME_MAJOR) -> "AttentionPlan":
        """One sparse group of every head of `mask`, in one order."""
        labels = (labels,) if isinstance(labels, str) else tuple(labels)
        return cls((HeadGroup(range(mask.num_heads), "sparse", mask, (order,), labels=labels, label_index=label_index,
                              density=mask.density_per_head() if density is None else density),))

    @property
    def num_heads(self) -> int:
        return sum(len(g.heads) for g in self.groups)

    @property
    def is_stock(self) -> bool:
        """One dense group in model order: the processor runs its stock attention call."""
        return len(self.groups) == 1 and self.groups[0].mode == "dense" and self.groups[0].in_model_order

    @property
    def is_sparse(self) -> bool:
        return any(g.mode != "dense" for g in self.groups)


class Probe:
    """What a planner may look at in one attention call: q, k, v `[B, H, S, D]` (model order) and the key padding
    (bool `[B, S]`, True = ignore) as given, and on request sampled query rows (`sample_rows`, computed only when
    called, once per layout). Nothing is computed for a planner that does not ask.
    """

    def __init__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: TokenLayout,
                 key_padding: torch.Tensor | None = None, rows_cache: dict | None = None):
        self.q, self.k, self.v, self.layout, self.key_padding = q, k, v, layout, key_padding
        self._rows_cache = rows_cache if rows_cache is not None else {}

    def sample_rows(self, rows_per_frame: int, seed: int = 0) -> torch.Tensor:
        """int64 `[R]`: sequence indices of `rows_per_frame` video queries per frame, evenly strided over each frame
        with a fixed random offset (the same draw for every call at this layout)."""
        key = (self.layout, rows_per_frame, seed, str(self.q.device))
        if key not in self._rows_cache:
            self._rows_cache[key] = sample_rows(self.layout, rows_per_frame, seed).to(self.q.device)
        return self._rows_cache[key]


def sample_rows(layout: TokenLayout, rows_per_frame: int, seed: int = 0) -> torch.Tensor:
    """Sequence indices of `rows_per_frame` video tokens per frame: evenly strided over the frame, randomly offset."""
    gen = torch.Generator().manual_seed(seed)
    n = min(rows_per_frame, layout.frame_size)
    stride = layout.frame_size / n
    offsets = (torch.arange(n) * stride + torch.rand(n, generator=gen) * stride).long().clamp(max=layout.frame_size - 1)
    frames = torch.arange(layout.frames).view(-1, 1) * layout.frame_size
    return (frames + offsets).flatten() + layout.video_start

