"""`edgesync sim run | sweep` as a user runs them, and a swarm sweep with no violations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sim.runs import run_seed
from sim.swarm import DEFAULT_FAULTS

FINDING = Path(__file__).resolve().parent.parent / "sim" / "findings"
SWEEP_SEEDS = range(1000, 1030)


def edgesync(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_node.cli", "sim", *args],
        capture_output=True, text=True, timeout=120, check=False, cwd=cwd,
    )  # fmt: skip


def test_a_sweep_of_swarm_seeds_breaks_no_checker() -> None:
    failed = {}
    kinds: set[str] = set()
    for seed in SWEEP_SEEDS:
        run = run_seed(seed)
        kinds.update(run.mix.kinds)
        if run.result.violations:
            failed[seed] = [str(v) for v in run.result.violations[:3]]
    assert failed == {}
    assert kinds == set(DEFAULT_FAULTS)  # the sweep drew every default fault kind


def test_run_prints_the_contract_fields_and_writes_the_report(tmp_path: Path) -> None:
    done = edgesync("run", "--seed", "3", "--json", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    for field in ("seed", "converged", "violations", "rounds_to_converge", "bytes_sent"):
        assert field in out
    assert out["seed"] == 3 and out["converged"] is True and out["violations"] == []
    assert len(out["event_log_hash"]) == 64
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["event_log_hash"] == out["event_log_hash"] and report["samples"]
    assert (tmp_path / "events.log").read_text().count("\n") > 100
    assert report["plot"] == "convergence.png" or report["plot"].startswith("matplotlib not")
    again = edgesync("run", "--scenario", str(tmp_path / "scenario.txt"), "--json")
    assert json.loads(again.stdout)["event_log_hash"] == out["event_log_hash"]


def test_a_broken_checker_exits_1_with_one_line_naming_the_replay() -> None:
    path = FINDING / "only-copy-on-an-edge.scenario"
    done = edgesync("run", "--scenario", str(path))
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("edgesync sim run: error: ") and str(path) in line
    assert "convergence" in done.stdout


def test_a_failing_sweep_names_its_seeds_and_a_failing_seed_is_shrunk(tmp_path: Path) -> None:
    faults = "wipe-hub,partition,packet"  # wipe-hub: an open finding (sim/findings/)
    done = edgesync("sweep", "--start", "4", "--seeds", "1", "--faults", faults)
    assert done.returncode == 1
    assert "1 of 1 seeds broke a checker: 4 " in done.stderr.strip().splitlines()[-1]
    assert "fault kind" in done.stdout and "runs 1, failed 1" in done.stdout
    shrunk = edgesync("run", "--seed", "4", "--faults", faults, "--out", str(tmp_path))
    assert shrunk.returncode == 1
    text = (tmp_path / "seed-4.scenario").read_text()
    assert text.startswith("# seed 4, shrunk from ") and text.rstrip().endswith("check")


def test_sweep_prints_a_table_and_exits_0() -> None:
    done = edgesync("sweep", "--seeds", "3", "--regions", "1", "--edges", "3")
    assert done.returncode == 0, done.stderr
    assert "runs 3, failed 0" in done.stdout and "violations by checker: none" in done.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("run",),
        ("run", "--seed", "1", "--scenario", "x"),
        ("sweep", "--seeds", "0"),
        ("run", "--seed", "1", "--faults", "meteor"),
        ("run", "--scenario", "/nonexistent/file.scenario"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    done = edgesync(*args)
    assert done.returncode == 2
    assert done.stderr.strip()


def test_a_malformed_scenario_exits_2_naming_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.scenario"
    bad.write_text("seed 1\nwait 10\ncrash nobody\n")
    done = edgesync("run", "--scenario", str(bad))
    assert done.returncode == 2
    assert f"{bad}:3: no node 'nobody'" in done.stderr


def test_a_sweep_in_two_processes_prints_what_one_process_prints() -> None:
    args = ("sweep", "--start", "20", "--seeds", "6", "--regions", "1", "--json")
    one, two = edgesync(*args), edgesync(*args, "--jobs", "2")
    assert one.returncode == two.returncode == 0, one.stderr + two.stderr
    serial, pooled = json.loads(one.stdout), json.loads(two.stdout)
    assert [r["seed"] for r in pooled["runs"]] == list(range(20, 26))
    del serial["wall_seconds"], pooled["wall_seconds"]  # the one field time may change
    assert pooled == serial
