"""Deprecated alias of `vidsparse.app.models`."""

from ._deprecated import alias

alias(__name__, "vidsparse.app.models")
