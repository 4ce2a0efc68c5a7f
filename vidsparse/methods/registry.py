"""The method registry: a name -> (options dataclass, planner class), imported by the methods and importing none.

A method registers itself when its module is imported (`@register_method(name, Options)` on its planner). The
built-in methods are known here by module name only and imported on first lookup of that name, so building a
`SparseConfig(method="spatial")` loads the fixed patterns and nothing else, and no import runs from this module
up to a method module. A plugin registers by importing its own module before it builds a config.

Example::

    >>> from vidsparse.methods.registry import method_options
    >>> method_options("spatial").__name__
    'SpatialOptions'
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass

__all__ = ["BUILTIN_METHODS", "METHODS", "SHARED_FIELDS", "lookup", "method_options", "register_method"]

# Fields that every method shares (`SparseConfig`); a method's options may not redefine them.
SHARED_FIELDS = ("method", "warmup_steps", "warmup_layers", "backend", "schedule_steps")

# The built-in methods and the module that registers each one.
BUILTIN_METHODS = {
    "dense": "vidsparse.methods.base",
    "spatial": "vidsparse.methods.base",
    "temporal": "vidsparse.methods.base",
    "static": "vidsparse.methods.static",
    "profile": "vidsparse.methods.profile",
    "delta": "vidsparse.methods.delta",
    "hybrid": "vidsparse.methods.hybrid",
    "dynamic": "vidsparse.methods.dynamic",
}


@dataclass(frozen=True)
class Method:
    """A registered method: its options dataclass and its planner class."""

    name: str
    options: type
    planner: type


_REGISTERED: dict[str, Method] = {}


def register_method(name: str, options: type):
    """Class decorator for a planner: `method=name` runs it, configured by the `options` dataclass.

    The options dataclass validates itself in `__post_init__` (ValueError with a message that names the fix).
    """
    if not dataclasses.is_dataclass(options):
        raise TypeError(f"the options of method {name!r} must be a dataclass; got {options!r}")
    clash = [f.name for f in dataclasses.fields(options) if f.name in SHARED_FIELDS]
    if clash:
        raise TypeError(f"the options of method {name!r} redefine shared fields {clash}")

    def decorate(planner: type) -> type:
        _REGISTERED[name] = Method(name, options, planner)
        return planner

    return decorate


def lookup(name: str) -> Method:
    """The registered method `name`, importing its built-in module on first use."""
    if name not in _REGISTERED and name in BUILTIN_METHODS:
        importlib.import_module(BUILTIN_METHODS[name])
    if name not in _REGISTERED:
        raise ValueError(f"method must be one of {tuple(names())}; got {name!r}")
    return _REGISTERED[name]


def method_options(name: str) -> type:
    """The options dataclass of a registered method."""
    return lookup(name).options


def names() -> list[str]:
    """Every method name: the built-ins first, then plugins in registration order."""
    return list(BUILTIN_METHODS) + [n for n in _REGISTERED if n not in BUILTIN_METHODS]


class _Methods:
    """`METHODS`: the registered method names, read when asked (plugins may register more)."""

    def __iter__(self):
        return iter(names())

    def __contains__(self, name) -> bool:
        return name in BUILTIN_METHODS or name in _REGISTERED

    def __len__(self) -> int:
        return len(names())

    def __repr__(self) -> str:
        return repr(tuple(names()))


METHODS = _Methods()
