"""Deprecated alias of `vidsparse.core.patterns`."""

from ._deprecated import alias

alias(__name__, "vidsparse.core.patterns")
