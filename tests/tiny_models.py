"""The tiny offline models and pipelines for the CPU tests: a re-export of `vidsparse.builtin`.

They live in the library because the command line needs a built-in model at run time, and the library cannot
import from tests/. See `vidsparse.builtin` for what each builder makes and the grids of their default inputs.
"""

from vidsparse.builtin import *
from vidsparse.builtin import __all__  # noqa: F401
