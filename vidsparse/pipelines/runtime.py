"""Per-transformer state shared by its step hook and its processors, and the sparse dispatch.

`SparseRuntime` holds what one installation needs at call time: the config and planner, the
latent grid and step of the current forward (written by the step hook), and what happened (the
realised density per layer, and every reason sparse attention fell back). `attend` runs the
masked attention: the Triton kernel where it can run, otherwise the PyTorch reference with the
same mask, logging each fallback reason once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from ..config import SparseConfig
from ..kernels import SUPPORTED_HEAD_DIMS, block_sparse_attention, block_sparse_attention_reference
from ..kernels.block_sparse import _interpreting
from ..layout import TokenLayout
from ..mask import SparseMask
from ..planner import PlanContext, Planner

logger = logging.getLogger(__name__)

__all__ = ["SparseRuntime", "LayerStats"]

_DENSE_FALLBACK_ELEMENTS = 1 << 26  # booleans of a token mask the CPU fallback may build (64 MB)


@dataclass
class LayerStats:
    """Calls of one replaced layer: how many, how many sparse, and the summed realised density, in
    all and per head, with how often each head ran each pattern ("dense" for dense calls)."""

    calls: int = 0
    sparse_calls: int = 0
    density_sum: float = 0.0
    head_density_sum: list[float] = field(default_factory=list)
    head_patterns: list[dict[str, int]] = field(default_factory=list)

    @property
    def density(self) -> float:
        return self.density_sum / self.calls if self.calls else 1.0

    def add(self, per_head: list[float], patterns: list[str], sparse: bool) -> None:
        if not self.head_density_sum:
            self.head_density_sum = [0.0] * len(per_head)
            self.head_patterns = [{} for _ in per_head]
        self.calls += 1
        self.sparse_calls += int(sparse)
        self.density_sum += sum(per_head) / len(per_head)
        for h, (d, name) in enumerate(zip(per_head, patterns)):
            self.head_density_sum[h] += d
            self.head_patterns[h][name] = self.head_patterns[h].get(name, 0) + 1

    def heads(self) -> tuple[list[float], list[str]]:
        """Mean density per head, and each head's most used pattern (its sparse one if it ever ran one)."""
        density = [d / self.calls for d in self.head_density_sum]
        patterns = [max(p, key=lambda n: (n != "dense", p[n])) for p in self.head_patterns]
        return density, patterns


