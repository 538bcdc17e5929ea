"""The one exception the codecs raise for bad input or a malformed stream."""

from __future__ import annotations

from ..errors import ArchiveError


class CodecError(ArchiveError, ValueError):
    """Bad codec input, params or bytes. An ArchiveError (the CLI exits 2 with one line) and a
    ValueError (callers outside the CLI can catch the standard type)."""
