"""Offline per-head pattern search (Sparse-vDiT's idea): calibrate once, then run each head's cheapest adequate pattern.

- `candidates`: patterns in grid units (window, temporal, sink stripe, skip, unions) that compile to a `SparseMask`.
- `calibrate`: a `Calibrator` that scores every candidate on every layer and head from sampled query rows.
- `pattern_file`: choosing per head under an error budget, and the safetensors pattern file.
- `run`: `search(pipe, prompts, SearchConfig(...))`, which `vidsparse search` calls.

The `static` method (`SparseConfig(method="static", patterns=path)`) runs a pattern file.
"""

from .calibrate import Calibrator, sample_rows
from .candidates import DEFAULT_CANDIDATES, Pattern, compile_heads
from .pattern_file import PatternFile, fingerprint, select
from .run import SearchConfig, aggregate, build_pattern_file, search

__all__ = [
    "DEFAULT_CANDIDATES", "Calibrator", "Pattern", "PatternFile", "SearchConfig", "aggregate", "build_pattern_file",
    "compile_heads", "fingerprint", "sample_rows", "search", "select",
]
