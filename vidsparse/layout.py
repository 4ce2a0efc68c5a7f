"""Deprecated alias of `vidsparse.core.layout`."""

from ._deprecated import alias

alias(__name__, "vidsparse.core.layout")
