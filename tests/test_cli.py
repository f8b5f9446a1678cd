"""The `edgesync` command as an operator runs it: a real process, real exit codes."""

from __future__ import annotations

import subprocess
import sys


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_node.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_shows_divergence_then_convergence() -> None:
    done = run_cli("demo", "--edges", "5", "--insecure")
    assert done.returncode == 0, done.stderr
    cut, healed = done.stdout.split("3. Heal")
    # Each side of the cut agrees within itself and differs from the other.
    assert "cloud r2 e3 e4 e5 = " in cut and "  |  r1 e1 e2 = " in cut
    assert "cloud r1 r2 e1 e2 e3 e4 e5 = " in healed and "(all equal)" in healed
    assert "no acknowledged write was lost" in healed and "exited 0" in healed


def test_usage_errors_exit_2() -> None:
    assert run_cli().returncode == 2
    assert run_cli("no-such-command").returncode == 2
