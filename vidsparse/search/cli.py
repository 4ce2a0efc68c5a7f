"""Deprecated alias of `vidsparse.app.search_cli`."""

from .._deprecated import alias

alias(__name__, "vidsparse.app.search_cli")
