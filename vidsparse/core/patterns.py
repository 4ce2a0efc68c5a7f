"""The grid-unit pattern language: attention patterns in frames, rows and columns, compiled to a `SparseMask` for any grid
and any token order. The offline search, the run-time planners and the fixed methods all compile through this module.

A `Pattern` says which keys a video query keeps, in frames, rows and columns of the latent grid after patchify, so one
pattern serves every resolution and frame count. Kinds (the text is always kept on top, as every `SparseMask` does):

| kind | parameters | a video query at (t, h, w) keeps |
|---|---|---|
| `full` | | every key |
| `skip` | | only the text keys (the head's video-to-video attention is skipped) |
| `window` | `radius` (rows and columns; -1: the whole frame), `frames` | keys within +-radius rows and columns and +-frames frames |
| `temporal` | `radius`, `every` | keys at its own row and column +-radius, in every `every`-th frame from its own |
| `sink` | `frames` | every key of the first `frames` frames (a vertical stripe) |
| `columns` | `count` | the `count` key blocks that held most of this head's mass in calibration (vertical stripes measured per head; stored as grid positions, so they move with the resolution) |
| `union` | `parts` | keys any part keeps |

Compiling goes through token membership without the S x S matrix: each query block gets a boolean map over the video
grid (T x H x W) of the positions of its tokens, the map is dilated by the pattern (max-pooling), and a key block is
visited when any of its tokens lies in the dilated map (a max over each key block's tokens). Cost: nQ x T x H x W.
Blocks are cut in a `TokenOrder` (default: the model's frame-major order): in `SPATIAL_MAJOR` order a temporal
pattern is a dense band of blocks instead of a set of diagonals.

Example:
    >>> layout = TokenLayout(frames=13, height=30, width=45, text_len=226)
    >>> round(frame_band(layout, num_heads=48, frames=1).density(), 3)
    0.253
    >>> pattern = Pattern.parse("temporal:every=1,radius=0")
    >>> pattern.density(layout) > pattern.density(layout, order=SPATIAL_MAJOR)  # a band wastes fewer blocks
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .layout import FRAME_MAJOR, TokenLayout, TokenOrder
from .mask import SparseMask

__all__ = ["KINDS", "Pattern", "compile_heads", "frame_band", "temporal"]

KINDS = ("full", "skip", "window", "temporal", "sink", "columns", "union")
_PARAMS = {"full": (), "skip": (), "window": ("radius", "frames"), "temporal": ("radius", "every"), "sink": ("frames",),
           "columns": ("count",)}


@dataclass(frozen=True)
class Pattern:
    """One candidate pattern: a kind, its integer parameters (grid units) and, for a union, its parts."""

    kind: str
    params: tuple[tuple[str, int], ...] = ()
    parts: tuple["Pattern", ...] = ()
    # "columns" only: where its key blocks are, measured for one head in calibration, as (frame, position in frame),
    # each in [0, 1] of the grid; empty in the candidate list (each head gets its own from the pattern file).
    points: tuple[tuple[float, float], ...] = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown pattern kind {self.kind!r}; one of {KINDS}")
        if self.kind == "union":
            if len(self.parts) < 2 or any(p.kind in ("union", "full") for p in self.parts):
                raise ValueError("a union needs two or more parts, none of them a union or full")
            return
        names = {name for name, _ in self.params}
        if names != set(_PARAMS[self.kind]):
            raise ValueError(f"pattern {self.kind!r} takes parameters {_PARAMS[self.kind]}, got {sorted(names)}")
        p = dict(self.params)
        if p.get("radius", 0) < -1 or p.get("frames", 0) < 0 or p.get("every", 1) < 1 or p.get("count", 1) < 1:
            raise ValueError(f"bad parameters for {self.kind!r}: {p} (radius >= -1, frames >= 0, every, count >= 1)")

    @classmethod
    def make(cls, kind: str, **params: int) -> "Pattern":
        return cls(kind, tuple(sorted(params.items())))

    @classmethod
    def parse(cls, text: str) -> "Pattern":
        """The inverse of `str(pattern)`: "full", "window:frames=0,radius=4", "sink:frames=1+window:frames=1,radius=-1"."""
        parts = text.split("+")
        if len(parts) > 1:
            return cls("union", parts=tuple(cls.parse(p) for p in parts))
        kind, _, args = text.partition(":")
        params = {}
        for item in filter(None, args.split(",")):
            name, _, value = item.partition("=")
            params[name.strip()] = int(value)
        return cls.make(kind.strip(), **params)

    def __str__(self) -> str:
        if self.kind == "union":
            return "+".join(str(p) for p in self.parts)
        if not self.params:
            return self.kind
        return self.kind + ":" + ",".join(f"{k}={v}" for k, v in self.params)

    @property
    def family(self) -> str:
        """For reports: full, skip, spatial (window), temporal, stripe (sink) or the union of families."""
        names = {"window": "spatial", "sink": "stripe", "columns": "stripe"}
        if self.kind == "union":
            return "+".join(sorted({names.get(p.kind, p.kind) for p in self.parts}))
        return names.get(self.kind, self.kind)

    @property
    def columns(self) -> int:
        """How many measured key blocks this pattern keeps (its "columns" part), 0 if none."""
        if self.kind == "union":
            return sum(p.columns for p in self.parts)
        return dict(self.params).get("count", 0) if self.kind == "columns" else 0

    def with_points(self, points) -> "Pattern":
        """This pattern with one head's measured column positions (for a union: given to its columns part)."""
        points = tuple((float(t), float(p)) for t, p in points)
        if self.kind == "union":
            return Pattern("union", parts=tuple(p.with_points(points) if p.kind == "columns" else p for p in self.parts))
        return Pattern(self.kind, self.params, points=points) if self.kind == "columns" else self

    # ------------------------------------------------------------------ compiling
    def blocks(
        self, layout: TokenLayout, q_block: int, k_block: int, device=None, order: TokenOrder = FRAME_MAJOR
    ) -> torch.Tensor:
        """bool `[nQ, nK]`: the key blocks each query block visits, text included, with blocks cut in `order`."""
        n_q, n_k = -(-layout.seq_len // q_block), -(-layout.seq_len // k_block)
        if self.kind == "full":
            blocks = torch.ones(n_q, n_k, dtype=torch.bool, device=device)
        else:
            video = order.video_order(layout, device)
            keep = self._keep(_query_maps(layout, q_block, device, video))  # [nQ, T, H, W]
            blocks = _key_blocks(keep, layout, k_block, video)
        if layout.text_range is not None:  # the same rule as SparseMask: text rows and columns stay whole
            start, stop = layout.text_range
            blocks[start // q_block : -(-stop // q_block)] = True
            blocks[:, start // k_block : -(-stop // k_block)] = True
        return blocks

    def _keep(self, q: torch.Tensor) -> torch.Tensor:
        """Dilate query position maps `[nQ, T, H, W]` (float 0/1) into the key positions they keep."""
        p = dict(self.params)
        if self.kind == "skip":
            return torch.zeros_like(q)
        if self.kind == "union":
            return torch.stack([part._keep(q) for part in self.parts]).amax(0)
        if self.kind == "columns":  # every query keeps the measured key positions (its head's points)
            keep = torch.zeros_like(q)
            t_max, pos_max = q.shape[1] - 1, q.shape[2] * q.shape[3] - 1
            anyq = q.flatten(1).amax(1)
            for t, pos in self.points:
                row, col = divmod(round(pos * pos_max), q.shape[3])
                keep[:, round(t * t_max), row, col] = anyq
            return keep
        if self.kind == "sink":
            keep = torch.zeros_like(q)
            keep[:, : p["frames"]] = q.flatten(1).amax(1).view(-1, 1, 1, 1)
            return keep
        if self.kind == "window":
            r, f = p["radius"], p["frames"]
            if r < 0:  # whole frames: any token of the frame
                q = q.amax((2, 3), keepdim=True).expand_as(q)
                r = 0
            return F.max_pool3d(q.unsqueeze(1), (2 * f + 1, 2 * r + 1, 2 * r + 1), 1, (f, r, r)).squeeze(1)
        if self.kind == "temporal":
            r, every = p["radius"], p["every"]
            t = q.shape[1]
            if r:
                q = F.max_pool3d(q.unsqueeze(1), (1, 2 * r + 1, 2 * r + 1), 1, (0, r, r)).squeeze(1)
            # Frames t' with (t' - t) % every == 0 for some query frame t: pool the query frames by residue.
            frames = torch.arange(t, device=q.device)
            by_residue = torch.stack([q[:, frames % every == c].amax(1) if (frames % every == c).any()
                                      else torch.zeros_like(q[:, 0]) for c in range(every)], 1)  # [nQ, every, H, W]
            return by_residue[:, frames % every]
        raise AssertionError(self.kind)

    def mask(
        self, layout: TokenLayout, num_heads: int, q_block: int = 128, k_block: int = 128, device=None,
        order: TokenOrder = FRAME_MAJOR,
    ) -> SparseMask:
        """The `SparseMask` of `num_heads` heads that all follow this pattern (one block row, shared: no copy)."""
        blocks = self.blocks(layout, q_block, k_block, device, order).unsqueeze(0)
        return SparseMask.from_block_mask(blocks, q_block, k_block, layout.seq_len, text=layout.text_range).expand_heads(
            num_heads)

    def density(
        self, layout: TokenLayout, q_block: int = 128, k_block: int = 128, device=None, order: TokenOrder = FRAME_MAJOR
    ) -> float:
        """Fraction of (query, key) token pairs visited at this layout (ragged blocks counted exactly)."""
        return float(self.mask(layout, 1, q_block, k_block, device, order).density_per_head()[0, 0])


def _query_maps(layout: TokenLayout, q_block: int, device, video: torch.Tensor) -> torch.Tensor:
    """float `[nQ, T, H, W]`: 1 where a video token of the query block sits (`video`: the order's video indices)."""
    n_q = -(-layout.seq_len // q_block)
    position = torch.arange(layout.video_len, device=device)
    maps = torch.zeros(n_q, layout.video_len, device=device)
    maps[(position + layout.video_start) // q_block, video] = 1.0
    return maps.view(n_q, layout.frames, layout.height, layout.width)


def _key_blocks(keep: torch.Tensor, layout: TokenLayout, k_block: int, video: torch.Tensor) -> torch.Tensor:
    """bool `[nQ, nK]` from kept key positions `[nQ, T, H, W]`: a key block counts if any of its tokens is kept."""
    n_q, n_k = keep.shape[0], -(-layout.seq_len // k_block)
    tokens = torch.zeros(n_q, n_k * k_block, device=keep.device)
    tokens[:, layout.video_start : layout.video_start + layout.video_len] = keep.flatten(1)[:, video]
    return tokens.view(n_q, n_k, k_block).amax(-1) > 0


def compile_heads(
    patterns: list[Pattern], layout: TokenLayout, q_block: int, k_block: int, device=None,
    order: TokenOrder = FRAME_MAJOR,
) -> SparseMask:
    """One `SparseMask` whose head h follows `patterns[h]`; each distinct pattern is compiled once."""
    cache: dict[Pattern, torch.Tensor] = {}
    for p in patterns:
        if p not in cache:
            cache[p] = p.blocks(layout, q_block, k_block, device, order)
    blocks = torch.stack([cache[p] for p in patterns])
    return SparseMask.from_block_mask(blocks, q_block, k_block, layout.seq_len, text=layout.text_range)


def frame_band(
    layout: TokenLayout, num_heads: int, frames: int = 1, q_block: int = 128, k_block: int = 128, *, device=None
) -> SparseMask:
    """Spatial heads: every query sees all keys of its own frame and of the `frames` frames either side."""
    return Pattern.make("window", radius=-1, frames=frames).mask(layout, num_heads, q_block, k_block, device)


def temporal(
    layout: TokenLayout, num_heads: int, radius: int = 0, q_block: int = 128, k_block: int = 128, *, device=None,
    order: TokenOrder = FRAME_MAJOR,
) -> SparseMask:
    """Temporal heads: every query sees the keys at its own spatial position (+-`radius` rows and columns) in every
    frame. In frame-major order that is a set of diagonals, one per frame; in `SPATIAL_MAJOR` order a band."""
    return Pattern.make("temporal", radius=radius, every=1).mask(layout, num_heads, q_block, k_block, device, order)
