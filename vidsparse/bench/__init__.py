"""Deprecated alias of `vidsparse.app.bench`."""

from .._deprecated import alias

alias(__name__, "vidsparse.app.bench")
