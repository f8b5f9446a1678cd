"""The core stays pure: the standard library only, and no clock, randomness or I/O loop."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SYNC = Path(__file__).resolve().parent.parent / "sync"
# Modules that would give the core a wall clock, global randomness, an event loop,
# threads or I/O of its own. Clocks and randomness are parameters instead.
FORBIDDEN = {
    "asyncio", "datetime", "os", "random", "secrets", "select", "selectors", "socket",
    "subprocess", "threading", "time", "uuid", "multiprocessing",
}  # fmt: skip


def core_modules() -> list[Path]:
    return sorted(p for p in SYNC.glob("*.py"))


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_imports_only_allowed_standard_library_modules() -> None:
    assert core_modules()
    for path in core_modules():
        for root in imported_roots(path):
            where = f"{path.name} imports {root}"
            assert root in {"sync", "__future__"} or root in sys.stdlib_module_names, where
            assert root not in FORBIDDEN, where


def test_importing_the_core_loads_no_forbidden_module() -> None:
    probe = "import sys, sync; print(' '.join(sorted(sys.modules)))"
    loaded = set(subprocess.check_output([sys.executable, "-c", probe], text=True).split())
    assert not loaded & {"asyncio", "grpc", "lmdb", "numpy", "random", "socket", "threading"}
