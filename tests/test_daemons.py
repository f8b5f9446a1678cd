"""Node and hub daemons as real processes on loopback, driven through the CLI contract."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sim.fleet import free_port

CLI = [sys.executable, "-m", "edge_node.cli"]


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{args}: exit {done.returncode}: {done.stderr}")
    return done


class Fleet:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.addr: dict[str, str] = {}

    def start(self, name: str, *args: str) -> str:
        self.addr.setdefault(name, f"127.0.0.1:{free_port()}")
        cmd = [*CLI, *args, "--id", name, "--data", str(self.root / name),
               "--listen", self.addr[name], "--insecure"]  # fmt: skip
        with (self.root / f"{name}.log").open("a") as log:  # the child keeps its own copy
            self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=log, text=True)
        return self.addr[name]

    def status(self, name: str) -> dict[str, object]:
        out = cli("status", "--at", self.addr[name], "--insecure", "--json")
        parsed: dict[str, object] = json.loads(out.stdout)
        return parsed

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        for name in self.procs:
            while cli("status", "--at", self.addr[name], "--insecure", check=False).returncode:
                assert time.monotonic() < deadline, (self.root / f"{name}.log").read_text()
                time.sleep(0.2)

    def stop(self, name: str) -> int:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=20)

    def converged(self, timeout: float = 60) -> set[object]:
        deadline = time.monotonic() + timeout
        while True:
            digests = {self.status(n)["digest"] for n in self.procs}
            if len(digests) == 1 or time.monotonic() > deadline:
                return digests
            time.sleep(0.3)


def test_hierarchy_converges_and_cloud_sees_every_edge(fleet: Fleet) -> None:
    cloud = fleet.start("cloud", "hub", "--role", "cloud")
    regional = {r: fleet.start(r, "hub", "--role", "regional", "--upstream", cloud)
                for r in ("r1", "r2")}  # fmt: skip
    edges = {f"e{i}": regional["r1" if i < 2 else "r2"] for i in range(4)}
    for edge, up in edges.items():
        fleet.start(edge, "node", "--upstream", up)
    fleet.wait_ready()
    for edge in edges:
        at = ["--at", fleet.addr[edge], "--insecure"]
        cli("put", *at, f"cfg/{edge}", '{"mode": "auto"}')
        cli("inc", *at, "fleet/anomalies", "2")
        cli("add", *at, "fleet/alerts", f"{edge}-pump", f"{edge}-fan")
        cli("rm", *at, "fleet/alerts", f"{edge}-fan")
        cli("inc", *at, f"local/raw/{edge}", "9")  # never leaves the node
    assert len(fleet.converged()) == 1, "digests differ"
    at_cloud = ["--at", cloud, "--insecure", "--json"]
    counter = json.loads(cli("get", *at_cloud, "fleet/anomalies").stdout)
    assert counter["values"] == {"PNCounter": 8}
    alerts = json.loads(cli("get", *at_cloud, "fleet/alerts").stdout)["values"]["AWSet"]
    assert alerts == sorted(f"{e}-pump" for e in edges)
    keys = json.loads(cli("keys", *at_cloud).stdout)["keys"]
    assert not any(k["key"].startswith("local/") for k in keys)
    assert {k["key"] for k in keys} >= {f"cfg/{e}" for e in edges}
    for name in list(fleet.procs):
        assert fleet.stop(name) == 0  # SIGTERM: clean exit


def test_a_stopped_edge_catches_up_and_writes_made_offline_flow(fleet: Fleet) -> None:
    hub = fleet.start("hub", "hub", "--role", "cloud")
    fleet.start("edge", "node", "--upstream", hub)
    fleet.wait_ready()
    cli("inc", "--at", fleet.addr["edge"], "--insecure", "n", "1")
    assert fleet.stop("edge") == 0
    cli("inc", "--at", hub, "--insecure", "n", "10")  # while the edge is down
    fleet.start("edge", "node", "--upstream", hub)
    fleet.wait_ready()
    assert len(fleet.converged()) == 1
    out = cli("get", "--at", fleet.addr["edge"], "--insecure", "--json", "n").stdout
    assert json.loads(out)["values"] == {"PNCounter": 11}


def test_cli_exit_codes(fleet: Fleet, tmp_path: Path) -> None:
    node = fleet.start("n", "node")
    fleet.wait_ready()
    assert cli("get", "--at", node, "--insecure", "missing", check=False).returncode == 1
    assert cli("get", "--at", node, "k", check=False).returncode == 1  # neither --insecure nor TLS
    refused = cli("node", "--id", "x", "--data", str(tmp_path / "x"),
                  "--listen", "127.0.0.1:1", check=False)  # fmt: skip
    assert refused.returncode == 2 and "--insecure" in refused.stderr
    public = cli("node", "--id", "x", "--data", str(tmp_path / "x"),
                 "--listen", "0.0.0.0:7000", "--insecure", check=False)  # fmt: skip
    assert public.returncode == 2 and "loopback only" in public.stderr
    assert cli("bogus", check=False).returncode == 2
    assert cli("inc", "--at", node, "--insecure", "k", "notanumber", check=False).returncode == 2


def test_watch_prints_one_line_per_change(fleet: Fleet) -> None:
    import select

    node = fleet.start("n", "node")
    fleet.wait_ready()
    watch = subprocess.Popen([*CLI, "watch", "--at", node, "--insecure", "--json", "alerts/"],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert watch.stdout is not None
        added: list[str] = []
        for i in range(60):  # until the stream is open: a change before it is not replayed
            cli("inc", "--at", node, "--insecure", "other/n", "1")  # outside the prefix
            added.append(f"e{i}")
            cli("add", "--at", node, "--insecure", "alerts/pump", added[-1])
            if select.select([watch.stdout], [], [], 0.5)[0]:
                break
        line = json.loads(watch.stdout.readline())
        assert line["key"] == "alerts/pump"
        assert set(line["values"]["AWSet"]) <= set(added) and line["values"]["AWSet"]
    finally:
        watch.terminate()
        watch.communicate(timeout=10)


def test_watch_into_a_reader_that_leaves_exits_quietly(fleet: Fleet) -> None:
    """``edgesync watch | head -n 1``: the watch ends when head does, with no error."""
    import select

    node = fleet.start("n", "node")
    fleet.wait_ready()
    watch = subprocess.Popen([*CLI, "watch", "--at", node, "--insecure", "k"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert watch.stdout is not None
    for _ in range(600):  # until a change shows, then until the closed pipe ends it
        cli("inc", "--at", node, "--insecure", "k", "1")
        if watch.poll() is not None:
            break
        if not watch.stdout.closed and select.select([watch.stdout], [], [], 0.2)[0]:
            watch.stdout.readline()
            watch.stdout.close()  # the reader leaves
    assert watch.stderr is not None
    with watch.stderr:
        errors = watch.stderr.read()
    assert watch.wait(timeout=10) == 128 + signal.SIGPIPE and errors == b""


def test_a_watch_whose_node_stops_says_so_and_fails(fleet: Fleet) -> None:
    import select

    node = fleet.start("n", "node")
    fleet.wait_ready()
    watch = subprocess.Popen([*CLI, "watch", "--at", node, "--insecure", "k"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert watch.stdout is not None
    for _ in range(120):  # until the stream is open: a change shows
        cli("inc", "--at", node, "--insecure", "k", "1")
        if select.select([watch.stdout], [], [], 0.5)[0]:
            break
    assert watch.stdout.readline().startswith("k PNCounter=")
    fleet.procs["n"].send_signal(signal.SIGTERM)
    assert fleet.procs.pop("n").wait(timeout=30) == 0
    _, errors = watch.communicate(timeout=30)
    assert watch.returncode == 1
    assert errors.count("\n") == 1 and f"the node at {node} ended the watch" in errors


def test_oversized_frame_is_refused_and_the_daemon_keeps_serving(fleet: Fleet) -> None:
    import grpc

    from sync.adapters.pb import replication_pb2, replication_pb2_grpc

    node = fleet.start("n", "node")
    fleet.wait_ready()
    with grpc.insecure_channel(node) as channel:
        stub = replication_pb2_grpc.ReplicationStub(channel)  # type: ignore[no-untyped-call]
        huge = replication_pb2.Frame(message=b"x" * (5 * 1024 * 1024))
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.Link(iter([huge]), timeout=10))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert cli("inc", "--at", node, "--insecure", "still/up", "1").returncode == 0


def test_regional_hub_killed_mid_stream_loses_no_acknowledged_increment(fleet: Fleet) -> None:
    cloud = fleet.start("cloud", "hub", "--role", "cloud")
    hub = fleet.start("r1", "hub", "--role", "regional", "--upstream", cloud)
    for edge in ("e0", "e1"):
        fleet.start(edge, "node", "--upstream", hub)
    fleet.wait_ready()
    acked = 0
    for i in range(30):
        edge = f"e{i % 2}"
        if (
            cli("inc", "--at", fleet.addr[edge], "--insecure", "total", "1", check=False).returncode
            == 0
        ):
            acked += 1
        if i == 10:
            killed = fleet.procs.pop("r1")
            killed.kill()  # SIGKILL, mid-stream
            killed.wait()
        if i == 20:
            fleet.start("r1", "hub", "--role", "regional", "--upstream", cloud)
    fleet.wait_ready()
    assert acked == 30  # edges accept writes while their hub is down
    assert len(fleet.converged(timeout=90)) == 1
    out = cli("get", "--at", cloud, "--insecure", "--json", "total").stdout
    assert json.loads(out)["values"] == {"PNCounter": acked}


def test_push_and_pull_prefixes_decide_what_flows(fleet: Fleet) -> None:
    cloud = fleet.start("cloud", "hub", "--role", "cloud")
    fleet.start("e1", "node", "--upstream", cloud, "--push", "fleet/", "--push", "cfg/")
    fleet.start("e2", "node", "--upstream", cloud, "--pull", "cfg/")
    fleet.wait_ready()
    at_e1 = ["--at", fleet.addr["e1"], "--insecure"]
    cli("inc", *at_e1, "fleet/n", "1")
    cli("put", *at_e1, "cfg/mode", "eco")
    cli("inc", *at_e1, "other/n", "1")  # not pushed
    cli("inc", "--at", cloud, "--insecure", "fleet/from-cloud", "1")  # e2 does not pull it

    def keys(name: str) -> set[str]:
        out = cli("keys", "--at", fleet.addr[name], "--insecure", "--json").stdout
        return {k["key"] for k in json.loads(out)["keys"]}

    deadline = time.monotonic() + 30
    while keys("cloud") != {"fleet/n", "cfg/mode", "fleet/from-cloud"} or "cfg/mode" not in keys(
        "e2"
    ):
        assert time.monotonic() < deadline, (keys("cloud"), keys("e2"))
        time.sleep(0.3)
    assert keys("e2") == {"cfg/mode"}


def test_daemons_run_on_uvloop_where_it_is_installed() -> None:
    import asyncio

    from edge_node.daemon import run_event_loop

    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    expected = "uvloop" if sys.platform != "win32" else "asyncio"
    assert run_event_loop(loop_module()).split(".")[0] == expected


def test_a_full_store_refuses_writes_clearly_and_the_daemon_keeps_serving(
    fleet: Fleet, tmp_path: Path
) -> None:
    node = fleet.start("n", "node", "--max-store-size", "1MiB")
    fleet.wait_ready()
    cli("put", "--at", node, "--insecure", "kept", "1")
    for i in range(40):  # 120 KB values (an argument's limit is 128 KiB): about 8 fill it
        done = cli("put", "--at", node, "--insecure", f"blob/{i}", "x" * 120_000, check=False)
        if done.returncode:
            break
    assert done.returncode == 1 and "full" in done.stderr and "--max-store-size" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    got = cli("get", "--at", node, "--insecure", "kept", "--json")
    assert json.loads(got.stdout)["values"] == {"LWWRegister": 1}  # reads go on
    store = fleet.status("n")["store"]
    assert isinstance(store, dict) and store["max_bytes"] == 1024**2
    bad = cli("node", "--id", "x", "--data", str(tmp_path / "x"), "--listen", "127.0.0.1:1",
              "--insecure", "--max-store-size", "lots", check=False)  # fmt: skip
    assert bad.returncode == 2 and "--max-store-size" in bad.stderr


@pytest.mark.parametrize(
    ("size", "expected"),
    [(4096, 4096), ("512MiB", 512 * 1024**2), ("8GiB", 8 * 1024**3), ("1.5G", 3 * 1024**3 // 2),
     ("2 GB", 2 * 1000**3), ("10k", 10_240), ("lots", None), ("5XB", None), ("-1M", None)],
)  # fmt: skip
def test_store_sizes_parse_with_units(size: int | str, expected: int | None) -> None:
    from edge_node.config import parse_size

    assert parse_size(size) == expected


def test_a_second_daemon_on_a_taken_address_refuses_to_start(fleet: Fleet, tmp_path: Path) -> None:
    node = fleet.start("n", "node")
    fleet.wait_ready()
    second = cli("node", "--id", "m", "--data", str(tmp_path / "m"), "--listen", node,
                 "--insecure", check=False)  # fmt: skip
    assert second.returncode == 1 and f"cannot listen on {node}" in second.stderr
    assert json.loads(cli("status", "--at", node, "--insecure", "--json").stdout)["id"] == "n"
    # m's store, opened before the listen failed, was closed cleanly: no new epoch next time
    fleet.start("m", "node")
    fleet.wait_ready()
    log = (tmp_path / "m.log").read_text()
    assert "new epoch" not in log and "journal records a crash left" not in log, log


def test_status_counts_the_frames_refused_on_a_link(fleet: Fleet) -> None:
    import grpc

    from sync.adapters.pb import replication_pb2, replication_pb2_grpc

    node = fleet.start("n", "node")
    fleet.wait_ready()
    garbage = [replication_pb2.Frame(message=blob) for blob in (b"\xff\x00", b"\x01\x02junk")]
    replies: list[replication_pb2.Frame] = []
    with grpc.insecure_channel(node) as channel:
        stub = replication_pb2_grpc.ReplicationStub(channel)  # type: ignore[no-untyped-call]
        with contextlib.suppress(grpc.RpcError):
            replies.extend(stub.Link(iter(garbage), timeout=5))
    assert len([r for r in replies if r.refusal]) == 2  # the sender is told, frame by frame
    peers = fleet.status("n")["peers"]
    assert isinstance(peers, list)
    refused = [p for p in peers if p["refused"]]
    assert len(refused) == 1 and refused[0]["refused"] == 2 and refused[0]["last_refusal"]
    assert " refused=2 (" in cli("status", "--at", node, "--insecure").stdout


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a real filesystem that fills (root only; CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                             capture_output=True, text=True, check=False)  # fmt: skip
    if mounted.returncode != 0:  # root without the right to mount (a container, say)
        pytest.skip(f"cannot mount a small filesystem: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_refuses_writes_clearly_and_they_resume_when_space_is_freed(
    fleet: Fleet, small_disk: Path
) -> None:
    fleet.root = small_disk  # the store (and the daemon's log) on the small disk
    node = fleet.start("n", "node")
    fleet.wait_ready()
    at = ["--at", node, "--insecure"]
    epoch = fleet.status("n")["epoch"]
    acknowledged = []
    for i in range(80):  # 100 KB values: the disk fills after a few dozen
        done = cli("put", *at, f"blob/{i}", "x" * 100_000, check=False)
        if done.returncode:
            break
        acknowledged.append(f"blob/{i}")
    assert done.returncode == 1 and "the disk holding it is full" in done.stderr, done.stderr
    assert "RESOURCE_EXHAUSTED" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert acknowledged
    again = cli("put", *at, "blob/again", "x" * 100_000, check=False)
    assert again.returncode == 1 and "full" in again.stderr  # still full: refused again
    assert json.loads(cli("get", *at, "--json", acknowledged[0]).stdout)["values"]  # reads go on
    assert fleet.status("n")["epoch"] == epoch  # a refused write costs no new epoch
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    cli("inc", *at, "after/freed")  # space freed: writes resume
    assert fleet.stop("n") == 0
    fleet.start("n", "node")
    fleet.wait_ready()
    keys = {k["key"] for k in json.loads(cli("keys", *at, "--json").stdout)["keys"]}
    assert keys == {*acknowledged, "after/freed"}  # every acknowledged write, nothing else
