"""Per-layer state of one CFG branch: what a planner remembers between calls, and a delta layer's cached rest.

The runtime owns every `LayerState` (one per replaced layer and CFG branch). Planners read and write `plan` and
`since` through `PlanContext.state`; the executor writes `delta` at a refresh, through the runtime's cache store,
which counts its bytes. Everything here is stamped with what it was made for (`Stamp`): the runtime clears a
layer's state when a call does not match its stamp (another layout, batch, dtype, padding or generation), so a
generation that never reached its end (an exception, Ctrl-C, a custom loop without `handle.reset()`) cannot hand
its cache or its plan to the next one.

Example::

    >>> from vidsparse.core.layout import TokenLayout
    >>> stamp = Stamp(TokenLayout(2, 4, 4, 8), batch=1, dtype=torch.float32, padded=False, generation=0)
    >>> state = LayerState(stamp=stamp)
    >>> state.matches(stamp), state.delta is None
    (True, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .layout import TokenLayout

__all__ = ["CachedDelta", "LayerState", "Stamp"]


@dataclass(frozen=True)
class Stamp:
    """What one call was: a cached entry or a plan made for one stamp is stale at another."""

    layout: TokenLayout
    batch: int
    dtype: torch.dtype
    padded: bool  # whether keys were padded (HunyuanVideo's text)
    generation: int


@dataclass(eq=False)
class CachedDelta:
    """One layer's cache in one CFG branch, made at a refresh, in the delta order (voxel).

    Attributes:
        o_rest: `[B, H, S, D]`: the attention output over the keys outside the columns, normalised over them.
        lse_rest: `[B, H, S]` float32: their natural-log sum of exponentials.
        columns: per query block, the key columns a delta step recomputes (ascending): int32 `[B, H, nQ, K]`, or
            packed, int16 with `wraps` (`vidsparse.core.columns`, half the bytes; what the executor stores).
        counts: int32 `[B, H, nQ]`: how many of `columns` count per block.
        wraps: int32 `[B, H, nQ, W]` of packed `columns`, else None.
        density: `[B, H]`: the realised density of a delta step (its columns and the text keys).
        heads: the model heads the entry holds, in order (a delta group of some of them selects its own).
        device: where the tensors are used; `offloaded` says they are in pinned host memory instead.
    """

    o_rest: torch.Tensor
    lse_rest: torch.Tensor
    columns: torch.Tensor
    counts: torch.Tensor
    density: torch.Tensor
    heads: tuple[int, ...]
    device: torch.device
    wraps: torch.Tensor | None = None
    offloaded: bool = False
    copied: object | None = None  # CUDA event: the copy to the host is done
    staged: tuple[torch.Tensor, ...] | None = None  # device copies fetched ahead of use
    staged_ready: object | None = None

    @property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        """`(o_rest, lse_rest, columns, counts)`, and `wraps` where the columns are packed."""
        held = (self.o_rest, self.lse_rest, self.columns, self.counts)
        return held if self.wraps is None else (*held, self.wraps)

    @tensors.setter
    def tensors(self, values: tuple[torch.Tensor, ...]) -> None:
        self.o_rest, self.lse_rest, self.columns, self.counts, *wraps = values
        self.wraps = wraps[0] if wraps else None

    def column_lists(self) -> torch.Tensor:
        """The columns as int32 `[B, H, nQ, K]` lists, unpacked where they are packed (entries past a count: 0)."""
        if self.wraps is None:
            return self.columns
        from .columns import unpack_columns

        *_, columns, counts, wraps = self.readable()
        return unpack_columns(columns, wraps, counts)

    def readable(self) -> tuple[torch.Tensor, ...]:
        """The tensors where they are, once any copy to the host is done (to read a few rows of them)."""
        if self.copied is not None:
            self.copied.synchronize()
        return self.tensors

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors)

    def positions(self, heads) -> list[int] | None:
        """Where model heads `heads` sit in this entry (dim 1 of its tensors); None where the entry holds exactly
        them, in order. Raises ValueError for a head it does not hold."""
        heads = tuple(heads)
        if heads == self.heads:
            return None
        missing = [h for h in heads if h not in self.heads]
        if missing:
            raise ValueError(f"the cached delta holds heads {self.heads}, not {missing}")
        return [self.heads.index(h) for h in heads]


@dataclass(eq=False)
class LayerState:
    """One replaced layer in one CFG branch, for one `stamp` (see the module docstring).

    Attributes:
        plan: the plan a planner reuses between its choosing calls (hybrid, profile, dynamic); None: choose.
        since: calls since `plan` was made.
        delta: the cached rest of this layer's last refresh; None: no cache (a delta method refreshes).
        uncached: the cache store refused this layer's entry (over `host_budget`): a planner runs its best
            candidate that needs no cache instead of refreshing at every step.
        reference: a planner's summary of the inputs its `plan` was made from (dynamic: pooled keys, for drift).
        stamp: what all of the above were made for.
    """

    plan: object | None = None
    since: int = 0
    delta: CachedDelta | None = None
    uncached: bool = False
    reference: torch.Tensor | None = None
    stamp: Stamp | None = None

    def matches(self, stamp: Stamp) -> bool:
        return self.stamp == stamp
