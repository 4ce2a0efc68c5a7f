"""Deprecated alias of `vidsparse.app.cli`."""

from ._deprecated import alias

alias(__name__, "vidsparse.app.cli")
