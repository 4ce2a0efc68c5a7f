"""Deprecated alias of `vidsparse.app.report`."""

from ._deprecated import alias

alias(__name__, "vidsparse.app.report")
