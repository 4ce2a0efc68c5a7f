"""Deprecated alias of `vidsparse.runtime.backends`."""

from .._deprecated import alias

alias(__name__, "vidsparse.runtime.backends")
