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
    done = run_cli("demo")
    assert done.returncode == 0, done.stderr
    assert "partitioned" in done.stdout and "converged: True" in done.stdout
    final = done.stdout.split("== 3. healed")[1]
    digests = {line.split()[2] for line in final.splitlines() if "digest" in line}
    assert len(digests) == 1


def test_usage_errors_exit_2() -> None:
    assert run_cli().returncode == 2
    assert run_cli("no-such-command").returncode == 2
