"""Deprecated alias of `vidsparse.app.metrics`."""

from ._deprecated import alias

alias(__name__, "vidsparse.app.metrics")
