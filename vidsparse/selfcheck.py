"""Deprecated alias of `vidsparse.app.selfcheck`."""

from ._deprecated import alias

alias(__name__, "vidsparse.app.selfcheck")
