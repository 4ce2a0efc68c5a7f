"""`TokenLayout`: where text and video tokens sit in a vDiT's joint sequence.

Video tokens are in frame-major order after patchify: token `t*H*W + h*W + w` of the video part
is frame `t`, row `h`, column `w`. Text is a contiguous run before the video (CogVideoX: 226
tokens) or after it (HunyuanVideo: 256 tokens, padded), or absent (Wan self-attention).

Example::

    >>> layout = TokenLayout(frames=13, height=30, width=45, text_len=226, text_position="start")
    >>> layout.seq_len, layout.text_range
    (17776, (0, 226))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["TokenLayout"]


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
