"""Build hook: compile the pure core (sync/*.py) with mypyc when it can.

Everything else about the package is declared in pyproject.toml. The core is
compiled unless EDGESYNC_PURE=1 is set, mypyc cannot be imported, or the C
compiler fails; in those cases the package installs as plain Python, which runs
the same source (``sync.BUILD`` says which form was installed).
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError
from setuptools.extension import Extension

HERE = Path(__file__).resolve().parent


def core_sources() -> list[str]:
    interpreted = runpy.run_path(str(HERE / "sync" / "_build.py"))["INTERPRETED"]
    return sorted(
        f"sync/{p.name}" for p in (HERE / "sync").glob("*.py") if p.stem not in interpreted
    )


def compiled_core() -> list[Extension]:
    if os.environ.get("EDGESYNC_PURE") == "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("edgesync: mypyc is not available; installing the pure-Python core")
        return []
    # The project's [tool.mypy] table configures the whole tree; the core needs
    # only strict checking, and mypyc fails on notes about unused sections.
    config = HERE / "build" / "mypyc.ini"
    config.parent.mkdir(exist_ok=True)
    config.write_text("[mypy]\npython_version = 3.11\nstrict = True\n")
    return mypycify(["--config-file", str(config), *core_sources()], opt_level="3")


class OptionalBuildExt(build_ext):
    """Compile every core module or none: a half-compiled core would not import."""

    def run(self) -> None:
        try:
            super().run()
        except (CCompilerError, ExecError, PlatformError) as exc:  # no compiler or header
            for ext in self.extensions:
                Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)
            print(f"edgesync: compiling the core failed ({exc}); installing it as pure Python")
            self.extensions = []
            sys.stdout.flush()


setup(ext_modules=compiled_core(), cmdclass={"build_ext": OptionalBuildExt})
