"""Deprecated alias of `vidsparse.methods.static`."""

from ._deprecated import alias

alias(__name__, "vidsparse.methods.static")
