"""Deprecated alias of `vidsparse.yardstick.wordlevel`."""

from ._deprecated import alias

alias(__name__, "vidsparse.yardstick.wordlevel")
