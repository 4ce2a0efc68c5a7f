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
- `TokenOrder.hilbert()`: a 3-D Hilbert curve over (t, h, w), as in Jenga and DFSAttn. Consecutive tokens are
  grid neighbours, so a run of n tokens is a compact piece of video at every block size n, not only at one
  voxel size. Ragged grids (33 x 45 x 80) take the curve of the smallest power-of-two cube that holds them, with
  the points outside the grid left out: the order is the grid points sorted by their Hilbert index. The curve
  leaves and re-enters the grid at its faces, so a block there may hold two compact pieces instead of one.

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

__all__ = ["TokenLayout", "TokenOrder", "FRAME_MAJOR", "HILBERT", "SPATIAL_MAJOR", "hilbert_index"]


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

    Build one with `FRAME_MAJOR`, `SPATIAL_MAJOR`, `TokenOrder.voxel(t, h, w)` or `TokenOrder.hilbert()`. `permutation(layout)[i]` is the
    model-order index of the token at position i of this order; `inverse(layout)` undoes it.
    """

    kind: str = "frame"
    voxel_size: tuple[int, int, int] | None = None

    def __post_init__(self):
        if self.kind not in ("frame", "spatial", "voxel", "hilbert"):
            raise ValueError(f"TokenOrder kind must be 'frame', 'spatial', 'voxel' or 'hilbert'; got {self.kind!r}")
        if (self.kind == "voxel") != (self.voxel_size is not None):
            raise ValueError("a voxel order needs voxel_size=(t, h, w), and only a voxel order takes one")
        if self.voxel_size is not None and (len(self.voxel_size) != 3 or min(self.voxel_size) < 1):
            raise ValueError(f"voxel_size must be three ints >= 1; got {self.voxel_size!r}")

    @classmethod
    def voxel(cls, t: int, h: int, w: int) -> "TokenOrder":
        return cls("voxel", (int(t), int(h), int(w)))

    @classmethod
    def hilbert(cls) -> "TokenOrder":
        """The 3-D Hilbert curve over (t, h, w); see the module docstring."""
        return cls("hilbert")

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
        elif self.kind == "hilbert":
            bits = max(1, (max(layout.frames, layout.height, layout.width) - 1).bit_length())
            key = hilbert_index(torch.stack([frame, row, col]), bits)
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


def hilbert_index(coords: torch.Tensor, bits: int) -> torch.Tensor:
    """int64 `[N]`: the position along the n-D Hilbert curve of side 2**bits of each point of `coords`
    (int64 `[n, N]`, each in `[0, 2**bits)`).

    Skilling's algorithm ("Programming the Hilbert curve", AIP Conf. Proc. 707, 2004), vectorised over the points:
    undo the excess work of the curve's rotations from the top bit down, Gray-encode, then interleave the bits of
    the n transposed coordinates into one index (the first coordinate the most significant). Consecutive indices
    are neighbours on the grid (one step along one axis), which `tests/test_dynamic.py` checks.
    """
    n = coords.shape[0]
    if n * bits > 62:
        raise ValueError(f"a {n}-D Hilbert index of {bits} bits a coordinate does not fit in int64")
    x = [c.clone() for c in coords.long()]
    q = 1 << (bits - 1)
    while q > 1:  # inverse undo
        p = q - 1
        for i in range(n):
            high = (x[i] & q) != 0
            swap = (x[0] ^ x[i]) & p
            # a set bit inverts the low bits of x[0]; a clear one exchanges them with x[i]'s
            new0 = torch.where(high, x[0] ^ p, x[0] ^ swap)
            if i:
                x[i] = torch.where(high, x[i], x[i] ^ swap)
            x[0] = new0
        q >>= 1
    for i in range(1, n):  # Gray encode
        x[i] = x[i] ^ x[i - 1]
    t = torch.zeros_like(x[0])
    q = 1 << (bits - 1)
    while q > 1:
        t = torch.where((x[n - 1] & q) != 0, t ^ (q - 1), t)
        q >>= 1
    x = [xi ^ t for xi in x]
    index = torch.zeros_like(x[0])
    for bit in range(bits - 1, -1, -1):
        for i in range(n):
            index = (index << 1) | ((x[i] >> bit) & 1)
    return index


FRAME_MAJOR = TokenOrder("frame")
SPATIAL_MAJOR = TokenOrder("spatial")
HILBERT = TokenOrder("hilbert")
