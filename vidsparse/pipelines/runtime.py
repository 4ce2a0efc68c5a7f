"""Deprecated alias of `vidsparse.runtime.runtime`."""

from .._deprecated import alias

alias(__name__, "vidsparse.runtime.runtime")
