"""The hybrid method at full size with random weights: its heads' choices forced to a measured mix.

Random weights make every head diffuse, so the hybrid's own choices say nothing about a trained model's heads. The
full-size benchmarks (`pipelines/bench_methods.py`, `pipelines/bench_loop.py`) therefore run the real measurement
and choice at every choosing call, so that their cost is in the time, and then run a fixed, seeded per-(layer, head)
draw with the mix of choices the yardstick measured (`yardstick/sweep.json`'s `hybrid_mix`). Its static candidate
needs a pattern file for the model: `transplanted_patterns` deals the yardstick's searched patterns out to it.

Example::

    >>> mix = hybrid_mix(None, Path("yardstick/sweep.json"))
    >>> config = config.replace(patterns=transplanted_patterns(transformer, layout, 128, device, folder))
    >>> handle = vidsparse.apply(transformer, config, planner=ForcedMixHybrid(config, mix))
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ...methods.config import SparseConfig
from ...methods.hybrid import LABELS, HybridPlanner

__all__ = ["DEFAULT_HYBRID_MIX", "ForcedMixHybrid", "hybrid_mix", "transplanted_patterns"]

# What the benchmarks force when neither --hybrid-mix nor a yardstick sweep gives a mix.
DEFAULT_HYBRID_MIX = {"static": 0.2, "spatial": 0.2, "temporal": 0.1, "delta": 0.4, "dense": 0.1}


def hybrid_mix(text: str | None, sweep: Path | None) -> dict:
    """The shares of each hybrid label to force, with their `source`: `text` ("static,spatial,temporal,delta,dense"
    shares) when given, else the `hybrid_mix` of the yardstick sweep file `sweep` when it has one, else
    `DEFAULT_HYBRID_MIX`."""
    if text:
        values = [float(x) for x in text.split(",")]
        return {**dict(zip(("static", "spatial", "temporal", "delta", "dense"), values)), "source": "--hybrid-mix"}
    if sweep is not None and sweep.exists():
        mix = json.loads(sweep.read_text()).get("hybrid_mix")
        if mix:
            return {**{k: float(v) for k, v in mix.items()}, "source": f"{sweep.parent.name}/{sweep.name}"}
    return {**DEFAULT_HYBRID_MIX, "source": "default (no yardstick sweep found)"}


class ForcedMixHybrid(HybridPlanner):
    """The hybrid planner, its choices replaced by a fixed seeded per-(layer, head) draw from `mix` (label -> share;
    other keys, such as "source", are ignored). The real measurement and choice still run at every choosing call, so
    their cost is in the time. Give it to `vidsparse.apply(..., planner=...)` with the same config.

    A mix with a "static" share needs the config's `patterns` (`transplanted_patterns`)."""

    def __init__(self, config: SparseConfig, mix: dict, seed: int = 0):
        super().__init__(config)
        shares = [float(mix.get(label, 0.0)) for label in LABELS]
        if shares[LABELS.index("static")] and self.static is None:
            raise ValueError("a forced mix with static heads needs a pattern file: set the config's patterns "
                             "(transplanted_patterns makes one)")
        self.mix, self.seed = torch.tensor(shares), seed
        self._draws: dict = {}

    def choose(self, ctx, probe) -> torch.Tensor:
        real = super().choose(ctx, probe)
        key = (ctx.layer, real.numel(), str(real.device))
        if key not in self._draws:
            gen = torch.Generator().manual_seed(self.seed + ctx.layer)
            self._draws[key] = torch.multinomial(self.mix, real.numel(), replacement=True, generator=gen).to(
                real.device)
        return self._draws[key]


def transplanted_patterns(transformer, layout, q_block: int, device, folder: Path) -> str:
    """A pattern file for `transformer` at `layout`, written into `folder`: the yardstick's searched patterns dealt
    out to its replaced layers and heads (`PatternFile.transplant`; for speed measurements only). Returns its path."""
    from ...core.pattern_file import PatternFile
    from ...pipelines import adapter_for
    from ..configs import resolve_patterns

    adapter = adapter_for(transformer)
    layers = sum(1 for key in transformer.attn_processors if adapter.replaces(key))
    source = PatternFile.load(resolve_patterns("yardstick"))
    path = Path(folder) / "transplanted.safetensors"
    source.transplant(transformer, layers, transformer.config.num_attention_heads, layout, q_block, q_block,
                      device=device).save(path)
    return str(path)
