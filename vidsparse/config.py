"""Deprecated alias of `vidsparse.methods.config`."""

from ._deprecated import alias

alias(__name__, "vidsparse.methods.config")
