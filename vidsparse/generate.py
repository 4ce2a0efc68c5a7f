"""Deprecated alias of `vidsparse.app.generate`."""

from ._deprecated import alias

alias(__name__, "vidsparse.app.generate")
