"""What every figure, video and table of a report shares: one colour per method, one letter and colour per
attention pattern (`PATTERNS`, so that a letter means the same in every figure), and text clipped to fit."""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["METHOD_COLOURS", "PATTERNS", "clip", "pattern_style"]


# tab10: one colour per method, by its position in `runs` (the same in every figure of a report)
METHOD_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                   "#bcbd22", "#17becf"]


# One legend for every figure and every report: a head's pattern family -> (letter, colour, meaning).
# A union of families ("spatial+temporal") is drawn with its letters joined ("S+T") in the mean of their colours.
PATTERNS = {
    "dense": ("D", "#c7c7c7", "dense: the stock attention call ran (a warm-up step or layer, or the dense method)"),
    "full": ("F", "#7f7f7f", "full: the head's searched pattern keeps every key; vidsparse's kernel runs it"),
    "spatial": ("S", "#1f77b4", "spatial: keys of the query's own frame (and its neighbours)"),
    "temporal": ("T", "#ff7f0e", "temporal: keys at the query's own position in other frames"),
    "stripe": ("V", "#2ca02c", "stripe: a few key columns (sink frames or measured top blocks) for every query"),
    "skip": ("0", "#ffffff", "skip: the head's video-to-video attention is left out (text keys only)"),
    "sparse": ("X", "#8c564b", "sparse: a mask the method chose (no family recorded)"),
    "static": ("P", "#17becf", "static: the head's searched pattern, chosen at run time (hybrid method)"),
    "refresh": ("R", "#9467bd", "refresh: full attention that refreshes the head's cached delta (delta method)"),
    "delta": ("C", "#e377c2", "delta: the head's top key columns recomputed, the rest from its cache (delta method)"),
}


def pattern_style(name: str) -> tuple[str, tuple[float, float, float]]:
    """(letter, RGB colour in 0..1) of a pattern family name; the same wherever the name appears."""
    from matplotlib.colors import to_rgb

    parts = [p for p in name.split("+") if p]
    if not parts:
        return "", (0.96, 0.96, 0.96)
    letters, colours = [], []
    for part in parts:
        if part in PATTERNS:
            letter, colour, _ = PATTERNS[part]
        else:  # a family this report does not know: a stable colour from its name
            letter, colour = part[:1].upper(), METHOD_COLOURS[zlib.crc32(part.encode()) % len(METHOD_COLOURS)]
        letters.append(letter)
        colours.append(to_rgb(colour))
    return "+".join(letters), tuple(float(np.mean(c)) for c in zip(*colours))


def clip(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n - 3] + "..."
