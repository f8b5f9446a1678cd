"""Which form of the core is running: mypyc-compiled extension modules, or pure Python.

Both forms run the same source with the same semantics; the compiled one applies
updates and decodes deltas about twice as fast. ``pip install`` compiles the core
with mypyc (``setup.py``) unless ``EDGESYNC_PURE=1`` is set or no C compiler is
found, in which case it installs the source as it is. This module is compiled with
the rest, so the file it was loaded from says which form was imported.
"""

from __future__ import annotations

from typing import Final

# Core modules that stay interpreted in a compiled install. Python code subclasses
# the classes of _storage (sync.adapters.lmdb_storage's Storage) and _memnet (tests
# and benches subclass MemoryNetwork), and a compiled class cannot have interpreted
# subclasses; neither is on the per-update path. _errors says why in its
# docstring. __init__ only imports, and an
# editable install loads it from source whatever is built.
INTERPRETED: Final = ("__init__", "_errors", "_storage", "_memnet")

BUILD: Final = "pure" if __file__.endswith(".py") else "compiled"
