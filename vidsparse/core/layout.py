"""`TokenLayout` and `TokenOrder`: where text and video tokens sit in a vDiT's joint sequence, and the orders
the attention kernels may see them in.

Video tokens are in frame-major order after patchify: token `t*H*W + h*W + w` of the video part
is frame `t`, row `h`, column `w`. Text is a contiguous run before the video (CogVideoX: 226
tokens) or after it (HunyuanVideo: 256 tokens, padded), or absent (Wan self-attention).

A `TokenOrder` is a permutation of the video tokens that leaves the text where it is:

- `FRAME_MAJOR`: the model's own order (`t*H*W + h*W + w`); the identity.
- `SPATIAL_MAJOR`: Sparse VideoGen's "token-major" order, `(h*W + w)*T + t`: one spatial position across all
  frames is contiguous, so attention to the same place in every frame becomes a dense band of blocks.
- `TokenOrder.voxel(t, h, w)`: Chipmunk's voxel order: the grid cut into chunks of t x h x w (the last chunk of
  each axis may be ragged), chunk after chunk, frame-major inside a chunk, so that a query block is a compact
  piece of video.

Example::

    >>> layout = TokenLayout(frames=13, height=30, width=45, text_len=226, text_position="start")
    >>> layout.seq_len, layout.text_range
    (17776, (0, 226))
    >>> perm = SPATIAL_MAJOR.permutation(layout)   # perm[i]: the model-order token at position i
    >>> bool((perm[SPATIAL_MAJOR.inverse(layout)] == torch.arange(layout.seq_len)).all())
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["TokenLayout", "TokenOrder", "FRAME_MAJOR", "SPATIAL_MAJOR"]


@dataclass(frozen=True)
class TokenLayout:
    """The latent grid `(frames, height, width)` after patchify, and the text run beside it."""

    frames: int
    height: int
    width: int
    text_len: int = 0
    text_position: str = "start"

    def __post_init__(self):
        for name in ("frames", "height", "width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.text_len < 0:
            raise ValueError(f"text_len must be >= 0; got {self.text_len}")
        if self.text_position not in ("start", "end"):
            raise ValueError(f"text_position must be 'start' or 'end'; got {self.text_position!r}")

    @property
    def frame_size(self) -> int:
        return self.height * self.width

    @property
    def video_len(self) -> int:
        return self.frames * self.frame_size

    @property
    def seq_len(self) -> int:
        return self.video_len + self.text_len

    @property
    def video_start(self) -> int:
        return self.text_len if self.text_position == "start" else 0

    @property
    def text_range(self) -> tuple[int, int] | None:
        """`(start, stop)` of the text tokens, or None without text."""
        if self.text_len == 0:
            return None
        if self.text_position == "start":
            return (0, self.text_len)
        return (self.video_len, self.seq_len)

    def video_coords(self, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(frame, row, col) of every video token in sequence order, each int64 `[video_len]`."""
        idx = torch.arange(self.video_len, device=device)
        return idx // self.frame_size, (idx // self.width) % self.height, idx % self.width


@dataclass(frozen=True)
class TokenOrder:
    """A permutation of a layout's video tokens; text tokens keep their positions.

    Build one with `FRAME_MAJOR`, `SPATIAL_MAJOR` or `TokenOrder.voxel(t, h, w)`. `permutation(layout)[i]` is the
    model-order index of the token at position i of this order; `inverse(layout)` undoes it.
    """

    kind: str = "frame"
    voxel_size: tuple[int, int, int] | None = None

    def __post_init__(self):
        if self.kind not in ("frame", "spatial", "voxel"):
            raise ValueError(f"TokenOrder kind must be 'frame', 'spatial' or 'voxel'; got {self.kind!r}")
        if (self.kind == "voxel") != (self.voxel_size is not None):
            raise ValueError("a voxel order needs voxel_size=(t, h, w), and only a voxel order takes one")
        if self.voxel_size is not None and (len(self.voxel_size) != 3 or min(self.voxel_size) < 1):
            raise ValueError(f"voxel_size must be three ints >= 1; got {self.voxel_size!r}")

    @classmethod
    def voxel(cls, t: int, h: int, w: int) -> "TokenOrder":
        return cls("voxel", (int(t), int(h), int(w)))

    @property
    def is_identity(self) -> bool:
        return self.kind == "frame"

    def __str__(self) -> str:
        return "voxel" + "x".join(map(str, self.voxel_size)) if self.kind == "voxel" else self.kind

    def video_order(self, layout: TokenLayout, device=None) -> torch.Tensor:
        """int64 `[video_len]`: the frame-major video index of the token at each position of this order."""
        frame, row, col = layout.video_coords(device)
        if self.kind == "frame":
            return torch.arange(layout.video_len, device=device)
        if self.kind == "spatial":
            key = (row * layout.width + col) * layout.frames + frame
        else:
            vt, vh, vw = self.voxel_size
            chunks_h, chunks_w = -(-layout.height // vh), -(-layout.width // vw)
            chunk = ((frame // vt) * chunks_h + row // vh) * chunks_w + col // vw
            # frame-major inside a chunk; a ragged chunk just has fewer tokens
            local = ((frame % vt) * vh + row % vh) * vw + col % vw
            key = chunk * (vt * vh * vw) + local
        return torch.argsort(key)

    def permutation(self, layout: TokenLayout, device=None) -> torch.Tensor:
        """int64 `[seq_len]`: `x_ordered = x[..., perm, :]` puts a model-order sequence into this order."""
        perm = torch.arange(layout.seq_len, device=device)
        start = layout.video_start
        perm[start : start + layout.video_len] = self.video_order(layout, device) + start
        return perm

    def inverse(self, layout: TokenLayout, device=None) -> torch.Tensor:
        """int64 `[seq_len]`: `x = x_ordered[..., inv, :]` puts it back."""
        return torch.argsort(self.permutation(layout, device))


FRAME_MAJOR = TokenOrder("frame")
SPATIAL_MAJOR = TokenOrder("spatial")
