"""Deprecated alias of `vidsparse.core.select`."""

from ._deprecated import alias

alias(__name__, "vidsparse.core.select")
