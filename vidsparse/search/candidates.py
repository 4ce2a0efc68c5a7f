"""The offline search's default candidate patterns. The pattern language itself lives in `vidsparse.core.patterns`, shared
with the run-time planners; its names are re-exported here for the search's callers."""

from __future__ import annotations

from ..core.patterns import KINDS, Pattern, compile_heads

__all__ = ["DEFAULT_CANDIDATES", "KINDS", "Pattern", "compile_heads"]


def _m(kind: str, **params: int) -> Pattern:
    return Pattern.make(kind, **params)


# The default search space, cheapest families first. Radii are in grid units (one unit = one patch).
DEFAULT_CANDIDATES: tuple[Pattern, ...] = (
    _m("skip"),
    _m("sink", frames=1),
    _m("window", radius=2, frames=0), _m("window", radius=4, frames=0), _m("window", radius=4, frames=1),
    _m("window", radius=8, frames=1), _m("window", radius=-1, frames=0), _m("window", radius=-1, frames=1),
    _m("window", radius=-1, frames=2),
    _m("temporal", radius=0, every=1), _m("temporal", radius=1, every=1), _m("temporal", radius=2, every=1),
    _m("temporal", radius=1, every=2),
    Pattern("union", parts=(_m("window", radius=4, frames=0), _m("temporal", radius=1, every=1))),
    Pattern("union", parts=(_m("window", radius=-1, frames=0), _m("temporal", radius=1, every=1))),
    Pattern("union", parts=(_m("window", radius=-1, frames=1), _m("temporal", radius=2, every=1))),
    Pattern("union", parts=(_m("sink", frames=1), _m("window", radius=4, frames=1))),
    Pattern("union", parts=(_m("sink", frames=1), _m("window", radius=-1, frames=1))),
    _m("columns", count=8),
    Pattern("union", parts=(_m("columns", count=8), _m("window", radius=-1, frames=0))),
    Pattern("union", parts=(_m("columns", count=8), _m("temporal", radius=1, every=1))),
)
