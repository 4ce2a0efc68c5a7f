"""The "hybrid" method: per layer and head, the cheapest of a searched pattern, a profiled pattern, a cached delta and
dense attention that meets one budget.

No single idea fits every head of a video DiT: some keep one pattern whatever the prompt (Sparse-vDiT's offline
search), some switch between spatial and temporal with the content (Sparse VideoGen's profiling), and some are
diffuse but change slowly between steps (Chipmunk's cached deltas). The candidates of a head:

- "static": its pattern from a `vidsparse search` file (`patterns`; left out without one);
- "spatial" and "temporal": Sparse VideoGen's two patterns, sized by `fraction` (as in "profile");
- "delta": the top `top_keys` key columns of its query block now, plus the rest cached at the last refresh (as in
  "delta", in voxel order);
- dense.

**Errors and costs in shared units.** At a choosing step, a few sampled query rows per frame (`rows_per_frame`)
score every candidate against exact attention on those rows: the relative L2 error of the candidate's output there,
the delta candidate's included (its columns now, merged with its cached rest, exactly as a delta step computes it).
A candidate's cost is its realised density times its kernel's time per unit of density, in units of dense
attention (`UNIT_COST`, measured in `kernels/RESULTS.md` and `kernels/COLUMNS.md`). `vidsparse.core.select` chooses:
under an error budget `eps`, the cheapest candidate within it (else dense); under a target `density`, the least
total error whose mean realised density per layer fits. The choice is per head (the worst batch element decides).

**Schedule.** With "delta" a candidate, the refresh steps (`refresh_steps`, `refresh_every`, and any layer without a
cache) run full attention for every head and cache the rest, as "delta" does. The first step after a refresh
chooses, and so does every `every`-th step after it, so a head whose cached rest has aged past the budget moves to
a pattern. Between choices each layer reuses its plan (kept per CFG branch). Choosing reads the choice on the host
once per layer (to form the head groups); the steps between run without a host sync.

**Execution.** One plan of up to three head groups: the pattern heads in one block-sparse launch (each head its own
mask row and token order), the delta heads in one column-sparse launch against their cached rest, and the dense
heads in one SDPA call.

**Cache.** A refresh caches the delta of every head, since the choice after it measures each head's delta candidate.
Once it has chosen, the heads that chose another candidate free their share of the layer's cache (the plan's
`cache_heads`; a layer without a delta head frees it whole and waits for the next scheduled refresh), so a
layer's cache holds the delta heads' share between a choice and the next refresh. Until that refresh those heads
cannot move back to the delta candidate (its error reads as infinite), which costs little: a cache only ages. An
entry offloaded to host memory keeps every head.

`force` runs every head on one candidate without measuring (then "hybrid" equals that method).

Example::

    >>> vidsparse.apply(pipe, {"method": "hybrid", "eps": 0.2, "warmup_steps": 10})
    >>> vidsparse.apply(pipe, {"method": "hybrid", "density": 0.3, "patterns": "patterns.safetensors"})
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .config import SparseConfig
from .registry import register_method
from .delta import DeltaOptions, DeltaPlanner
from .dynamic import DynamicOptions, DynamicPlanner
from ..core.columns import unpack_columns
from ..core.layout import FRAME_MAJOR, HILBERT, TokenLayout
from ..core.mask import SparseMask
from ..core.plan import AttentionPlan, HeadGroup, PlanContext, Probe
from ..core.state import LayerState
from .base import Planner, check_blocks
from .profile import ProfileOptions, candidate_sizes
from .sampling import fixed_candidates, kept_keys, sampled_chunks
from ..core.select import select, select_within

__all__ = ["CANDIDATES", "HybridOptions", "HybridPlanner", "UNIT_COST"]

CANDIDATES = ("static", "spatial", "temporal", "delta", "dynamic")
LABELS = CANDIDATES + ("dense",)
DENSE = LABELS.index("dense")
PATTERNED = ("static", "spatial", "temporal")  # the candidates that run as block masks

# Kernel time per unit of realised density, in units of dense attention (cuDNN SDPA), H200, bf16:
# block-sparse masks 1.08-1.22 (kernels/RESULTS.md, random masks of density 0.1 and 0.25, CogVideoX-5b to
# HunyuanVideo 720p), the column kernel 1.25-1.74 (kernels/COLUMNS.md, 7% and 15% of the keys).
# tests/test_hybrid.py checks these against kernels/results.json and kernels/columns.json.
UNIT_COST = {"sparse": 1.15, "columns": 1.5}


@dataclass(frozen=True)
class HybridOptions:
    """"hybrid" options.

    Attributes:
        eps: error budget: a candidate qualifies when its relative L2 error on the sampled rows is at most this;
            the cheapest qualifying one runs, dense where none does (eps 0: every head dense).
        density: a target density instead of `eps` (per layer, the mean realised density of its heads' choices).
        candidates: which candidates to consider (None: static where `patterns` is given, spatial, temporal, delta).
        force: run every head on this candidate (or "dense") without measuring.
        every: choose again every this many steps after the last choice (refresh steps excluded).
        patterns: the static candidate's pattern file (`vidsparse search`); its block sizes are used for every mask.
        fraction, frames, radius: the spatial and temporal candidates, as in "profile".
        top_keys, refresh_steps, refresh_every, voxel, rows_per_block, cache_budget, host_budget: the delta
            candidate, as in "delta".
        top_p: the dynamic candidate: per query block the key blocks of this share of the mass estimated from this
            call's pooled q and k, in the Hilbert order, as in "dynamic" (its mask is made when the hybrid chooses).
        rows_per_frame: sampled query rows per latent frame; head_chunk: heads scored at a time (None: as many as
            keep one chunk's scores within 2**27 floats, so small models score every head in a few launches).
        q_block, k_block: mask block sizes (q_block is also the delta candidate's query block).
    """

    STEP_FIELDS: ClassVar[tuple[str, ...]] = ("refresh_steps", "refresh_every", "every")  # scaled with the steps

    eps: float = 0.2
    density: float | None = None
    candidates: tuple[str, ...] | None = None
    force: str | None = None
    every: int = 4
    patterns: str | None = None
    fraction: float = 0.25
    frames: int | None = None
    radius: int | None = None
    top_keys: float = 0.05
    refresh_steps: tuple[int, ...] = (0, 1, 10, 40)
    refresh_every: int = 0
    voxel: tuple[int, int, int] = (4, 4, 8)
    rows_per_block: int = 16
    top_p: float = 0.9
    cache_budget: int | None = None
    host_budget: int | None = None
    rows_per_frame: int = 4
    head_chunk: int | None = None
    q_block: int = 128
    k_block: int = 128

    def __post_init__(self):
        if not isinstance(self.eps, (int, float)) or self.eps < 0:
            raise ValueError(f"eps must be a number >= 0; got {self.eps!r}")
        if self.density is not None and (not isinstance(self.density, (int, float)) or not 0 < self.density <= 1):
            raise ValueError(f"density must be in (0, 1] or None; got {self.density!r}")
        if self.candidates is not None:
            bad = [c for c in self.candidates if c not in CANDIDATES]
            if bad or not self.candidates:
                raise ValueError(f"candidates must be a non-empty list of {CANDIDATES}; got {self.candidates!r}")
            if "static" in self.candidates and not self.patterns:
                raise ValueError("the static candidate needs a pattern file: add patterns=path.safetensors "
                                 "(`vidsparse search` makes one), or leave 'static' out of candidates")
        if self.force is not None and self.force not in LABELS:
            raise ValueError(f"force must be one of {LABELS} or None; got {self.force!r}")
        if self.force == "static" and not self.patterns:
            raise ValueError("force='static' needs a pattern file: add patterns=path.safetensors")
        for name in ("every", "rows_per_frame", "head_chunk"):
            value = getattr(self, name)
            if (value is not None or name != "head_chunk") and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an int >= 1; got {value!r}")
        check_blocks(self.q_block, self.k_block)
        # the delta, dynamic and profile options check their own fields
        DynamicOptions(top_p=self.top_p)
        self.delta_options()
        self.profile_options()

    @property
    def active(self) -> tuple[str, ...]:
        """The candidates considered, in `CANDIDATES` order."""
        wanted = self.candidates or (("static",) if self.patterns else ()) + ("spatial", "temporal", "delta", "dynamic")
        return tuple(c for c in CANDIDATES if c in wanted)

    def delta_options(self) -> DeltaOptions:
        return DeltaOptions(top_keys=self.top_keys, refresh_steps=tuple(self.refresh_steps),
                            refresh_every=self.refresh_every, voxel=tuple(self.voxel), q_block=self.q_block,
                            rows_per_block=self.rows_per_block, cache_budget=self.cache_budget,
                            host_budget=self.host_budget)

    def profile_options(self) -> ProfileOptions:
        return ProfileOptions(fraction=self.fraction, frames=self.frames, radius=self.radius,
                              rows_per_frame=self.rows_per_frame, head_chunk=self.head_chunk or 8,
                              q_block=self.q_block, k_block=self.k_block)


@register_method("hybrid", HybridOptions)
class HybridPlanner(Planner):
    """Per head the cheapest candidate within the budget (see the module docstring)."""

    def __init__(self, config: SparseConfig):
        super().__init__(config)
        o = config.options
        self.static = None
        if o.patterns and ("static" in o.active or o.force == "static"):
            from .static import StaticPlanner

            self.static = StaticPlanner(SparseConfig.make("static", patterns=o.patterns))
        # every mask is stated in one block size: the pattern file's where there is one
        self.q_block, self.k_block = (self.static.q_block, self.static.k_block) if self.static else (o.q_block, o.k_block)
        self.uses_delta = o.force == "delta" if o.force else "delta" in o.active
        self.delta = DeltaPlanner(SparseConfig(method="delta", backend=config.backend, options=o.delta_options(),
                                               schedule_steps=config.schedule_steps))
        self.dynamic = DynamicPlanner(SparseConfig(method="dynamic", backend=config.backend, options=DynamicOptions(
            top_p=o.top_p, q_block=self.q_block, k_block=self.k_block), schedule_steps=config.schedule_steps))
        calibrated = self.static.file.dynamic if self.static is not None else None
        if calibrated is not None and calibrated.top_p is not None:  # each head's own top_p from the search
            self.dynamic.top_p_table = calibrated.top_p.float()
        self.choices = 0  # choosing calls, for the report
        self._dynamic_now = None  # the dynamic candidate's mask, from `measure` to `build` within one call

    @property
    def caches_deltas(self) -> bool:
        return self.uses_delta

    # ---------------------------------------------------------------- lifecycle
    def bind(self, transformer, num_layers: int, num_heads: int | None) -> None:
        if self.static is not None:
            self.static.bind(transformer, num_layers, num_heads)

    def reset(self) -> None:
        super().reset()
        self.delta.reset()
        if self.static is not None:
            self.static.reset()

    def report(self) -> dict:
        return {"hybrid": {
            "candidates": list(self.config.options.active), "choosing_calls": self.choices,
            "unit_cost": dict(UNIT_COST)}}

    # ---------------------------------------------------------------- candidate masks
    def table(self, layout: TokenLayout, device) -> dict:
        """Per layout: the mask rows every head may run (each distinct static pattern, spatial, temporal) as one
        stacked table, with each row's density, index width and token order, and the patterns' row numbers."""
        key = ("table", layout, str(device))
        if key not in self.memo:
            o = self.config.options
            frames, radius = candidate_sizes(layout, o.profile_options())
            rows = fixed_candidates(layout, frames, radius)
            patterns = {}
            if self.static is not None:
                for p in dict.fromkeys(p for layer in range(self.static.file.num_layers)
                                       for p in self.static.file.patterns(layer)):
                    patterns[p] = len(rows)
                    rows.append((p, FRAME_MAJOR))
            masks = [p.mask(layout, 1, self.q_block, self.k_block, device, order).compact() for p, order in rows]
            table = SparseMask.stack_heads(masks)
            self.memo[key] = dict(
                mask=table, density=table.density_per_head()[0], widths=[m.kv_indices.shape[-1] for m in masks],
                orders=[order for _, order in rows], patterns=patterns, frames=frames, radius=radius, sampled={})
        return self.memo[key]

    def _static_rows(self, ctx: PlanContext, t: dict) -> list[int] | None:
        """The table rows of this call's heads' static patterns (None without a pattern file)."""
        if self.static is None:
            return None
        patterns = self.static.file.patterns(ctx.layer)[ctx.head_offset : ctx.head_offset + ctx.heads]
        return [t["patterns"][p] for p in patterns]

    def _kept(self, t: dict, layout: TokenLayout, rows: torch.Tensor) -> torch.Tensor:
        """bool `[table rows, R, S]`: the keys (model order) each table row keeps for the sampled rows."""
        key = tuple(rows.shape)
        if key not in t["sampled"]:
            t["sampled"][key] = kept_keys(t["mask"], t["orders"], layout, rows)
        return t["sampled"][key]

    @staticmethod
    def _dynamic_kept(layout: TokenLayout, mask: SparseMask, rows: torch.Tensor) -> torch.Tensor:
        """bool `[B', H, R, S]`: the keys (model order) a per-head mask in the Hilbert order keeps for the rows."""
        position = HILBERT.inverse(layout, rows.device)  # model index -> Hilbert position
        blocks = mask.to_blocks()  # [B', H, nQ, nK]
        return blocks[:, :, position[rows] // mask.q_block][..., position // mask.k_block]

    # ---------------------------------------------------------------- choosing
    def measure(self, ctx: PlanContext, probe: Probe, t: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per (batch, head) and candidate in `CANDIDATES` order: the relative error on the sampled rows, the cost
        and the realised density, float32 `[B, H, C]` each (inf error for a candidate not considered)."""
        o = self.config.options
        q = probe.q
        b, h, s, d = q.shape
        rows = probe.sample_rows(o.rows_per_frame)
        active = o.active
        kept = self._kept(t, ctx.layout, rows)  # [T, R, S]
        static_rows = self._static_rows(ctx, t)
        cached = self._cached_rows(ctx, rows, q.device) if "delta" in active else None
        dynamic = self.dynamic.choose(ctx, probe)[0].groups[0] if "dynamic" in active else None
        dynamic_keep = None if dynamic is None else self._dynamic_kept(ctx.layout, dynamic.mask, rows)
        errors = torch.full((b, h, len(CANDIDATES)), float("inf"), device=q.device)
        chunk = o.head_chunk or max(1, (1 << 27) // (b * len(rows) * s))
        static_index = None if static_rows is None else torch.tensor(static_rows, device=q.device)
        for hs, sr in sampled_chunks(probe, rows, chunk):
            keep = kept.to(sr.e.dtype)
            for c, name in enumerate(CANDIDATES):
                if name not in active:
                    continue
                if name == "static":
                    errors[:, hs, c] = sr.error(sr.partial(keep[static_index[hs]])[0])  # [Hc, R, S] masks
                elif name in ("spatial", "temporal"):
                    errors[:, hs, c] = sr.error(sr.partial(keep[c - 1])[0])
                elif name == "dynamic":  # [B', Hc, R, S]: this call's own key blocks per (b, h)
                    errors[:, hs, c] = sr.error(sr.partial(dynamic_keep[:, hs].to(sr.e.dtype))[0])
                elif cached is not None:  # a delta step: this call's columns merged with the cached rest
                    o_rest, lse_rest, keys, valid = (x[:, hs] for x in cached[:4])
                    o_k, lse_k = sr.partial(self._now(ctx.layout, keys, valid, sr.e.dtype))
                    total = torch.logaddexp(lse_rest, lse_k)
                    out = (torch.exp(lse_rest - total).unsqueeze(-1) * o_rest.float()
                           + torch.exp(lse_k - total).unsqueeze(-1) * o_k)
                    errors[:, hs, c] = sr.error(out)
        if cached is not None and cached[4] is not None:  # heads whose cache went at the last choice: no candidate
            errors[:, ~cached[4], CANDIDATES.index("delta")] = float("inf")
        density = self._densities(ctx, t, static_index, b, h, q.device)
        if dynamic is not None:
            density[..., CANDIDATES.index("dynamic")] = dynamic.density.float()
            self._dynamic_now = dynamic  # what `build` runs for the heads that choose it
        unit = torch.full((len(CANDIDATES),), UNIT_COST["sparse"], device=q.device)
        unit[CANDIDATES.index("delta")] = UNIT_COST["columns"]
        cost = density * unit
        return errors, cost, density

    def _densities(self, ctx, t, static_index, b, h, device) -> torch.Tensor:
        density = torch.ones(b, h, len(CANDIDATES), device=device)
        if static_index is not None:
            density[..., 0] = t["density"][static_index]
        density[..., 1], density[..., 2] = t["density"][0], t["density"][1]
        entry = None if ctx.state is None else ctx.state.delta
        if entry is not None and entry.heads == tuple(range(h)):
            density[..., CANDIDATES.index("delta")] = entry.density.float()
        elif entry is not None:  # narrowed to the last choice's delta heads
            held = torch.tensor(entry.heads, device=device)
            density[:, held, CANDIDATES.index("delta")] = entry.density.float().to(device)
        return density

    def _cached_rows(self, ctx: PlanContext, rows: torch.Tensor, device):
        """For the sampled rows: the cached rest `o_rest [B, H, R, D]` and `lse_rest [B, H, R]`, and the keys the
        delta step computes now, their model indices `[B, H, R, K]` with which of them count (`[B, H, R, K]` bool;
        the text keys come on top), and which heads the cache holds (bool `[H]`, None: every head; the others'
        rows are placeholders); None where this layer holds no cache."""
        entry = None if ctx.state is None else ctx.state.delta
        if entry is None:
            return None
        qb = self.config.options.q_block
        order = self.delta.order
        inverse, model = self.memoised(("voxel", ctx.layout, str(device)), lambda: (
            order.inverse(ctx.layout, device), order.permutation(ctx.layout, device)))  # model <-> voxel positions
        position = inverse[rows]  # the rows' places in voxel order
        o_rest, lse_rest, columns, counts, *wraps = entry.readable()  # an offloaded cache: once its copy is done
        at, blocks = position.to(o_rest.device), (position // qb).to(o_rest.device)
        o_rest, lse_rest = o_rest.index_select(2, at).to(device), lse_rest.index_select(2, at).to(device)
        columns, counts = columns.index_select(2, blocks).to(device), counts.index_select(2, blocks).to(device)
        if wraps:  # packed lists (vidsparse.core.columns)
            columns = unpack_columns(columns, wraps[0].index_select(2, blocks).to(device), counts)
        columns = columns.long()  # [B, H, R, K] voxel positions
        keys, valid = model[columns], torch.arange(columns.shape[-1], device=device) < counts.unsqueeze(-1)
        if entry.heads == tuple(range(ctx.heads)):
            return o_rest, lse_rest, keys, valid, None
        held = torch.tensor(entry.heads, device=device)  # a cache narrowed to the last choice's delta heads

        def every_head(x, fill):
            out = x.new_full((x.shape[0], ctx.heads, *x.shape[2:]), fill)
            out[:, held] = x
            return out

        present = torch.zeros(ctx.heads, dtype=torch.bool, device=device)
        present[held] = True
        return (every_head(o_rest, 0), every_head(lse_rest, float("-inf")), every_head(keys, 0),
                every_head(valid, False), present)

    def _now(self, layout: TokenLayout, keys: torch.Tensor, valid: torch.Tensor, dtype) -> torch.Tensor:
        """0/1 `[B, Hc, R, S]`: the keys a delta step computes for each sampled row (its columns and the text)."""
        now = torch.zeros(*keys.shape[:3], layout.seq_len, device=keys.device, dtype=dtype)
        now.scatter_add_(-1, keys, valid.to(dtype)).clamp_(max=1)  # entries past a block's count add 0
        if layout.text_range is not None:
            now[..., slice(*layout.text_range)] = 1
        return now

    def choose(self, ctx: PlanContext, probe: Probe) -> torch.Tensor:
        """int64 `[H]`: each head's choice, an index into `LABELS`."""
        o = self.config.options
        if o.force is not None:
            return torch.full((ctx.heads,), LABELS.index(o.force), dtype=torch.long, device=probe.q.device)
        if o.eps == 0 and o.density is None:
            return torch.full((ctx.heads,), DENSE, dtype=torch.long, device=probe.q.device)
        self.choices += 1
        t = self.table(ctx.layout, ctx.device)
        errors, cost, density = self.measure(ctx, probe, t)
        errors, cost, density = errors.amax(0), cost.amax(0), density.amax(0)  # the worst batch element decides
        if o.density is not None:
            choice = select_within(errors, cost, density, o.density)
        else:
            choice = select(errors, cost, o.eps, lam=1e3)  # the cheapest within the budget; errors break ties
        return torch.where(choice < 0, DENSE, choice)

    # ---------------------------------------------------------------- planning
    def build(self, ctx: PlanContext, choice: torch.Tensor) -> AttentionPlan:
        """The plan of a choice: pattern heads, delta heads and dense heads, each group in one launch."""
        codes = choice.tolist()  # the one host read of a choosing step
        entry = None if ctx.state is None else ctx.state.delta
        held = () if entry is None else entry.heads
        codes = [DENSE if LABELS[c] == "delta" and hd not in held else c for hd, c in enumerate(codes)]  # no cache
        by = {name: tuple(hd for hd, c in enumerate(codes) if LABELS[c] == name) for name in ("delta", "dynamic", "dense")}
        keep = by["delta"] if self.uses_delta else None  # the layer's cache keeps only the delta heads' share
        patterned = tuple(hd for hd, c in enumerate(codes) if LABELS[c] in PATTERNED)
        groups = []
        if patterned:
            t = self.table(ctx.layout, ctx.device)
            static_rows = self._static_rows(ctx, t)
            rows = [static_rows[hd] if codes[hd] == 0 else codes[hd] - 1 for hd in patterned]
            width = max(t["widths"][r] for r in rows)
            table = t["mask"]
            table = SparseMask(table.kv_num_blocks, table.kv_indices[..., :width], table.q_block, table.k_block,
                               table.seq_len, table.text)
            index = torch.tensor(rows, device=ctx.device).view(1, -1)
            label = torch.tensor([codes[hd] for hd in patterned], device=ctx.device).view(1, -1)
            orders = tuple(dict.fromkeys(t["orders"][r] for r in rows))  # frame-major and/or spatial-major
            order_index = None if len(orders) == 1 else torch.tensor(
                [orders.index(t["orders"][r]) for r in rows], device=ctx.device)
            groups.append(HeadGroup(patterned, "sparse", table.gather_heads(index), orders, order_index=order_index,
                                    labels=LABELS, label_index=label, density=t["density"][index]))
        if by["delta"]:
            groups.append(self.delta.group(ctx, by["delta"], False))
        if by["dynamic"]:  # this choosing call's own mask, reused until the next choice
            g, index = self._dynamic_now, torch.tensor(by["dynamic"], device=ctx.device)
            self._dynamic_now = None
            m = g.mask
            mask = SparseMask(m.kv_num_blocks.index_select(1, index), m.kv_indices.index_select(1, index), m.q_block,
                              m.k_block, m.seq_len, m.text)
            groups.append(HeadGroup(by["dynamic"], "sparse", mask, (HILBERT,), labels=("dynamic",),
                                    density=g.density.index_select(-1, index)))
        if by["dense"]:
            if len(by["dense"]) == ctx.heads:
                return AttentionPlan(AttentionPlan.dense(ctx.heads).groups, cache_heads=keep)
            groups.append(HeadGroup(by["dense"], "dense", labels=("dense",)))
        return AttentionPlan(tuple(groups), cache_heads=keep)

    def plan(self, ctx: PlanContext, probe: Probe | None) -> AttentionPlan:
        o = self.config.options
        if o.force == "static":
            return self.static.plan(ctx, probe)
        if o.force == "delta":
            return self.delta.plan(ctx, probe)
        if o.force == "dynamic":
            return self.dynamic.plan(ctx, probe)
        state = ctx.state if ctx.state is not None else LayerState()
        if self.uses_delta:
            if ctx.state is None:
                raise ValueError("the hybrid method's delta candidate keeps a cache per layer: it runs inside "
                                 "vidsparse's runtime only (or leave 'delta' out of candidates)")
            # over the memory budgets a layer keeps no cache: it chooses among the other candidates instead. A layer
            # whose last choice gave no head the delta freed its cache (`cache_heads`): it waits for the schedule.
            no_cache = state.delta is None and state.plan is None
            if not state.uncached and (self.delta.refresh_step(ctx) or no_cache):
                state.plan = None  # choose again after the refresh
                return self.delta.plan(ctx, probe)
        if state.plan is None or state.since % self.scheduled(ctx).every == 0:
            state.plan, state.since = self.build(ctx, self.choose(ctx, probe)), 0
        state.since += 1
        entry = state.delta
        if entry is not None and entry.staged is not None and all(g.mode != "delta" for g in state.plan.groups):
            # an offloaded cache the layer before fetched ahead, which this plan does not read: drop the device copy
            entry.staged = entry.staged_ready = None
        return state.plan
