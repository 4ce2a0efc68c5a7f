"""Deprecated alias of `vidsparse.methods.profile`."""

from ._deprecated import alias

alias(__name__, "vidsparse.methods.profile")
