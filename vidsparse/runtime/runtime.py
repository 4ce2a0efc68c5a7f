"""Per-transformer state shared by its step hook and its processors, and the one executor of attention plans.

`SparseRuntime` holds what one installation needs at call time: the config and planner, the latent grid and step of
the current forward (written by the step hook), the per-layer state of the current CFG branch, and what happened
(per layer and head: realised density and what each head ran; every reason sparse attention fell back).

A processor makes q, k and v exactly as stock and calls `attention(...)` once. The runtime works out the token
layout, runs the dense warm-up, asks the planner for an `AttentionPlan` (handing it a lazy `Probe`), and executes
it: for each head group, permute into the group's token order, run the group's mode on a sparse backend, permute
back. It returns None for a plan that is the stock computation, and the processor then runs its own stock call,
so dense attention equals stock to the bit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..methods.config import SparseConfig
from ..core.layout import TokenLayout
from ..core.plan import AttentionPlan, HeadGroup, PlanContext, Probe
from ..methods.base import Planner
from . import backends as _backends

logger = logging.getLogger(__name__)

__all__ = ["SparseRuntime", "LayerStats", "BranchState"]


class BranchState:
    """Per-layer state of one CFG branch (a diffusers `BaseState` in the step hook's `StateManager`): a dict per
    replaced layer that planners keep their choices and caches in (`PlanContext.state`)."""

    def __init__(self):
        self.layers: dict[int, dict] = {}

    def layer(self, index: int) -> dict:
        return self.layers.setdefault(index, {})

    def reset(self, *args, **kwargs) -> None:
        self.layers.clear()


@dataclass
class LayerStats:
    """Calls of one replaced layer: how many, how many sparse, and per head the calls, the summed realised density
    and how often it ran each label. Sparse calls add device tensors (no host sync); `heads()` reads them. The head
    count may change between calls (a rank's heads under context parallelism): arrays grow to the most seen."""

    calls: int = 0
    sparse_calls: int = 0
    head_calls: list[int] = field(default_factory=list)
    head_dense: list[int] = field(default_factory=list)
    head_density: torch.Tensor | None = None  # [H], summed over sparse calls
    label_counts: dict[str, torch.Tensor] = field(default_factory=dict)  # label -> [H], summed over sparse calls
    _indices: dict = field(default_factory=dict, repr=False)  # a group's heads -> their device index tensor

    def _grow(self, heads: int) -> None:
        for name in ("head_calls", "head_dense"):
            values = getattr(self, name)
            values.extend([0] * (heads - len(values)))

    def _grown(self, t: torch.Tensor, heads: int) -> torch.Tensor:
        return t if t.shape[0] >= heads else torch.cat([t, t.new_zeros(heads - t.shape[0])])

    def add_dense(self, heads: int) -> None:
        self.calls += 1
        self._grow(heads)
        for h in range(heads):
            self.head_calls[h] += 1
            self.head_dense[h] += 1

    def add_plan(self, plan: AttentionPlan, device) -> None:
        h = plan.num_heads
        self.calls += 1
        self.sparse_calls += 1
        self._grow(h)
        for i in range(h):
            self.head_calls[i] += 1
        self.head_density = self._grown(torch.zeros(h, device=device) if self.head_density is None
                                        else self.head_density, h)
        for g in plan.groups:
            index = self._index(g.heads, self.head_density.device)  # device indices: no host-to-device copy
            density = g.density
            if isinstance(density, torch.Tensor):  # [B' or 1, Hg] (or broadcastable to it)
                per_head = density.float().reshape(-1, density.shape[-1]).mean(0).expand(len(g.heads))
                self.head_density.index_add_(0, index, per_head.to(self.head_density.device))
            else:
                self.head_density.index_add_(0, index, torch.full((len(g.heads),), float(density),
                                                                  device=self.head_density.device))
            for i, label in enumerate(g.labels):
                counts = self.label_counts.get(label)
                counts = self._grown(torch.zeros(h, device=self.head_density.device) if counts is None else counts, h)
                self.label_counts[label] = counts
                if g.label_index is None:
                    if i == 0:
                        counts.index_add_(0, index, torch.ones(len(g.heads), device=counts.device))
                else:
                    ran = (g.label_index == i).float()
                    ran = ran.reshape(-1, ran.shape[-1]).mean(0).expand(len(g.heads))
                    counts.index_add_(0, index, ran.to(counts.device))

    def _index(self, heads, device) -> torch.Tensor:
        key = (heads if isinstance(heads, tuple) else (heads.start, heads.stop, "range"), str(device))
        if key not in self._indices:
            self._indices[key] = torch.tensor(list(heads), dtype=torch.long, device=device)
        return self._indices[key]

    @property
    def density(self) -> float:
        """Mean realised density over calls and heads (reads the device tensors: a sync)."""
        if not self.calls:
            return 1.0
        total_head_calls = sum(self.head_calls)
        dense = sum(self.head_dense)
        sparse = float(self.head_density.sum()) if self.head_density is not None else 0.0
        return (dense + sparse) / total_head_calls

    def heads(self) -> tuple[list[float], list[str], list[dict[str, float]]]:
        """Per head: the mean density, the most used label (its sparse one if it ever ran one) and how often it
        ran each label (calls; fractional where batch elements differ)."""
        h = len(self.head_calls)
        density = [float(d) for d in self.head_dense]
        choices = [{"dense": float(d)} if d else {} for d in self.head_dense]
        if self.head_density is not None:
            for head, value in enumerate(self.head_density.tolist()):
                density[head] += value
            for label, counts in self.label_counts.items():
                for head, n in enumerate(counts.tolist()):
                    if n:
                        choices[head][label] = choices[head].get(label, 0.0) + n
        density = [d / max(c, 1) for d, c in zip(density, self.head_calls)]
        patterns = [max(c, key=lambda n: (n not in ("dense", "full"), c[n])) if c else "dense" for c in choices[:h]]
        return density, patterns, choices


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
    state: BranchState = field(default_factory=BranchState)  # the current branch's, set by the step hook
    layers: dict[int, LayerStats] = field(default_factory=dict)
    fallbacks: dict[str, int] = field(default_factory=dict)  # reason -> calls
    sparse_steps: dict[tuple, int] = field(default_factory=dict)  # (branch, step) -> sparse calls
    token_masks: "_backends.TokenMasks" = field(default_factory=lambda: _backends.TokenMasks(), repr=False)
    _perms: dict = field(default_factory=dict, repr=False)
    _rows: dict = field(default_factory=dict, repr=False)

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

    def plan(self, layer: int, q, k, v, text_len: int, key_padding=None, head_offset: int = 0):
        """The plan of this call and its layout: `(None, None)` where it runs dense without asking the planner.
        q, k, v: `[B, H, S, D]` in model order."""
        heads = q.shape[1]
        dense_method = self.config.method == "dense" and not self.ask_planner_when_dense
        if dense_method:
            return None, None
        layout = self.layout(q.shape[2], text_len)
        if layout is None:
            self.fall_back(
                f"the latent grid {self.grid} does not match {q.shape[2] - text_len} video tokens: dense attention"
            )
            return None, None
        cfg = self.config
        if self.step < cfg.warmup_steps or layer < cfg.warmup_layers:
            return None, layout
        ctx = PlanContext(layer, self.step, self.branch, layout, heads, q.device, self.num_steps,
                          self.state.layer(layer), head_offset)
        plan = self.planner.plan(ctx, Probe(q, k, v, layout, key_padding, self._rows))
        if plan.num_heads != heads:
            raise ValueError(f"{type(self.planner).__name__} planned {plan.num_heads} heads for a call with {heads}")
        return plan, layout

    def record(self, layer: int, plan: AttentionPlan | None, heads: int, device) -> None:
        if plan is None or not plan.is_sparse:
            self.count_dense(layer, heads)
            return
        self.layers.setdefault(layer, LayerStats()).add_plan(plan, device)
        key = (self.branch, self.step)
        self.sparse_steps[key] = self.sparse_steps.get(key, 0) + 1

    @torch.compiler.disable
    def attention(self, layer: int, q, k, v, *, text_len: int = 0, key_padding=None) -> torch.Tensor | None:
        """Attention of one call over `[B, H, S, D]` q, k, v (model order), as its plan says; None where the plan is
        the stock computation (the caller then runs its own stock call). `key_padding`: bool `[B, S]`, True = ignore.

        Under `torch.compile(transformer)` this call is a graph break (one per replaced layer): dynamo runs it
        eagerly and compiles everything around it.
        """
        plan, layout = self.plan(layer, q, k, v, text_len, key_padding)
        self.record(layer, plan, q.shape[1], q.device)
        if plan is None or plan.is_stock:
            return None
        return self.execute(plan, q, k, v, layout, key_padding)

    # ------------------------------------------------------------------ executing
    def execute(self, plan: AttentionPlan, q, k, v, layout: TokenLayout, key_padding=None) -> torch.Tensor:
        """Run a plan over `[B, H, S, D]` q, k, v in model order; returns `[B, H, S, D]` in model order.

        Orders leave text in place and only text keys are ever padded (HunyuanVideo), so `key_padding` applies
        unchanged in every order."""
        if len(plan.groups) == 1 and plan.groups[0].contiguous is not None:
            return self._group(plan.groups[0], q, k, v, layout, key_padding)
        out = torch.empty_like(q)
        for g in plan.groups:
            hs = g.contiguous
            if hs is not None:
                out[:, hs] = self._group(g, q[:, hs], k[:, hs], v[:, hs], layout, key_padding)
            else:  # heads that are not neighbours: gathered, run, scattered back
                index = self.head_index(g.heads, q.device)
                sub = [x.index_select(1, index) for x in (q, k, v)]
                out.index_copy_(1, index, self._group(g, *sub, layout, key_padding))
        return out

    def _group(self, g: HeadGroup, q, k, v, layout, key_padding) -> torch.Tensor:
        """One head group: permute, attend, unpermute (q, k, v: the group's heads only)."""
        perms = None if g.in_model_order else self.permutations(g.orders, layout, q.device)
        if perms is not None:
            q, k, v = (permute_tokens(x, perms, g.order_index) for x in (q, k, v))
        if g.mode == "dense":
            keep = None if key_padding is None else ~key_padding[:, None, None, :]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        elif g.mode == "sparse":
            out = self.sparse(q, k, v, g.mask, key_padding)
        else:
            from ..methods.delta import run_cached_delta

            out = run_cached_delta(self, g, q, k, v, layout, key_padding)
        if perms is not None:
            out = permute_tokens(out, perms, g.order_index, inverse=True)
        return out

    def sparse(self, q, k, v, mask, key_padding=None, return_lse: bool = False):
        """Block-sparse attention on the configured backend (see `backends`)."""
        backend = _backends.pick_backend(self.config.backend, q, mask, self.fall_back, need_lse=return_lse)
        return backend.run(q, k, v, mask, key_padding, return_lse, self.token_masks)

    def head_index(self, heads: tuple[int, ...], device) -> torch.Tensor:
        """int64 `[len(heads)]` on the device, built once per head set."""
        key = ("heads", heads, str(device))
        if key not in self._perms:
            self._perms[key] = torch.tensor(heads, dtype=torch.long, device=device)
        return self._perms[key]

    def permutations(self, orders, layout: TokenLayout, device) -> torch.Tensor:
        """int64 `[P, S]`: each order's permutation at this layout, built once per (orders, layout, device)."""
        key = (tuple(orders), layout, str(device))
        if key not in self._perms:
            self._perms[key] = torch.stack([o.permutation(layout, device) for o in orders])
        return self._perms[key]

    # ------------------------------------------------------------------ context parallelism (Ulysses)
    def ulysses(self, layer: int, query, key, value, parallel_config, text_len: int = 0, key_padding=None):
        """Attention under diffusers' Ulysses context parallelism, as planned; None where it is not supported
        (the caller runs its stock, parallel dense path).

        Each rank holds S/N tokens of every head, laid out [video_r, text_r] (`text_len` text tokens per rank).
        diffusers' templated Ulysses op swaps that for all S tokens of H/N heads, in rank order [video_0, text_0,
        video_1, text_1, ...], calls the op given here, and swaps back. The op permutes those tokens into the
        model's own order (all video, then all text), where the plan and `key_padding` (`[B, S]`, full length, model
        order) apply, and back again. Each rank plans and runs its own heads (`PlanContext.head_offset`).
        """
        cp = parallel_config.context_parallel_config
        heads = query.shape[2]  # query: [B, S/N, H, D]
        if cp.ring_degree > 1 or cp.ulysses_anything or heads % cp.ulysses_degree:
            self.fall_back(
                "sparse attention supports plain Ulysses context parallelism only (no ring, no ulysses_anything, "
                "heads divisible by the degree): dense attention"
            )
            self.count_dense(layer, heads)
            return None
        world, rank = cp.ulysses_degree, cp._ulysses_local_rank
        local = query.shape[1]
        order = _rank_order_to_model_order(world, local, text_len, query.device)
        inverse = torch.argsort(order) if order is not None else None
        runtime = self

        def forward_op(ctx, q, k, v, *args, **kwargs):  # q, k, v: [B, S, H/N, D], rank order
            if order is not None:
                q, k, v = q[:, order], k[:, order], v[:, order]
            qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            plan, layout = runtime.plan(layer, qh, kh, vh, text_len * world, key_padding,
                                        head_offset=rank * qh.shape[1])
            runtime.record(layer, plan, qh.shape[1], q.device)
            if plan is None or plan.is_stock:
                keep = None if key_padding is None else ~key_padding[:, None, None, :]
                out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=keep)
            else:
                out = runtime.execute(plan, qh, kh, vh, layout, key_padding)
            out = out.transpose(1, 2)
            return out if inverse is None else out[:, inverse]

        from diffusers.models.attention_dispatch import _templated_context_parallel_attention

        return _templated_context_parallel_attention(
            query, key, value, forward_op=forward_op, backward_op=None, _parallel_config=parallel_config
        )

    # ------------------------------------------------------------------ lifecycle and reporting
    def fall_back(self, reason: str) -> None:
        """Record a fallback; log each distinct reason once."""
        if reason not in self.fallbacks:
            logger.warning("vidsparse (%s): %s", self.model_name, reason)
            self.fallbacks[reason] = 0
        self.fallbacks[reason] += 1

    def new_generation(self) -> None:
        self.step, self.branch, self.grid, self.num_steps = 0, None, None, None
        self.state = BranchState()
        self.token_masks.clear()
        reset = getattr(self.planner, "reset", None)
        if reset is not None:
            reset()

    def report(self) -> dict:
        calls = sum(s.calls for s in self.layers.values())
        density = (sum(s.density * sum(s.head_calls) for s in self.layers.values())
                   / max(1, sum(sum(s.head_calls) for s in self.layers.values()))) if calls else 1.0
        heads = {layer: self.layers[layer].heads() for layer in sorted(self.layers)}
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
            "planner": self.planner.report() if hasattr(self.planner, "report") else {},
        }


def _rank_order_to_model_order(world: int, local: int, text_len: int, device) -> torch.Tensor | None:
    """Index that gathers the Ulysses rank order [video_0, text_0, video_1, text_1, ...] into the
    model order [video_0, video_1, ..., text_0, text_1, ...]; None when there is no text."""
    if text_len == 0:
        return None
    video = local - text_len
    starts = torch.arange(world, device=device)[:, None] * local
    video_idx = (starts + torch.arange(video, device=device)).flatten()
    text_idx = (starts + video + torch.arange(text_len, device=device)).flatten()
    return torch.cat([video_idx, text_idx])


def permute_tokens(x: torch.Tensor, perms: torch.Tensor, order_index=None, *, inverse: bool = False) -> torch.Tensor:
    """x `[B, H, S, D]` with (b, h) in order `perms[order_index[b, h]]` (row 0 without an index): gathered into that
    order, or with `inverse=True` scattered back."""
    from ..kernels import permute_tokens as kernel

    return kernel(x, perms, order_index, inverse=inverse)
