"""Deprecated alias of `vidsparse.methods.hybrid`."""

from ._deprecated import alias

alias(__name__, "vidsparse.methods.hybrid")
