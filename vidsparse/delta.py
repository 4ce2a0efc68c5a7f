"""Deprecated alias of `vidsparse.methods.delta`."""

from ._deprecated import alias

alias(__name__, "vidsparse.methods.delta")
