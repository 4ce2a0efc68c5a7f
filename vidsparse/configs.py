"""Deprecated alias of `vidsparse.app.configs`."""

from ._deprecated import alias

alias(__name__, "vidsparse.app.configs")
