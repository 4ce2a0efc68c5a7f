"""Deprecated alias of `vidsparse.core.mask`."""

from ._deprecated import alias

alias(__name__, "vidsparse.core.mask")
