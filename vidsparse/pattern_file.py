"""Deprecated alias of `vidsparse.core.pattern_file`."""

from ._deprecated import alias

alias(__name__, "vidsparse.core.pattern_file")
