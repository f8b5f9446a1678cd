"""``edgesync demo`` end to end: seven real daemons, a partition, a heal."""

from __future__ import annotations

import json
import subprocess
import sys

from sim.demo import Expected


def test_demo_converges_loses_nothing_and_stops_cleanly() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "edge_node.cli", "demo", "--json"],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["ok"] and summary["problems"] == []
    assert summary["values"]["fleet/anomalies"] == {"PNCounter": 22}
    assert summary["values"]["fleet/mode"] == {"LWWRegister": {"mode": "turbo"}}
    assert set(summary["exit_codes"]) == {"cloud", "r1", "r2", "e1", "e2", "e3", "e4"}
    assert set(summary["exit_codes"].values()) == {0}
    assert 0 < summary["bytes_during_heal"] < summary["bytes_total"]


def test_expected_reports_a_lost_write() -> None:
    want = Expected(anomalies=3, alerts={"a"}, fleet_mode="eco")
    values: dict[str, dict[str, object]] = {
        "fleet/anomalies": {"PNCounter": 2},
        "fleet/alerts": {"AWSet": ["a"]},
        "fleet/mode": {"LWWRegister": {"mode": "eco"}},
    }
    assert want.check(values) == ["fleet/anomalies is {'PNCounter': 2}, not 3"]
