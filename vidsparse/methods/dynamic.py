"""The "dynamic" method: each query block's key blocks chosen from this call's q and k.

As in XAttention, SVG2, Jenga and DFSAttn, the mask is not fixed before the call and not stale during it:

1. the tokens are put in a 3-D Hilbert order (`TokenOrder.hilbert()`), so that a block of tokens is a compact
   piece of video and a key block's mean says something about every key in it;
2. every (query block, key block) pair is scored from mean-pooled q and k (`vidsparse.kernels.estimate_block_mass`:
   `scale * mean_q . mean_k + log(live keys)`, softmax over key blocks), in Triton, without a host sync;
3. per query block, `top_p_blocks` keeps the fewest key blocks whose estimated mass reaches `top_p`, always
   including its own block (the diagonal), the first video key block (a sink) and the text; `min_blocks` and
   `max_density` bound the count. The selection is a sort, a cumulative sum and a search, on the device;
4. the mask is reused for `every` calls of a layer, or until the pooled keys drift from the ones it was made from by
   more than `drift` (relative L2 over the layer), and then recomputed. `report()` says how often each layer did.

Text is never scored: text key blocks are left out of the estimated distribution (every query keeps them anyway) and
text query blocks stay dense, as in every `SparseMask`. A block shared by text and video counts as text. The
estimated mass is therefore the share of the video keys' mass.

Example::

    >>> vidsparse.apply(pipe, {"method": "dynamic", "top_p": 0.9, "every": 2, "warmup_steps": 12})
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import Planner, check_blocks
from .config import SparseConfig
from .registry import register_method
from ..core.layout import HILBERT, TokenLayout
from ..core.mask import SparseMask
from ..core.pattern_file import PatternFile
from ..core.plan import AttentionPlan, PlanContext, Probe
from ..core.state import LayerState
from ..kernels.block_scores import block_scores, estimate_block_mass, key_block_bias, pool_blocks

__all__ = ["DynamicOptions", "DynamicPlanner", "forced_blocks", "pooled_drift", "top_p_blocks"]

LABELS = ("dynamic",)


@dataclass(frozen=True)
class DynamicOptions:
    """"dynamic" options.

    Attributes:
        top_p: per query block, keep key blocks until their estimated share of the video keys' mass reaches this
            (1: every block, dense attention in another order).
        min_blocks: keep at least this many key blocks per query block (the forced ones included).
        max_density: keep at most `ceil(max_density * nK)` key blocks per query block (the forced ones are kept even
            past it).
        sink: always keep the first video key block (an attention sink), besides each block's own and the text.
        every: recompute the mask every this many calls of a layer (per CFG branch); the calls between reuse it.
        drift: also recompute when the layer's pooled keys moved by more than this relative L2 distance from the
            ones the mask was made from (0: off). Checking reads one number on the host per layer and call.
        q_block, k_block: mask (and scoring) block sizes in tokens (powers of two >= 16).
        patterns: a `vidsparse search` pattern file with a dynamic calibration: each head runs its own calibrated
            top_p instead of `top_p` (the file's block sizes must be `q_block` and `k_block`).
        density: with `patterns`, choose the heads' top_p again from the file's curves under this mean density
            (None: the budget the search used).
    """

    top_p: float = 0.9
    min_blocks: int = 1
    max_density: float = 1.0
    sink: bool = True
    every: int = 1
    STEP_FIELDS: ClassVar[tuple[str, ...]] = ("every",)  # scaled with the step count
    drift: float = 0.0
    q_block: int = 128
    k_block: int = 128
    patterns: str | None = None
    density: float | None = None

    def __post_init__(self):
        if self.density is not None and (not isinstance(self.density, (int, float)) or not 0 < self.density <= 1):
            raise ValueError(f"density must be in (0, 1] (a mean density budget) or null; got {self.density!r}")
        if self.density is not None and not self.patterns:
            raise ValueError("density needs a pattern file with a dynamic calibration: add patterns=path.safetensors")
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be a number in (0, 1]; got {self.top_p!r}")
        if not isinstance(self.max_density, (int, float)) or not 0 < self.max_density <= 1:
            raise ValueError(f"max_density must be in (0, 1]; got {self.max_density!r}")
        for name in ("min_blocks", "every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1; got {value!r}")
        if not isinstance(self.sink, bool):
            raise ValueError(f"sink must be true or false; got {self.sink!r}")
        if isinstance(self.drift, bool) or not isinstance(self.drift, (int, float)) or self.drift < 0:
            raise ValueError(f"drift must be a number >= 0 (0: off); got {self.drift!r}")
        check_blocks(self.q_block, self.k_block)


def top_p_blocks(probs: torch.Tensor, top_p, forced: torch.Tensor, *, min_blocks: int = 1,
                 max_blocks: int | None = None) -> torch.Tensor:
    """bool `[B, H, nQ, nK]`: per query block, the forced key blocks and then the fewest others, most probable first,
    that bring the kept mass to `top_p` of the row's total.

    Args:
        probs: float `[B, H, nQ, nK]`, each row's estimated mass per key block (`estimate_block_mass`).
        top_p: a float, or a tensor broadcastable to `[B, H]` (a per-head budget) on probs' device.
        forced: bool, broadcastable to probs: kept whatever their mass; their mass counts toward `top_p`.
        min_blocks, max_blocks: bounds on the count per row (None: nK); the forced blocks are kept even past
            `max_blocks`.

    Greedy by mass is the fewest blocks: any set that reaches the target without some block of higher mass can swap
    it in. Ties among equal masses go in any order. No host sync.
    """
    n_k = probs.shape[-1]
    forced = forced.expand_as(probs)
    # forced blocks sort first (2 is above any probability); their mass is counted like any other
    order = torch.where(forced, 2.0, probs).argsort(dim=-1, descending=True)
    mass = probs.gather(-1, order).cumsum(-1)
    if isinstance(top_p, torch.Tensor):
        top_p = top_p.to(probs.dtype).reshape(*top_p.shape, 1, 1) if top_p.dim() else top_p
        target = top_p * mass[..., -1:]
        full = (top_p >= 1).expand(*probs.shape[:-1], 1)
    else:
        target = float(top_p) * mass[..., -1:]
        full = None if top_p < 1 else True
    # the first position whose running mass reaches the target, as a count
    count = torch.searchsorted(mass.contiguous(), target.expand(*probs.shape[:-1], 1).contiguous()) + 1
    if full is True:
        count = torch.full_like(count, n_k)
    elif full is not None:
        count = torch.where(full, n_k, count)
    count = count.clamp(min=min_blocks, max=n_k if max_blocks is None else max(1, min(max_blocks, n_k)))
    count = torch.maximum(count, forced.sum(-1, keepdim=True))
    keep = torch.arange(n_k, device=probs.device) < count
    return torch.zeros_like(forced).scatter_(-1, order, keep)


def forced_blocks(layout: TokenLayout, q_block: int, k_block: int, sink: bool, device=None) -> torch.Tensor:
    """bool `[nQ, nK]`: the key blocks every query block keeps: the ones sharing its tokens (its own block), the first
    key block wholly past the text at the start (the sink), and every block holding text."""
    s = layout.seq_len
    n_q, n_k = -(-s // q_block), -(-s // k_block)
    first = torch.arange(n_q, device=device) * q_block
    last = torch.clamp(first + q_block, max=s) - 1
    keys = torch.arange(n_k, device=device)
    forced = (keys >= (first // k_block)[:, None]) & (keys <= (last // k_block)[:, None])
    if sink:
        forced[:, min(n_k - 1, -(-layout.video_start // k_block))] = True
    if layout.text_range is not None:
        start, stop = layout.text_range
        forced[:, start // k_block : -(-stop // k_block)] = True
    return forced


def pooled_drift(pooled_k: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """float32 scalar: the largest relative L2 change of the pooled keys over (b, h), `||k - ref|| / ||ref||`."""
    ref = reference.float()
    return ((pooled_k - ref).flatten(2).norm(dim=-1) / ref.flatten(2).norm(dim=-1).clamp_min(1e-30)).max()


@register_method("dynamic", DynamicOptions)
class DynamicPlanner(Planner):
    """Per query block, the key blocks of this call's estimated mass (see the module docstring)."""

    def __init__(self, config: SparseConfig):
        super().__init__(config)
        self.recomputes: dict[int, int] = {}  # layer -> calls that computed a new mask
        self.drift_recomputes: dict[int, int] = {}  # layer -> of those, the ones that drift brought forward
        self.calls: dict[int, int] = {}
        # per-layer, per-head top_p ([L, H] float32), from a calibration; None: options.top_p everywhere
        self.top_p_table: torch.Tensor | None = None
        self.file = None
        o = config.options
        if o.patterns:
            self.file = PatternFile.load(o.patterns)
            if self.file.dynamic is None:
                raise ValueError(f"{o.patterns} holds no dynamic calibration: search again with this vidsparse "
                                 "(`vidsparse search`), or leave patterns out to run one top_p everywhere")
            if (self.file.params["q_block"], self.file.params["k_block"]) != (o.q_block, o.k_block):
                raise ValueError(f"{o.patterns} was calibrated at blocks {self.file.params['q_block']} x "
                                 f"{self.file.params['k_block']}: set q_block and k_block to those")
            if o.density is not None or self.file.dynamic.top_p is None:
                self.file = self.file.select_top_p(o.density if o.density is not None else 0.3)
            self.top_p_table = self.file.dynamic.top_p.float()

    def bind(self, transformer, num_layers: int, num_heads: int | None) -> None:
        if self.file is not None:
            self.file.check(transformer, num_layers, num_heads)

    def report(self) -> dict:
        calibrated = {} if self.top_p_table is None else {
            "top_p": "calibrated per head", "mean_top_p": round(float(self.top_p_table.mean()), 4),
            "density_budget": self.file.params.get("dynamic_density")}
        return {"dynamic": {
            **calibrated,
            "every": self.config.options.every, "drift": self.config.options.drift,
            "calls": {str(k): v for k, v in sorted(self.calls.items())},
            "recomputes": {str(k): v for k, v in sorted(self.recomputes.items())},
            "drift_recomputes": {str(k): v for k, v in sorted(self.drift_recomputes.items())},
        }}

    def permutation(self, layout: TokenLayout, device) -> torch.Tensor:
        return self.memoised(("perm", layout, str(device)), lambda: HILBERT.permutation(layout, device))

    def forced(self, layout: TokenLayout, device) -> torch.Tensor:
        o = self.config.options
        return self.memoised(("forced", layout, str(device)),
                              lambda: forced_blocks(layout, o.q_block, o.k_block, o.sink, device))

    def top_p(self, ctx: PlanContext):
        """This call's budget: the option, or the calibrated row of this layer's heads (a device tensor `[H]`)."""
        if self.top_p_table is None:
            return self.config.options.top_p
        row = self.top_p_table[ctx.layer, ctx.head_offset : ctx.head_offset + ctx.heads]
        return self.memoised(("top_p", ctx.layer, ctx.head_offset, ctx.heads, str(ctx.device)),
                              lambda: row.to(ctx.device))

    def choose(self, ctx: PlanContext, probe: Probe, pooled_k: torch.Tensor | None = None):
        """`(plan, pooled_k)`: this call's mask from its q and k, as a one-group plan in the Hilbert order."""
        o = self.config.options
        layout, q, k = ctx.layout, probe.q, probe.k
        perm = self.permutation(layout, q.device)
        text = layout.text_range  # orders leave text in place: the same positions in the Hilbert order
        if pooled_k is None:
            probs, pooled_k = estimate_block_mass(q, k, o.q_block, o.k_block, perm=perm,
                                                  key_padding=probe.key_padding, text=text)
        else:  # the drift check pooled the keys already
            pooled_q = pool_blocks(q, o.q_block, perm=perm)
            bias = key_block_bias(layout.seq_len, o.k_block, perm=perm, key_padding=probe.key_padding, text=text,
                                  device=q.device)
            probs = block_scores(pooled_q, pooled_k, bias, 1.0 / math.sqrt(q.shape[-1]))
        n_k = probs.shape[-1]
        blocks = top_p_blocks(probs, self.top_p(ctx), self.forced(layout, q.device), min_blocks=o.min_blocks,
                              max_blocks=math.ceil(o.max_density * n_k))
        mask = SparseMask.from_block_mask(blocks, o.q_block, o.k_block, layout.seq_len, text=text)
        return AttentionPlan.sparse(mask, LABELS, order=HILBERT), pooled_k

    def plan(self, ctx: PlanContext, probe: Probe | None) -> AttentionPlan:
        o = self.config.options
        # outside the runtime there is no state to reuse: every call chooses. Inside it, the runtime clears the
        # layer's state when a call's layout, batch, dtype or padding differs from what the plan was made for.
        state = ctx.state if ctx.state is not None else LayerState()
        q = probe.q
        self.calls[ctx.layer] = self.calls.get(ctx.layer, 0) + 1
        fresh = state.plan is None
        if not fresh:
            state.since += 1
        due = fresh or state.since >= o.every
        pooled_k = None
        if not due and o.drift > 0:
            pooled_k = pool_blocks(probe.k, o.k_block, perm=self.permutation(ctx.layout, q.device),
                                   key_padding=probe.key_padding)
            due = bool(pooled_drift(pooled_k, state.reference) > o.drift)  # the one host read of this method
            if due:
                self.drift_recomputes[ctx.layer] = self.drift_recomputes.get(ctx.layer, 0) + 1
        if due:
            state.plan, pooled_k = self.choose(ctx, probe, pooled_k)
            state.since = 0
            # half the bytes of float32 are enough to tell drift apart: 5.7 MB a layer at HunyuanVideo 720p
            state.reference = pooled_k.to(torch.bfloat16) if o.drift > 0 else None
            self.recomputes[ctx.layer] = self.recomputes.get(ctx.layer, 0) + 1
        return state.plan
