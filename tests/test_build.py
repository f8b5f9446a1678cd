"""The core is imported whole in one form, compiled or pure, and the source runs in both."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import sync
from sync._build import BUILD, INTERPRETED

SYNC = Path(sync.__file__).resolve().parent


def core_module_names() -> list[str]:
    return sorted(p.stem for p in SYNC.glob("*.py"))


def test_every_core_module_is_in_the_form_the_build_reports() -> None:
    assert BUILD in {"compiled", "pure"}
    assert sync.BUILD == BUILD
    for name in core_module_names():
        module = sync if name == "__init__" else importlib.import_module(f"sync.{name}")
        loaded = Path(module.__file__ or "")
        expect_source = BUILD == "pure" or name in INTERPRETED
        assert (loaded.suffix == ".py") == expect_source, f"sync.{name} loaded from {loaded.name}"


def test_the_pure_source_runs_beside_a_compiled_install(tmp_path: Path) -> None:
    """The same source, imported without any extension module, joins and encodes alike."""
    shutil.copytree(
        SYNC, tmp_path / "sync", ignore=shutil.ignore_patterns("*.so", "adapters", "__pycache__")
    )
    probe = (
        "import sync\n"
        "from sync import AWSet, ORMap, PNCounter, decode\n"
        "a, b = ORMap(), ORMap()\n"
        "a.apply('n', PNCounter, lambda c: c.increment('a', 3))\n"
        "d = b.apply('s', AWSet, lambda s: s.add('b', 'x'))\n"
        "a.merge(decode(d.encode()))\n"
        "print(sync.BUILD, sync.__file__, a.encode().hex())\n"
    )
    out = subprocess.check_output([sys.executable, "-c", probe], cwd=tmp_path, text=True).split()
    assert out[0] == "pure"
    assert Path(out[1]).is_relative_to(tmp_path)
    a, b = sync.ORMap(), sync.ORMap()
    a.apply("n", sync.PNCounter, lambda c: c.increment("a", 3))
    a.merge(b.apply("s", sync.AWSet, lambda s: s.add("b", "x")))
    assert out[2] == a.encode().hex()


def test_no_compiled_module_is_older_than_its_source() -> None:
    """An editable install keeps running the old compiled module after its .py changes."""
    if BUILD == "pure" or "site-packages" in SYNC.parts:  # a regular install: no edits
        return
    for name in core_module_names():
        if name in INTERPRETED:
            continue
        source = SYNC / f"{name}.py"
        built = Path(importlib.import_module(f"sync.{name}").__file__ or "")
        assert built.stat().st_mtime >= source.stat().st_mtime, (
            f"{built.name} is older than {source.name}: reinstall (make, or pip install -e .)"
        )
