"""Pattern files are read at run time too, so they live in `vidsparse.core.pattern_file`; re-exported here for the search."""

from ..core.pattern_file import FINGERPRINT_KEYS, SCHEMA_VERSION, DynamicCurves, PatternFile, fingerprint
from ..core.select import select

__all__ = ["FINGERPRINT_KEYS", "SCHEMA_VERSION", "DynamicCurves", "PatternFile", "fingerprint", "select"]
