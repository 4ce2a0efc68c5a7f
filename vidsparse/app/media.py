"""The one video writer: uint8 `[F, H, W, 3]` RGB frames to an H.264 mp4 or a GIF, through imageio-ffmpeg.

    >>> write_video(Path("out.mp4"), frames, fps=8)   # libx264, yuv420p (plays everywhere), CRF 18
    >>> write_video(Path("out.gif"), frames, fps=8)   # looping GIF

yuv420p needs even sizes: an odd height or width is padded by one edge row or column. ffmpeg runs with its log level
at "error", so a successful write prints nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

__all__ = ["write_video"]

logger = logging.getLogger(__name__)


def write_video(path: Path, frames: np.ndarray, fps: float) -> None:
    """Write `frames` (uint8 [F, H, W, 3]) to `path`: a GIF for a `.gif` suffix, else an H.264 mp4."""
    path = Path(path)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [F, H, W, 3]; got {frames.dtype} {frames.shape}")
    if path.suffix.lower() == ".gif":
        import imageio.v3 as iio

        iio.imwrite(path, frames, extension=".gif", duration=round(1000 / fps), loop=0)
        logger.debug("wrote %s (%d frames)", path, len(frames))
        return
    _write_mp4(path, frames, fps)


def _write_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    import imageio_ffmpeg

    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    height, width = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), fps=fps, codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
        quality=None, macro_block_size=1, ffmpeg_log_level="error",
        output_params=["-crf", "18", "-preset", "veryfast", "-movflags", "+faststart"],  # veryfast: 3x medium's speed
    )
    writer.send(None)  # start ffmpeg
    try:
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()
    logger.debug("wrote %s (%d frames, %dx%d)", path, len(frames), width, height)
