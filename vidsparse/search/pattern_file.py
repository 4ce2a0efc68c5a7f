"""Pattern files are read at run time too, so they live in `vidsparse.pattern_file`; re-exported here for the search."""

from ..pattern_file import FINGERPRINT_KEYS, SCHEMA_VERSION, PatternFile, fingerprint
from ..select import select

__all__ = ["FINGERPRINT_KEYS", "SCHEMA_VERSION", "PatternFile", "fingerprint", "select"]
