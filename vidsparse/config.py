"""`SparseConfig`: how vidsparse replaces attention, as a validated dataclass with named presets.

Example::

    >>> cfg = SparseConfig.preset("spatial")
    >>> cfg.method, cfg.frames
    ('spatial', 1)
    >>> SparseConfig(method="spatial", frames=2, warmup_steps=5)
    SparseConfig(method='spatial', frames=2, radius=0, warmup_steps=5, warmup_layers=0, q_block=128, k_block=128, patterns=None, eps=None, lam=None)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["SparseConfig", "PRESETS", "METHODS"]

METHODS = ("dense", "spatial", "temporal", "static")


@dataclass(frozen=True)
class SparseConfig:
    """What each replaced attention layer computes.

    Attributes:
        method: "dense" (the stock computation), "spatial" (each video query sees its own frame and
            `frames` frames either side), "temporal" (each video query sees its own spatial position,
            +-`radius` rows and columns, in every frame) or "static" (each head its own pattern, from a
            pattern file that `vidsparse search` wrote). Text keys and text queries always stay dense.
        frames: spatial window half-width, in latent frames after patchify.
        radius: temporal window half-width, in latent rows and columns after patchify.
        warmup_steps: the first N denoising steps of every generation run dense.
        warmup_layers: the first L replaced layers run dense at every step.
        q_block, k_block: mask block sizes in tokens (powers of two >= 16). "static" takes them from its
            pattern file (the blocks it was searched at).
        patterns: "static" only: the pattern file's path.
        eps, lam: "static" only: choose the heads' patterns again from the file's measured errors under this
            error budget and cost weight (None: the file's own choice).
    """

    method: str = "dense"
    frames: int = 1
    radius: int = 0
    warmup_steps: int = 0
    warmup_layers: int = 0
    q_block: int = 128
    k_block: int = 128
    patterns: str | None = None
    eps: float | None = None
    lam: float | None = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {self.method!r}")
        for name in ("frames", "radius", "warmup_steps", "warmup_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0; got {value!r}")
        for name in ("q_block", "k_block"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 16 or value & (value - 1):
                raise ValueError(f"{name} must be a power of two >= 16; got {value!r}")
        if self.method == "static" and not self.patterns:
            raise ValueError(
                "method 'static' needs a pattern file: SparseConfig(method='static', patterns='path.safetensors'); "
                "make one with `vidsparse search`"
            )
        for name in ("eps", "lam"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or value < 0):
                raise ValueError(f"{name} must be a number >= 0 or None; got {value!r}")

    @classmethod
    def preset(cls, name: str) -> "SparseConfig":
        """A named preset: one of `PRESETS`."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return PRESETS[name]

    def replace(self, **changes) -> "SparseConfig":
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, SparseConfig] = {
    "dense": SparseConfig(),
    # Sparse VideoGen's defaults: dense for the first quarter of 50 steps, then fixed windows.
    "spatial": SparseConfig(method="spatial", frames=1, warmup_steps=12),
    "temporal": SparseConfig(method="temporal", radius=0, warmup_steps=12),
}
