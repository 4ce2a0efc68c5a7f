"""The "profile" method: Sparse VideoGen's online profiling of spatial and temporal heads.

At a profiling step, for every head of a layer, a few sampled query rows per frame (`Probe.sample_rows`) score
two candidates against exact attention on those rows:

- spatial: own frame +- `frames` frames, in the model's frame-major order;
- temporal: own spatial position +- `radius` rows and columns in every frame, in spatial-major order (one position
  across all frames contiguous), where it is a dense band of blocks.

Each candidate's output on the sampled rows is the exact attention restricted to the keys its blocks keep, and its
error is `||O_c - O|| / ||O||` over those rows. Per (batch element, head), `vidsparse.core.select.select` takes the
cheapest candidate within the error budget `eps`, or dense when neither is. By default `frames` and `radius` are
sized so that each candidate computes about `fraction` of the attention (SVG's 0.25-0.3).

Everything stays on the device: the choice is an index tensor, the plan is one head group whose per-head mask rows
and token orders are gathered from a small candidate table by that index, and all heads run in one kernel launch.
No host sync. Between profiling steps (`every`), each layer reuses its last choice, kept per CFG branch.

Example::

    >>> vidsparse.apply(pipe, {"method": "profile", "fraction": 0.25, "warmup_steps": 12, "warmup_layers": 2})
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from .registry import register_method
from ..core.layout import FRAME_MAJOR, SPATIAL_MAJOR, TokenLayout
from ..core.mask import SparseMask
from ..core.patterns import Pattern
from ..core.plan import AttentionPlan, HeadGroup, PlanContext, Probe
from ..core.state import LayerState
from .base import Planner, check_blocks
from ..core.select import select
from .sampling import fixed_candidates, kept_keys, sampled_chunks

__all__ = ["ProfileOptions", "ProfilePlanner", "candidate_sizes"]

LABELS = ("spatial", "temporal", "dense")


@dataclass(frozen=True)
class ProfileOptions:
    """"profile" options.

    Attributes:
        fraction: target density of each candidate, used to size `frames` and `radius` when they are None.
        frames: spatial candidate: own frame +- this many frames (None: from `fraction`).
        radius: temporal candidate: own position +- this many rows and columns in every frame (None: from `fraction`).
        eps: error budget: a candidate qualifies when its relative L2 error on the sampled rows is at most this;
            a head with no qualifying candidate runs dense (eps 0: every head).
        rows_per_frame: sampled query rows per latent frame.
        every: profile every this many sparse steps; the steps between reuse each layer's last choice.
        q_block, k_block: mask block sizes in tokens (powers of two >= 16).
        head_chunk: heads scored at a time (memory: B x head_chunk x rows x S floats).
    """

    STEP_FIELDS: ClassVar[tuple[str, ...]] = ("every",)  # scaled with the step count

    fraction: float = 0.25
    frames: int | None = None
    radius: int | None = None
    eps: float = 0.3
    rows_per_frame: int = 4
    every: int = 1
    q_block: int = 128
    k_block: int = 128
    head_chunk: int = 8

    def __post_init__(self):
        if not isinstance(self.fraction, (int, float)) or not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1]; got {self.fraction!r}")
        for name in ("frames", "radius"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be an int >= 0 or None; got {value!r}")
        if not isinstance(self.eps, (int, float)) or self.eps < 0:
            raise ValueError(f"eps must be a number >= 0; got {self.eps!r}")
        for name in ("rows_per_frame", "every", "head_chunk"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1; got {value!r}")
        check_blocks(self.q_block, self.k_block)


def candidate_sizes(layout: TokenLayout, options: ProfileOptions) -> tuple[int, int]:
    """(frames, radius) of the two candidates: as given, or sized to keep about `fraction` of the keys
    ((2f + 1) / T frames; (2r + 1)^2 / (H W) positions)."""
    frames = options.frames
    if frames is None:
        frames = max(0, round((options.fraction * layout.frames - 1) / 2))
    radius = options.radius
    if radius is None:
        radius = max(0, round((math.sqrt(options.fraction * layout.frame_size) - 1) / 2))
    return frames, radius


@register_method("profile", ProfileOptions)
class ProfilePlanner(Planner):
    """Online spatial/temporal profiling per head (see the module docstring)."""

    def table(self, layout: TokenLayout, device) -> dict:
        """Per layout: the candidate table (spatial, temporal, dense) as a 3-row mask, each row's density, and for
        the sampled rows the token-level keys each candidate keeps, `[C, R, S]` (model order)."""
        key = ("table", layout, str(device))
        if key not in self.memo:
            o = self.config.options
            frames, radius = candidate_sizes(layout, o)
            rows = [p.mask(layout, 1, o.q_block, o.k_block, device, order)
                    for p, order in fixed_candidates(layout, frames, radius)]
            rows.append(Pattern("full").mask(layout, 1, o.q_block, o.k_block, device))
            table = SparseMask.stack_heads(rows)  # "heads" 0, 1, 2 = the candidates
            self.memo[key] = dict(mask=table, density=table.density_per_head()[0], frames=frames, radius=radius,
                                  orders=(FRAME_MAJOR, SPATIAL_MAJOR), sampled={})
        return self.memo[key]

    def _kept(self, t: dict, layout: TokenLayout, rows: torch.Tensor) -> torch.Tensor:
        """bool `[2, R, S]`: the keys (model order) the spatial and temporal candidates keep for the sampled rows."""
        key = tuple(rows.shape)
        if key not in t["sampled"]:
            t["sampled"][key] = kept_keys(t["mask"], t["orders"], layout, rows)
        return t["sampled"][key]

    def choose(self, ctx: PlanContext, probe: Probe) -> torch.Tensor:
        """int64 `[B, H]`: 0 spatial, 1 temporal, 2 dense, from the sampled rows of this call.

        Per chunk of heads: the sampled rows' scores against every key in the input dtype (tensor cores), their
        exponentials once in float32, then for the full key set and each candidate's kept keys the output
        `sum_j e_j v_j / sum_j e_j`; the products with V run in the input dtype with float32 accumulation.
        """
        o = self.config.options
        if o.eps == 0:  # no error allowed: every head dense (a candidate can score 0 only through rounding)
            return torch.full(probe.q.shape[:2], 2, dtype=torch.long, device=probe.q.device)
        t = self.table(ctx.layout, ctx.device)
        rows = probe.sample_rows(o.rows_per_frame)
        keep = self._kept(t, ctx.layout, rows)  # bool [2, R, S]
        errors = []
        for _, s in sampled_chunks(probe, rows, o.head_chunk):
            keep = keep.to(s.e.dtype)
            errors.append(torch.stack([s.error(s.partial(keep[c])[0]) for c in range(keep.shape[0])], -1))
        errors = torch.cat(errors, 1)
        # a large cost weight: the cheapest candidate within the budget, its error only breaking ties; -1: dense
        choice = select(errors, t["density"][:2], o.eps, lam=1e3)
        return torch.where(choice < 0, 2, choice)

    def plan(self, ctx: PlanContext, probe: Probe | None) -> AttentionPlan:
        state = ctx.state if ctx.state is not None else LayerState()
        t = self.table(ctx.layout, ctx.device)
        if state.plan is None or state.since % self.scheduled(ctx).every == 0:
            choice = self.choose(ctx, probe)  # [B, H]
            # the plan is rebuilt only with the choice: between profiling steps the same mask object runs
            state.plan = AttentionPlan((HeadGroup(range(ctx.heads), "sparse", t["mask"].gather_heads(choice),
                                                  t["orders"], order_index=(choice == 1).long(), labels=LABELS,
                                                  label_index=choice, density=t["density"][choice]),))
            state.since = 0
        state.since += 1
        return state.plan
