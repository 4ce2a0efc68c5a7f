"""Per-transformer state shared by its step hook and its processors: plan each call, run it, keep count.

`SparseRuntime` holds what one installation needs at call time: the config and planner, the latent grid and step of
the current forward (written by the step hook), the per-layer state of the current CFG branch, the executor, and
what happened (per layer and head: realised density and what each head ran; every reason sparse attention fell
back).

A processor makes q, k and v exactly as stock and calls `attention(...)` once. The runtime works out the token
layout, runs the dense warm-up, asks the planner for an `AttentionPlan` (handing it a lazy `Probe`), and hands the
plan to its `Executor`. It returns None for a plan that is the stock computation, and the processor then runs its
own stock call, so dense attention equals stock to the bit.

State has one owner and one release path: `BranchState` (one per CFG branch, in the step hook's diffusers
`StateManager`) holds each layer's `LayerState`; `reset()` between generations, and `release()` at `remove()`,
drop every cached delta through the store, clear the executor's and the planner's memoised tensors, and leave
nothing of the generation reachable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from ..core.layout import TokenLayout
from ..core.plan import AttentionPlan, PlanContext, Probe
from ..core.state import CachedDelta, LayerState, Stamp
from ..methods.base import Planner
from ..methods.config import SparseConfig
from .cache import DeltaStore
from .executor import Executor
from .stats import LayerStats

logger = logging.getLogger(__name__)

__all__ = ["BranchState", "LayerStats", "SparseRuntime"]


class BranchState:
    """The `LayerState` of every replaced layer in one CFG branch (a diffusers `BaseState` in the step hook's
    `StateManager`). `reset()` drops their cached deltas through `store`, which counts the bytes."""

    def __init__(self, store: DeltaStore | None = None):
        self.store = store if store is not None else DeltaStore()
        self.layers: dict[int, LayerState] = {}

    def layer(self, index: int) -> LayerState:
        return self.layers.setdefault(index, LayerState())

    def clear(self, state: LayerState) -> None:
        """Forget everything one layer holds (a stale stamp)."""
        self.store.drop(state)
        state.plan, state.since, state.uncached, state.reference, state.stamp = None, 0, False, None, None

    def next_delta(self, layer: int) -> CachedDelta | None:
        """The cached entry of the next later layer that has one (to fetch ahead while `layer` runs)."""
        later = [i for i, s in self.layers.items() if i > layer and s.delta is not None]
        return self.layers[min(later)].delta if later else None

    def reset(self, *args, **kwargs) -> None:
        for state in self.layers.values():
            self.store.drop(state)
        self.layers.clear()


@dataclass
class SparseRuntime:
    config: SparseConfig
    planner: Planner
    model_name: str
    text_position: str | None
    ask_planner_when_dense: bool = False  # a planner given to apply() (e.g. the search's calibrator) sees every call
    grid: tuple[int, int, int] | None = None  # (frames, height, width) after patchify, set per forward
    step: int = 0
    branch: str | None = None
    num_steps: int | None = None
    generation: int = 0  # counts resets; part of every stamp
    state: BranchState | None = None  # the current branch's, set by the step hook
    layers: dict[int, LayerStats] = field(default_factory=dict)
    fallbacks: dict[str, int] = field(default_factory=dict)  # reason -> calls
    sparse_steps: dict[tuple, int] = field(default_factory=dict)  # (branch, step) -> sparse calls
    refreshed: set = field(default_factory=set)  # steps where some layer refreshed a cached delta
    schedules: dict = field(default_factory=dict)  # a generation's step count (None: not seen) -> its config
    executor: Executor | None = None
    siblings: list = field(default_factory=list, repr=False)  # the other experts' runtimes (Wan 2.2)
    _rows: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        o = self.config.options
        store = DeltaStore(getattr(o, "cache_budget", None), getattr(o, "host_budget", None))
        if self.executor is None:
            self.executor = Executor(self.config.backend, self.fall_back, store)
        if self.state is None:
            self.state = self.branch_state()

    @property
    def store(self) -> DeltaStore:
        return self.executor.store

    def branch_state(self) -> BranchState:
        """A new, empty `BranchState` whose caches count against this runtime's budgets."""
        return BranchState(self.store)

    # ------------------------------------------------------------------ planning
    def layout(self, seq_len: int, text_len: int) -> TokenLayout | None:
        """The token layout of a sequence of `seq_len` tokens with `text_len` text tokens, or None when the latent
        grid of this forward does not account for the video tokens."""
        if self.grid is None:
            return None
        frames, height, width = self.grid
        if frames * height * width != seq_len - text_len:
            return None
        return TokenLayout(frames, height, width, text_len, self.text_position or "start")

    def count_dense(self, layer: int, heads: int) -> None:
        """Count a call that runs dense without asking the planner."""
        self.layers.setdefault(layer, LayerStats()).add_dense(heads)

    def layer_state(self, layer: int, stamp: Stamp) -> LayerState:
        """The layer's state in the current branch, cleared first when it was made for another stamp."""
        state = self.state.layer(layer)
        if not state.matches(stamp):
            self.state.clear(state)
            state.stamp = stamp
        return state

    def plan(self, layer: int, q, k, v, text_len: int, key_padding=None, head_offset: int = 0):
        """The plan of this call, its layout and the layer's state: `(None, layout or None, None)` where it runs
        dense without asking the planner. q, k, v: `[B, H, S, D]` in model order."""
        heads = q.shape[1]
        if self.config.method == "dense" and not self.ask_planner_when_dense:
            return None, None, None
        layout = self.layout(q.shape[2], text_len)
        if layout is None:
            self.fall_back(
                f"the latent grid {self.grid} does not match {q.shape[2] - text_len} video tokens: dense attention"
            )
            return None, None, None
        cfg = self.config.for_steps(self.num_steps)  # the schedule scaled to this generation's steps
        self.schedules.setdefault(self.num_steps, cfg)
        if self.step < cfg.warmup_steps or layer < cfg.warmup_layers:
            return None, layout, None
        stamp = Stamp(layout, q.shape[0], q.dtype, key_padding is not None, self.generation)
        state = self.layer_state(layer, stamp)
        ctx = PlanContext(layer, self.step, self.branch, layout, heads, q.device, self.num_steps, state, head_offset)
        plan = self.planner.plan(ctx, Probe(q, k, v, layout, key_padding, self._rows))
        if plan.num_heads != heads:
            raise ValueError(f"{type(self.planner).__name__} planned {plan.num_heads} heads for a call with {heads}")
        return plan, layout, state

    def record(self, layer: int, plan: AttentionPlan | None, heads: int, device) -> None:
        if plan is None or not plan.is_sparse:
            self.count_dense(layer, heads)
            return
        self.layers.setdefault(layer, LayerStats()).add_plan(plan, device)
        key = (self.branch, self.step)
        self.sparse_steps[key] = self.sparse_steps.get(key, 0) + 1
        if any(g.mode == "refresh" for g in plan.groups):
            self.refreshed.add(self.step)

    @torch.compiler.disable
    def attention(self, layer: int, q, k, v, *, text_len: int = 0, key_padding=None,
                  head_offset: int = 0) -> torch.Tensor | None:
        """Attention of one call over `[B, H, S, D]` q, k, v (model order), as its plan says; None where the plan is
        the stock computation (the caller then runs its own stock call). `key_padding`: bool `[B, S]`, True = ignore.
        `head_offset`: the model index of q's head 0 (a rank's heads under Ulysses).

        Under `torch.compile(transformer)` this call is a graph break (one per replaced layer): dynamo runs it
        eagerly and compiles everything around it.
        """
        plan, layout, state = self.plan(layer, q, k, v, text_len, key_padding, head_offset)
        if plan is not None and plan.cache_heads is not None and state is not None:
            self.store.narrow(state, plan.cache_heads)  # heads that chose another candidate free their cache
        self.record(layer, plan, q.shape[1], q.device)
        if plan is None or plan.is_stock:
            return None
        return self.execute(plan, q, k, v, layout, key_padding, state, layer)

    def execute(self, plan: AttentionPlan, q, k, v, layout: TokenLayout, key_padding=None,
                state: LayerState | None = None, layer: int | None = None) -> torch.Tensor:
        """Run a plan over `[B, H, S, D]` q, k, v in model order (see `Executor.run`); returns model order."""
        branch = self.state
        ahead = None if layer is None else (lambda: branch.next_delta(layer))
        return self.executor.run(plan, q, k, v, layout, key_padding, state, (self.branch, layer), ahead)

    def take_over(self) -> None:
        """This transformer runs now: a sibling expert's caches (Wan 2.2's other transformer) are not read again in
        this generation, so they are freed, and at most one expert's cache is alive at a time."""
        for other in self.siblings:
            if other.store.device_bytes or other.store.host_bytes:
                other.store.clear()

    # ------------------------------------------------------------------ lifecycle and reporting
    def fall_back(self, reason: str) -> None:
        """Record a fallback; log each distinct reason once."""
        if reason not in self.fallbacks:
            logger.warning("vidsparse (%s): %s", self.model_name, reason)
            self.fallbacks[reason] = 0
        self.fallbacks[reason] += 1

    def new_generation(self) -> None:
        """Start a generation: every layer's state of the last one is dropped (the step hook resets its branches)."""
        self.step, self.branch, self.grid, self.num_steps = 0, None, None, None
        self.generation += 1
        self.store.clear()
        self.state.reset()
        self.state = self.branch_state()
        self.executor.clear()
        self._rows.clear()
        reset = getattr(self.planner, "reset", None)
        if reset is not None:
            reset()

    def release(self) -> None:
        """Free every cache and memoised tensor (`remove()`); the statistics stay readable."""
        self.new_generation()

    def report(self) -> dict:
        calls = sum(s.calls for s in self.layers.values())
        density = (sum(s.density * sum(s.head_calls) for s in self.layers.values())
                   / max(1, sum(sum(s.head_calls) for s in self.layers.values()))) if calls else 1.0
        heads = {layer: self.layers[layer].heads() for layer in sorted(self.layers)}
        planner = self.planner.report() if hasattr(self.planner, "report") else {}
        if getattr(self.planner, "caches_deltas", False):
            planner = {"delta_cache": self.store.report(), **planner}
        return {
            "model": self.model_name,
            "config": self.config,
            "layers": len(self.layers),
            "calls": calls,
            "sparse_calls": sum(s.sparse_calls for s in self.layers.values()),
            "density": density,
            "density_per_layer": {layer: s.density for layer, s in sorted(self.layers.items())},
            "heads": {
                "density": [h[0] for h in heads.values()],
                "pattern": [h[1] for h in heads.values()],
                "choices": [h[2] for h in heads.values()],
            },
            "sparse_calls_per_step": {f"{b}:{s}" if b else str(s): n for (b, s), n in sorted(
                self.sparse_steps.items(), key=lambda kv: (str(kv[0][0]), kv[0][1]))},
            "fallbacks": sorted(self.fallbacks),
            "planner": planner,
            "schedule": self.schedule_report(),
        }

    def schedule_report(self) -> dict:
        """The step schedule that ran: per generation step count, the warm-up and the method's step fields as
        scaled to it (`SparseConfig.for_steps`), and the steps where a cached delta was refreshed."""
        ran = []
        for num_steps, cfg in self.schedules.items():
            entry = {"num_steps": num_steps, **cfg.schedule, "stated_for": self.config.schedule_steps}
            if num_steps is None and self.config.schedule_steps is not None:
                entry["note"] = (f"the generation's step count was not seen: the schedule ran as stated for "
                                 f"{self.config.schedule_steps} steps")
            ran.append(entry)
        return {"ran": ran, "refreshed_at": sorted(self.refreshed)}
