"""A real ``edgesync node`` with simulated sensors, partitioned from its hub: it keeps
detecting and counting, and after the heal the hub holds what the edge holds."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from test_daemons import Fleet, cli

from sim.fleet import free_port

MACHINES = ("edge-vibration-0", "edge-vibration-1")


def value(at: str, key: str, type_name: str) -> Any:
    done = cli("get", "--at", at, "--insecure", "--json", key, check=False)
    if done.returncode:
        return None
    return json.loads(done.stdout)["values"].get(type_name)


def anomalies(at: str) -> dict[str, int]:
    return {m: value(at, f"machines/{m}/anomalies", "GCounter") or 0 for m in MACHINES}


def alerts(at: str) -> dict[str, list[str]]:
    return {m: value(at, f"machines/{m}/alerts", "AWSet") or [] for m in MACHINES}


def eventually(probe: Callable[[], Any], accept: Callable[[Any], bool], what: str) -> Any:
    deadline = time.monotonic() + 90
    while True:
        seen = probe()
        if accept(seen):
            return seen
        assert time.monotonic() < deadline, f"timed out waiting for {what}; last saw {seen}"
        time.sleep(0.5)


def test_a_bad_sensor_flag_is_a_usage_error(tmp_path: Path) -> None:
    base = ["node", "--id", "x", "--data", str(tmp_path / "x"), "--listen", "127.0.0.1:1"]
    for flags, reason in (
        (["--sensors", "sim:sound:2"], "sensor kind is one of"),
        (["--mqtt", "127.0.0.1:1883"], "--mqtt-topic"),
        (["--sensors", f"file:vibration:{tmp_path / 'missing.npy'}"], "missing.npy"),
    ):
        refused = cli(*base, "--insecure", *flags, check=False)
        assert refused.returncode == 2 and reason in refused.stderr, refused.stderr


def test_partitioned_node_keeps_detecting_and_the_hub_converges_after_heal(fleet: Fleet) -> None:
    hub = fleet.addr.setdefault("hub", f"127.0.0.1:{free_port()}")  # not running yet
    sensors = ["--sensors", "sim:vibration:2,sim:temperature:1", "--sensor-seed", "7"]
    edge = fleet.start("edge", "node", "--upstream", hub, *sensors)
    fleet.wait_ready()

    # Partitioned (the hub is down): the edge detects, counts and opens alerts.
    first = eventually(lambda: anomalies(edge), lambda c: sum(c.values()) > 0, "a detection")
    # More detections, on every machine: the keys checked at the end exist only once
    # a machine has had an anomaly, and how many windows pass before then is timing.
    later = eventually(lambda: anomalies(edge),
                       lambda c: sum(c.values()) > sum(first.values()) and all(c.values()),
                       "more detections while partitioned, on every machine")  # fmt: skip
    assert any(alerts(edge).values())
    summary = value(edge, f"machines/{MACHINES[0]}/summary", "LWWRegister")
    assert summary["kind"] == "vibration" and summary["windows"] > 0
    assert value(edge, "local/sensors/metrics", "LWWRegister")["windows_scored"] > 0

    # Heal: the hub comes up; what the edge concluded while cut off reaches it.
    fleet.start("hub", "hub", "--role", "cloud")
    fleet.wait_ready()
    eventually(lambda: anomalies(hub), lambda c: all(c[m] >= later[m] for m in MACHINES),
               "the hub to receive the partition's counts")  # fmt: skip
    acked_machine = next(m for m, open_alerts in alerts(hub).items() if open_alerts)
    acked = alerts(hub)[acked_machine][0]
    cli("rm", "--at", hub, "--insecure", f"machines/{acked_machine}/alerts", acked)

    # Stop the sensors (SIGTERM, clean exit), restart without them: the edge settles.
    assert fleet.stop("edge") == 0
    fleet.start("edge", "node", "--upstream", hub)
    fleet.wait_ready()
    assert len(fleet.converged(timeout=90)) == 1, "digests differ after the heal"
    assert anomalies(hub) == anomalies(edge)
    assert alerts(hub) == alerts(edge)
    assert acked not in alerts(edge)[acked_machine]  # acknowledged at the hub, gone everywhere
    hub_keys = json.loads(cli("keys", "--at", hub, "--insecure", "--json").stdout)["keys"]
    assert not any(k["key"].startswith("local/") for k in hub_keys)
    assert {
        f"machines/{m}/{leaf}" for m in MACHINES for leaf in ("anomalies", "peak", "summary")
    } <= {k["key"] for k in hub_keys}
