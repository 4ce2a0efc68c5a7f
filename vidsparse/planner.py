"""Deprecated alias of `vidsparse.methods.base`."""

from ._deprecated import alias

alias(__name__, "vidsparse.methods.base")
