"""The core's exception types.

They live apart from the code that raises them so that they stay interpreted in a
compiled install (``sync._build.INTERPRETED``). A mypyc-compiled exception class
gets a weak-reference slot that, on Python 3.11, its deallocator releases as if
it owned the first weak reference: a weak reference to a dead error would be
freed while still in use. Errors are off the hot path, so nothing is lost.
"""

from __future__ import annotations


class CodecError(ValueError):
    """Input that is not a canonical encoding this build can read."""


class ProtocolError(CodecError):
    """A peer sent something this build cannot accept."""


class ClockSkewError(ValueError):
    """A remote timestamp lies further ahead of the local clock than allowed."""
