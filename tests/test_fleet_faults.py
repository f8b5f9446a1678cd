"""Real daemons under link faults and bad client input, driven through sim.fleet.

Links are cut and restored by the proxies the fleet puts on every link, while
writers on every edge keep going; afterwards every acknowledged set element and
counter increment must be on every replica.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import subprocess
import sys
from pathlib import Path

import grpc

from sim.fleet import Fleet, LoopbackNetwork, edges_under_hubs, start_tree
from sync.adapters.pb import client_pb2, client_pb2_grpc

EDGES = edges_under_hubs(4)


async def writer(
    fleet: Fleet, edge: str, count: int, acked: list[str], halfway: asyncio.Event
) -> None:
    """Adds a unique element and one increment per round; records what was acknowledged.
    Halfway through it waits for ``halfway``, so the faults happen while it writes
    however fast this host acknowledges."""
    client = fleet.client(edge)
    for i in range(count):
        if i == count // 2:
            await halfway.wait()
        element = f"{edge}-{i}"
        await client.add("load/seen", element)
        acked.append(element)
        await client.inc("load/count", 1)
        acked.append(f"+1 {edge}")


async def nemesis(
    fleet: Fleet, rng: random.Random, stop: asyncio.Event, cut_twice: asyncio.Event
) -> int:
    """Cuts one link at a time for a while, then restores it, until told to stop; sets
    ``cut_twice`` once its second cut is down."""
    links = [fleet.link(a, b) for a, b in [("r1", "cloud"), ("r2", "cloud"), *EDGES.items()]]
    cuts = 0
    while not stop.is_set():
        link = rng.choice(links)
        link.sever()
        cuts += 1
        if cuts == 2:
            cut_twice.set()
        await asyncio.sleep(rng.uniform(0.1, 0.6))
        link.restore()
        await asyncio.sleep(rng.uniform(0.0, 0.3))
    return cuts


def test_cut_and_restored_links_under_load_lose_no_acknowledged_write(tmp_path: Path) -> None:
    async def main() -> None:
        async with Fleet(tmp_path, tls=False, reconnect_max_ms=500) as fleet:
            await start_tree(fleet, len(EDGES))
            acked: dict[str, list[str]] = {edge: [] for edge in EDGES}
            stop, cut_twice = asyncio.Event(), asyncio.Event()
            chaos = asyncio.create_task(nemesis(fleet, random.Random(7), stop, cut_twice))
            await asyncio.gather(*(writer(fleet, e, 60, acked[e], cut_twice) for e in EDGES))
            stop.set()
            assert await chaos >= 2  # cuts made while writes were going on
            await fleet.wait_converged(timeout=90)
            elements = sorted(x for log in acked.values() for x in log if not x.startswith("+1"))
            increments = sum(x.startswith("+1") for log in acked.values() for x in log)
            for name in fleet.members:
                got = await fleet.client(name).get("load/seen")
                assert got["AWSet"] == elements, f"{name} lost set elements"
                assert (await fleet.client(name).get("load/count")) == {"PNCounter": increments}
            assert increments == 4 * 60  # every write was acknowledged, links or not
            assert fleet.bytes_sent > 0

    asyncio.run(main())


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "edge_node.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_bad_client_input_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        async with Fleet(tmp_path, tls=False) as fleet:
            node = (await fleet.start("n", "edge")).address
            await fleet.wait_serving()
            await fleet.client("n").inc("kept", 3)
            before = await fleet.client("n").status()
            at = ["--at", node, "--insecure"]
            too_long = "k/" + "x" * 600
            for args in (["put", *at, too_long, "1"], ["add", *at, too_long, "a"],
                         ["inc", *at, too_long, "2"]):  # fmt: skip
                done = await asyncio.to_thread(cli, *args)
                assert done.returncode == 1, done
                assert len(done.stderr.strip().splitlines()) == 1  # one clear line
                assert "INVALID_ARGUMENT" in done.stderr and "500" in done.stderr
            async with grpc.aio.insecure_channel(node) as channel:
                stub = client_pb2_grpc.ClientStub(channel)  # type: ignore[no-untyped-call]
                for request in (
                    # an unknown type tag, no operation at all, a value that is not JSON
                    client_pb2.UpdateRequest(key="k", remove_key=99),  # type: ignore[arg-type]
                    client_pb2.UpdateRequest(key="k"),  # no operation
                    client_pb2.UpdateRequest(key="k", register_set_json="{not json"),
                ):
                    try:
                        await stub.Update(request, timeout=10)
                        raise AssertionError(f"accepted {request}")
                    except grpc.aio.AioRpcError as exc:
                        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc
            after = await fleet.client("n").status()
            assert after["digest"] == before["digest"]  # nothing stored changed
            assert after["version_vector"] == before["version_vector"]
            keys = json.loads((await asyncio.to_thread(cli, "keys", *at, "--json")).stdout)
            assert keys == {"keys": [{"key": "kept", "type": "PNCounter"}]}

    asyncio.run(main())


class FirstPortTaken(LoopbackNetwork):
    """Places the cloud first on ``taken``, a port another process holds."""

    def __init__(self, taken: str) -> None:
        super().__init__()
        self.taken: str | None = taken

    def place(self, member: str) -> tuple[str, str]:
        if member == "cloud" and self.taken is not None:
            address, self.taken = self.taken, None
            return address, address
        return super().place(member)


def test_a_member_whose_port_was_taken_moves_and_its_dialers_follow(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = f"127.0.0.1:{squatter.getsockname()[1]}"

        async def main() -> None:
            async with Fleet(tmp_path, tls=False, network=FirstPortTaken(taken)) as fleet:
                await fleet.start("cloud", "cloud")
                await fleet.start("e1", "edge", upstreams=["cloud"])
                await fleet.wait_serving()
                assert fleet.members["cloud"].address != taken
                assert "was taken; moving to" in (tmp_path / "cloud.log").read_text()
                await fleet.client("e1").inc("moved", 2)
                await fleet.wait_converged(timeout=30)  # e1 reached it through its link
                assert await fleet.client("cloud").get("moved") == {"PNCounter": 2}

        asyncio.run(main())