@dataclass
class SparseRuntime:
    config: SparseConfig
    planner: Planner
    model_name: str
    text_position: str | None
    grid: tuple[int, int, int] | None = None  # (frames, height, width) after patchify, set per forward
    step: int = 0
    branch: str | None = None
    layers: dict[int, LayerStats] = field(default_factory=dict)
    fallbacks: dict[str, int] = field(default_factory=dict)  # reason -> calls
    # Called as observer(layer, step, layout, q, k, v, key_padding) on every attention call whose layout is known,
    # before attention runs (q, k, v: [B, H, S, D]); the pattern search's calibration sets it.
    observer: object | None = None
    _token_masks: dict = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ planning
    def layout(self, seq_len: int, text_len: int) -> TokenLayout | None:
        """The token layout of a sequence of `seq_len` tokens with `text_len` text tokens, or None
        when the latent grid of this forward does not account for the video tokens."""
        if self.grid is None:
            return None
        frames, height, width = self.grid
        if frames * height * width != seq_len - text_len:
            return None
        return TokenLayout(frames, height, width, text_len, self.text_position or "start")

    def plan_dense(self, layer: int, heads: int) -> None:
        """Count a call that runs dense without asking the planner."""
        self.layers.setdefault(layer, LayerStats()).add([1.0] * heads, ["dense"] * heads, sparse=False)

    def plan(self, layer: int, seq_len: int, text_len: int, heads: int, device) -> tuple[SparseMask | None, TokenLayout | None]:
        if self.config.method == "dense":
            self.plan_dense(layer, heads)
            return None, None
        layout = self.layout(seq_len, text_len)
        if layout is None:
            self.fall_back(
                f"the latent grid {self.grid} does not match {seq_len - text_len} video tokens: dense attention"
            )
            self.plan_dense(layer, heads)
            return None, None
        mask = self.planner.plan(PlanContext(layer, self.step, self.branch, layout, heads, device))
        if mask is None:
            self.plan_dense(layer, heads)
        else:
            per_head, patterns = self.planner.describe(mask)
            self.layers.setdefault(layer, LayerStats()).add(per_head, patterns, sparse=True)
        return mask, layout

    def observe(self, layer: int, q, k, v, text_len: int, key_padding=None) -> None:
        """Hand this call's q, k, v to the observer, if one is set (q, k, v: `[B, H, S, D]`)."""
        if self.observer is None:
            return
        layout = self.layout(q.shape[2], text_len)
        if layout is not None:
            self.observer(layer, self.step, layout, q, k, v, key_padding)

    # ------------------------------------------------------------------ running
    def fall_back(self, reason: str) -> None:
        """Record a fallback; log each distinct reason once."""
        if reason not in self.fallbacks:
            logger.warning("vidsparse (%s): %s", self.model_name, reason)
            self.fallbacks[reason] = 0
        self.fallbacks[reason] += 1

    @torch.compiler.disable
    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: SparseMask,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Masked attention over `[B, H, S, D]`: the Triton kernel, or the reference where it cannot run.

        Under `torch.compile(transformer)` this call is a graph break (one per sparse attention
        layer): dynamo runs it eagerly and compiles everything around it.
        """
        reason = self._kernel_unavailable(q)
        if reason is None:
            return block_sparse_attention(q, k, v, mask, key_padding_mask=key_padding_mask)
        self.fall_back(reason)
        b, h, s, _ = q.shape
        if mask.batch * h * s * s <= _DENSE_FALLBACK_ELEMENTS and q.dtype in (torch.float32, torch.bfloat16, torch.float16):
            return self._sdpa_with_token_mask(q, k, v, mask, key_padding_mask)
        return block_sparse_attention_reference(q, k, v, mask, key_padding_mask=key_padding_mask)

    def _sdpa_with_token_mask(self, q, k, v, mask: SparseMask, key_padding_mask) -> torch.Tensor:
        """Small sequences off the GPU: the mask as a boolean token mask through torch's SDPA (its fused CPU
        kernel), several times faster than the chunked reference. The token mask is kept per mask object."""
        entry = self._token_masks.get(id(mask))
        if entry is None or entry[0] is not mask:
            if len(self._token_masks) >= 8:
                self._token_masks.clear()
            entry = (mask, mask.to_dense())
            self._token_masks[id(mask)] = entry
        allowed = entry[1]  # [B', H, S, S]
        if key_padding_mask is not None:
            allowed = allowed & ~key_padding_mask[:, None, None, :]
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return out.nan_to_num(0.0)  # a row that selects no key: zeros, as the kernel and the reference give

    @staticmethod
    def _kernel_unavailable(q: torch.Tensor) -> str | None:
        if q.device.type != "cuda" and not _interpreting():
            return f"no Triton kernel on {q.device.type}: PyTorch runs the same masks instead (slower than the kernel)"
        if q.shape[-1] not in SUPPORTED_HEAD_DIMS:
            return f"head dim {q.shape[-1]} has no Triton kernel (supported {SUPPORTED_HEAD_DIMS}): PyTorch reference"
        if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
            return f"dtype {q.dtype} has no Triton kernel: PyTorch reference"
        return None

    # ------------------------------------------------------------------ lifecycle and reporting
    def new_generation(self) -> None:
        self.step, self.branch, self.grid = 0, None, None
        self.planner.reset()

    def report(self) -> dict:
        calls = sum(s.calls for s in self.layers.values())
        density = sum(s.density_sum for s in self.layers.values()) / calls if calls else 1.0
        return {
            "model": self.model_name,
            "config": self.config,
            "layers": len(self.layers),
            "calls": calls,
            "sparse_calls": sum(s.sparse_calls for s in self.layers.values()),
            "density": density,
            "density_per_layer": {layer: s.density for layer, s in sorted(self.layers.items())},
            "heads": {
                "density": [self.layers[layer].heads()[0] for layer in sorted(self.layers)],
                "pattern": [self.layers[layer].heads()[1] for layer in sorted(self.layers)],
            },
            "fallbacks": sorted(self.fallbacks),
        }
