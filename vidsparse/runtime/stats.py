"""What ran: per replaced layer, its calls, and per head the realised density and the labels it ran.

Sparse calls add device tensors (no host sync); reading them (`density`, `heads()`) is the sync, done by reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..core.plan import AttentionPlan

__all__ = ["LayerStats"]


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
