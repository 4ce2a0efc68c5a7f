"""Deprecated alias of `vidsparse.app.runinfo`."""

from ._deprecated import alias

alias(__name__, "vidsparse.app.runinfo")
