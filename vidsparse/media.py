"""Deprecated alias of `vidsparse.app.media`."""

from ._deprecated import alias

alias(__name__, "vidsparse.app.media")
