"""Scoring candidates on sampled query rows: what the online methods (profile, hybrid, dynamic) share.

For a few sampled query rows, the scores against every key are computed once per chunk of heads (in the input
dtype, on tensor cores), their exponentials once in float32, and then for the full key set and for each
candidate's kept keys the output `sum_j e_j v_j / sum_j e_j` (products with V in the input dtype, float32
accumulation). A candidate's error is the relative L2 distance of its rows from the exact rows.

Example::

    >>> rows = probe.sample_rows(4)
    >>> for heads, s in sampled_chunks(probe, rows, chunk=8):
    ...     err = s.error(s.partial(keep)[0])          # keep: 0/1 [R, S] or [Hc, R, S] (model order)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core.layout import FRAME_MAJOR, SPATIAL_MAJOR, TokenLayout, TokenOrder
from ..core.patterns import Pattern
from ..core.plan import Probe

__all__ = ["SampledRows", "fixed_candidates", "kept_keys", "sampled_chunks", "sampled_keys"]


@dataclass
class SampledRows:
    """One chunk of heads' sampled rows: `e` unnormalised probabilities `[B, Hc, R, S]` (input dtype), `v` the
    chunk's values, `peak` each row's largest score (unscaled, `[B, Hc, R, 1]`) and the exact rows `[B, Hc, R, D]`."""

    e: torch.Tensor
    v: torch.Tensor
    peak: torch.Tensor
    scale: float
    exact: torch.Tensor
    norm: torch.Tensor

    def partial(self, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Output `[B, Hc, R, D]` (float32) and natural-log lse `[B, Hc, R]` over the keys `keep` (0/1) holds."""
        ec = self.e * keep
        mass = ec.float().sum(-1, keepdim=True)
        out = (ec @ self.v).float() / mass.clamp_min(1e-30)
        return out, (mass.log() + self.peak * self.scale).squeeze(-1)

    def error(self, out: torch.Tensor) -> torch.Tensor:
        """float32 `[B, Hc]`: the relative L2 error of `out` on the sampled rows."""
        return (out - self.exact).flatten(-2).norm(dim=-1) / self.norm


def sampled_chunks(probe: Probe, rows: torch.Tensor, chunk: int):
    """Yield `(heads, SampledRows)` for each chunk of `chunk` heads of the probe's call."""
    q, k, v = probe.q, probe.k, probe.v
    low = q.dtype if q.dtype in (torch.bfloat16, torch.float16) else torch.float32
    scale = 1.0 / math.sqrt(q.shape[-1])
    for h0 in range(0, q.shape[1], chunk):
        hs = slice(h0, min(q.shape[1], h0 + chunk))
        scores = (q[:, hs, rows] @ k[:, hs].transpose(-1, -2)).float()  # [B, Hc, R, S]
        if probe.key_padding is not None:
            scores.masked_fill_(probe.key_padding[:, None, None, :], float("-inf"))
        peak = scores.amax(-1, keepdim=True)
        scores -= peak
        e = scores.mul_(scale).exp_().to(low)  # unnormalised probabilities
        del scores
        vs = v[:, hs].to(low)
        exact = (e @ vs).float() / e.float().sum(-1, keepdim=True)  # [B, Hc, R, D]
        yield hs, SampledRows(e, vs, peak, scale, exact, exact.flatten(-2).norm(dim=-1).clamp_min(1e-30))


def sampled_keys(blocks: torch.Tensor, order: TokenOrder, layout: TokenLayout, rows: torch.Tensor, q_block: int,
                 k_block: int) -> torch.Tensor:
    """bool `[R, S]`: the keys (model order) that a mask row's blocks (bool `[nQ, nK]`, stated in `order`) keep for
    the sampled query rows `rows` (model order)."""
    position = order.inverse(layout, rows.device)  # model index -> position in this order
    return blocks[position[rows] // q_block][:, position // k_block]


def kept_keys(table, orders, layout: TokenLayout, rows: torch.Tensor) -> torch.Tensor:
    """bool `[C, R, S]`: for the first `len(orders)` rows ("heads") of a stacked candidate mask `table`, the keys
    (model order) each keeps for the sampled rows."""
    blocks = table.to_blocks()[0]
    return torch.stack([sampled_keys(blocks[c], order, layout, rows, table.q_block, table.k_block)
                        for c, order in enumerate(orders)])


def fixed_candidates(layout: TokenLayout, frames: int, radius: int) -> list[tuple[Pattern, TokenOrder]]:
    """Sparse VideoGen's two candidates at this layout: spatial (own frame +- `frames`, frame-major) and temporal
    (own position +- `radius` in every frame, spatial-major, where it is a dense band)."""
    return [(Pattern.make("window", radius=-1, frames=frames), FRAME_MAJOR),
            (Pattern.make("temporal", radius=radius, every=1), SPATIAL_MAJOR)]
