"""The README's embedding example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README should show how to embed the core"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})


def test_embedding_example_runs_and_converges() -> None:
    import subprocess
    import sys

    example = README.parent / "docs" / "examples" / "embed.py"
    done = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "digests equal: True" in done.stdout
