"""Deprecated alias of `vidsparse.core.plan`."""

from ._deprecated import alias

alias(__name__, "vidsparse.core.plan")
