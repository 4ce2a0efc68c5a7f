"""Side-by-side videos: the reference | a method | their difference x `DIFF_GAIN`, labelled, as a full-size mp4
and a small GIF (the one report.html inlines)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from ..media import write_video
from .scores import MethodRun, slug
from .style import clip

__all__ = ["DIFF_GAIN", "GIF_MAX_FRAMES", "GIF_WIDTH", "write_side_by_side"]


GIF_WIDTH = 512      # px: the inlined animations stay small enough for report.html
GIF_MAX_FRAMES = 25  # longer videos are subsampled (at the same playback speed)
DIFF_GAIN = 4        # the difference panel shows |dense - method| x 4


_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE = (255, 255, 255)


def write_side_by_side(out_dir: Path, ref: MethodRun, run: MethodRun, case: int, fps: float) -> tuple[str, str]:
    """Write the mp4 (full size, every frame) and the GIF (small) of one case; return their names."""
    stem = f"side_by_side_{slug(run.name)}_{case:02d}"
    a, b = ref.videos[case], run.videos[case]
    write_video(out_dir / f"{stem}.mp4", _side_by_side(a, b, ref.name, run.name, scale=1.0), fps)
    step = math.ceil(a.shape[0] / GIF_MAX_FRAMES)
    scale = GIF_WIDTH / _strip_width(a.shape[2])
    write_video(out_dir / f"{stem}.gif", _side_by_side(a[::step], b[::step], ref.name, run.name, scale), fps / step)
    return f"{stem}.mp4", f"{stem}.gif"


def _strip_width(panel_width: int, gap: int = 4) -> int:
    return 3 * panel_width + 2 * gap


def _side_by_side(ref: np.ndarray, test: np.ndarray, ref_name: str, name: str, scale: float) -> np.ndarray:
    """uint8 [F, H', W', 3]: ref | test | |ref - test| x DIFF_GAIN, each panel resized by `scale`,
    labelled, 4 px apart on mid grey, padded to even sizes (yuv420p needs them)."""
    diff = np.minimum(np.abs(ref.astype(np.int16) - test) * DIFF_GAIN, 255).astype(np.uint8)
    panels = [_resize(v, scale) for v in (ref, test, diff)]
    frames, h, w, _ = panels[0].shape
    gap = 4
    out = np.full((frames, h + h % 2, _strip_width(w, gap) + _strip_width(w, gap) % 2, 3), 96, np.uint8)
    labels = (ref_name, name, f"|difference| x{DIFF_GAIN}")
    for i, (panel, label) in enumerate(zip(panels, labels)):
        x = i * (w + gap)
        out[:, :h, x:x + w] = panel
        _label(out[:, :h, x:x + w], label)
    return out


def _resize(video: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return video
    h, w = max(1, round(video.shape[1] * scale)), max(1, round(video.shape[2] * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST
    return np.stack([cv2.resize(f, (w, h), interpolation=interp) for f in video])


def _label(panels: np.ndarray, text: str) -> None:
    """Small white text on a dark box at the top left of every frame of `panels` [F, h, w, 3] (in place)."""
    h, w = panels.shape[1:3]
    scale = float(np.clip(h / 500, 0.4, 0.8))
    text = clip(text, max(4, int(w / (20 * scale))))
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, 1)
    pad = max(2, th // 3)
    tile = np.zeros((th + base + 2 * pad, min(tw + 2 * pad, w), 3), np.uint8)
    cv2.putText(tile, text, (pad, pad + th), _FONT, scale, _WHITE, 1, cv2.LINE_AA)
    tile = tile[:h]
    # blend the box at 70 % over every frame at once
    region = panels[:, :tile.shape[0], :tile.shape[1]].astype(np.float32)
    panels[:, :tile.shape[0], :tile.shape[1]] = np.maximum(region * 0.3, tile.astype(np.float32)).astype(np.uint8)
