"""Does a generated clip show what its prompt says? Colour tracking for the yardstick's held-out prompts.

For each shape clause of a prompt ("a red square moving right"), the pixels close to the clause's colour are found in
every frame; their centroid gives the shape's path and their count its size. A clip passes a clause when:
- the colour is there: at least `min_pixels` pixels of it in most frames;
- for "moving left/right/up/down": the centroid travels at least `min_travel` (a fraction of the frame) in that
  direction between the first and last thirds of the clip, and further along it than across it;
- for "growing" / "shrinking": the pixel count rises / falls by at least 30% between the first and last thirds.
Other motions are only checked for presence. The shape is measured (fill of the bounding box: a square fills ~1.0, a
circle ~0.79, a triangle ~0.5, a ring less) and reported, not judged.

Example:
    >>> clip = pipe(prompt, output_type="np", ...).frames[0]  # [F, H, W, 3] in [0, 1]
    >>> [c["passed"] for c in check_prompt(clip, prompt)]
"""

from __future__ import annotations

import warnings

import numpy as np

from .scenes import COLOURS, DIRECTIONS, parse_prompt

__all__ = ["check_prompt", "track_colour"]


def track_colour(video: np.ndarray, colour: str, tolerance: float = 60.0) -> dict:
    """Per frame: the centroid (x, y in [0, 1]), pixel count and bounding-box fill of the pixels near `colour`.

    `video`: [F, H, W, 3], floats in [0, 1] or uint8. A pixel is near when its RGB distance to the colour is below
    `tolerance` (0-255 units) and it is closer to this colour than to any other shape colour.
    """
    frames = video.astype(np.float32) * (255.0 if video.dtype != np.uint8 else 1.0)
    names = list(COLOURS)
    palette = np.array([COLOURS[n] for n in names], np.float32)
    dist = np.linalg.norm(frames[..., None, :] - palette, axis=-1)  # [F, H, W, colours]
    i = names.index(colour)
    mask = (dist[..., i] < tolerance) & (dist.argmin(-1) == i)
    f, h, w = mask.shape
    ys, xs = np.mgrid[0:h, 0:w]
    count = mask.sum((1, 2))
    cx = np.where(count > 0, (mask * xs).sum((1, 2)) / np.maximum(count, 1), np.nan) / (w - 1)
    cy = np.where(count > 0, (mask * ys).sum((1, 2)) / np.maximum(count, 1), np.nan) / (h - 1)
    fill = np.full(f, np.nan)
    for t in range(f):
        if count[t]:
            rows, cols = np.nonzero(mask[t])
            fill[t] = count[t] / ((np.ptp(rows) + 1) * (np.ptp(cols) + 1))
    return {"x": cx, "y": cy, "pixels": count, "fill": fill}


def check_prompt(video: np.ndarray, prompt: str, min_pixels: int = 12, min_travel: float = 0.12) -> list[dict]:
    """One result per shape clause: colour, shape, motion, measured travel and size change, fill, and `passed`."""
    results = []
    n = video.shape[0]
    third = max(1, n // 3)
    for colour, shape, motion in parse_prompt(prompt):
        track = track_colour(video, colour)
        present = bool((track["pixels"] >= min_pixels).mean() >= 0.6)
        first, last = slice(0, third), slice(n - third, n)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the mean of a colour that is never there
            dx = float(np.nanmean(track["x"][last]) - np.nanmean(track["x"][first]))
            dy = float(np.nanmean(track["y"][last]) - np.nanmean(track["y"][first]))
            growth = float(track["pixels"][last].mean() / max(track["pixels"][first].mean(), 1.0))
            fill = float(np.nanmean(track["fill"]))
        passed = present
        if present and motion.startswith("moving"):
            ux, uy = DIRECTIONS[motion.split()[1]]
            along, across = dx * ux + dy * uy, abs(dx * uy - dy * ux)
            passed = bool(along >= min_travel and along > across)
        elif present and motion == "growing":
            passed = growth >= 1.3
        elif present and motion == "shrinking":
            passed = growth <= 1 / 1.3
        results.append({"colour": colour, "shape": shape, "motion": motion, "present": present, "dx": round(dx, 3),
                        "dy": round(dy, 3), "growth": round(growth, 2), "fill": round(fill, 2), "passed": passed})
    return results
