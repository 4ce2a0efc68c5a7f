"""Old import paths of the flat 0.1 layout, kept for one release: each old module is the new one, after a warning."""

from __future__ import annotations

import importlib
import sys
import warnings


def alias(old: str, new: str) -> None:
    """Make module `old` the module `new` (the same object, so patches and isinstance checks see one module)."""
    warnings.warn(f"{old} moved to {new}; the old path goes in vidsparse 0.3", DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)
