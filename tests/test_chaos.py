"""The chaos harness: a short run on real daemons, and checkers that catch broken outcomes."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import socket
import subprocess
import sys
import time

import pytest

from sim.chaos import History, Observed, Topology, check, ends, hears_from, members_of, partition
from sim.netns import PREFIX, can_use_namespaces, ip
from sim.proxy import LinkProxy
from sim.wire import Faults, Switch, Wire


def histories() -> dict[str, History]:
    e1 = History(added={"e1-1", "e1-2", "e1-3"}, removed={"e1-2"}, increments=3)
    e1.register = 3
    e2 = History(added={"e2-1"}, maybe={"e2-2"}, increments=1, maybe_increments=1)
    e2.register, e2.register_failed = 1, {2}
    return {"e1": e1, "e2": e2}


def test_a_correct_outcome_passes_including_writes_that_timed_out() -> None:
    for extra, count, late in (({"e2-2"}, 5, 2), (set(), 4, 1)):
        seen = Observed({"e1-1", "e1-3", "e2-1"} | extra, count, {"e1": 3, "e2": late})
        assert check(histories(), "cloud", seen) == []


def test_a_register_whose_every_write_timed_out_may_be_absent() -> None:
    # CI seed 3 killed e4 before its first write was acknowledged: None there is correct.
    e4 = History(register_failed={1, 2})
    for got in (None, 1, 2):
        assert check({"e4": e4}, "cloud", Observed(set(), 0, {"e4": got})) == []
    assert "chaos/reg/e4 = 3" in check({"e4": e4}, "cloud", Observed(set(), 0, {"e4": 3}))[0]
    e4.register = 3
    assert "chaos/reg/e4 = None" in check({"e4": e4}, "cloud", Observed(set(), 0, {"e4": None}))[0]


@pytest.mark.parametrize(
    ("seen", "complaint"),
    [
        (Observed({"e1-1", "e2-1"}, 4, {"e1": 3, "e2": 1}), "acknowledged adds missing"),
        (Observed({"e1-1", "e1-2", "e1-3", "e2-1"}, 4, {"e1": 3, "e2": 1}), "removes undone"),
        (Observed({"e1-1", "e1-3", "e2-1"}, 3, {"e1": 3, "e2": 1}), "counter 3"),
        (Observed({"e1-1", "e1-3", "e2-1"}, 6, {"e1": 3, "e2": 1}), "counter 6"),
        (Observed({"e1-1", "e1-3", "e2-1"}, 4, {"e1": 2, "e2": 1}), "chaos/reg/e1 = 2"),
    ],
)
def test_each_broken_outcome_is_caught(seen: Observed, complaint: str) -> None:
    found = check(histories(), "cloud", seen)
    assert len(found) == 1 and complaint in found[0], found


def run_chaos(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "edge_node.cli", "sim", "chaos", "--json", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=280, check=False)


@pytest.mark.parametrize(
    "network",
    [
        pytest.param(
            "namespaces",
            marks=pytest.mark.skipif(not can_use_namespaces(), reason="needs root and netns"),
        ),
        "loopback",
    ],
)
def test_a_short_chaos_run_loses_no_acknowledged_write(network: str) -> None:
    extra = ["--loopback"] if network == "loopback" else []
    done = run_chaos("--seed", "3", "--steps", "3", *extra)
    assert done.returncode == 0, done.stdout + done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["seed"] == 3 and outcome["converged"] and outcome["violations"] == []
    assert outcome["acknowledged"] > 0 and len(outcome["faults"]) == 3
    if network == "loopback":
        assert "fault-injecting proxy" in done.stderr or "loopback" in done.stderr
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    assert PREFIX not in listed.stdout  # every namespace removed


# ---- the partition shapes' cut sets (pure: no fleet) ----------------------------------

TOPOLOGY = Topology(4)
LINKS = TOPOLOGY.links()


def components(links: list[str], cut: list[str]) -> list[set[str]]:
    """The groups of members that can still reach each other with ``cut`` down."""
    groups: list[set[str]] = [{m} for m in members_of(links)]
    for link in links:
        if link in cut:
            continue
        a, b = ends(link)
        joined = [g for g in groups if a in g or b in g]
        groups = [g for g in groups if g not in joined] + [set().union(*joined)]
    return groups


def test_the_fleet_has_the_links_the_shapes_are_drawn_on() -> None:
    assert sorted(LINKS) == sorted(
        ["r1->cloud", "r2->cloud", "e1->r1", "e2->r1", "e3->r2", "e4->r2", "e3->e1"]
    )


def crossing(side: set[str]) -> list[str]:
    return sorted(link for link in LINKS if len(set(ends(link)) & side) == 1)


@pytest.mark.parametrize("seed", range(20))
def test_minority_cuts_a_connected_minority_from_the_rest(seed: int) -> None:
    cut = sorted(partition("minority", LINKS, TOPOLOGY, random.Random(seed)))
    members = members_of(LINKS)
    # Some 3 of the 7 members (a minority) are cut from the rest along every link
    # between them and no other, and stay joined among themselves.
    sides = [set(s) for s in itertools.combinations(members, 3) if crossing(set(s)) == cut]
    assert sides, cut
    assert any(side in components(LINKS, cut) for side in sides)


def overlapping_but_not_one_view(heard: dict[str, set[str]]) -> bool:
    views = list(heard.values())
    return all(a & b for a in views for b in views) and len({frozenset(v) for v in views}) > 1


@pytest.mark.parametrize("seed", range(6))
def test_ring_keeps_everyone_joined_but_no_two_views_alike(seed: int) -> None:
    cut = partition("ring", LINKS, TOPOLOGY, random.Random(seed))
    assert cut in (["e1->r1"], ["e3->r2"])
    assert len(components(LINKS, cut)) == 1  # nobody is apart: a ring opened, not split
    heard = hears_from(LINKS, cut)
    assert overlapping_but_not_one_view(heard)
    opened = ends(cut[0])[0]  # the edge whose uplink is cut hears only its peer
    peer = {"e1": "e3", "e3": "e1"}[opened]
    assert heard[opened] == {opened, peer} and len(heard[peer]) == 7
    assert all(heard[m] == set(heard) - {opened} for m in heard if m not in (opened, peer))


def test_no_other_cut_of_up_to_three_links_is_a_ring() -> None:
    rings = [
        sorted(cut)
        for k in range(4)
        for cut in itertools.combinations(LINKS, k)
        if overlapping_but_not_one_view(hears_from(LINKS, list(cut)))
    ]
    assert rings == [["e1->r1"], ["e3->r2"]]


def test_no_cut_of_this_fleet_gives_everyone_a_majority_view_with_views_unequal() -> None:
    # Why the ring is not Jepsen's every-node-sees-a-majority: this fleet has no such cut.
    for k in range(len(LINKS) + 1):
        for cut in itertools.combinations(LINKS, k):
            views = hears_from(LINKS, list(cut)).values()
            assert not (all(len(v) >= 4 for v in views) and len({frozenset(v) for v in views}) > 1)


def test_uncut_every_member_hears_every_other() -> None:
    assert all(len(v) == 7 for v in hears_from(LINKS, []).values())


@pytest.mark.parametrize("seed", range(6))
def test_stall_holds_one_link_and_the_other_shapes_cut_what_they_say(seed: int) -> None:
    rng = random.Random(seed)
    assert len(stall := partition("stall", LINKS, TOPOLOGY, rng)) == 1 and stall[0] in LINKS
    isolated = partition("isolate-node", LINKS, TOPOLOGY, rng)
    assert any(len(g) == 1 for g in components(LINKS, isolated))
    assert sorted(partition("three-way-split", LINKS, TOPOLOGY, rng)) == [
        "e3->e1", "r1->cloud", "r2->cloud",
    ]  # fmt: skip


# ---- a stalled link holds what is sent and delivers it late, in order ---------------------


def test_a_stalled_proxy_holds_the_stream_then_delivers_it_in_order() -> None:
    asyncio.run(stalled_proxy())


async def stalled_proxy() -> None:
    received = bytearray()
    got_some = asyncio.Event()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(1 << 16):
            received.extend(chunk)
            got_some.set()
        writer.close()

    server = await asyncio.start_server(sink, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proxy = LinkProxy("a->b", f"127.0.0.1:{port}")
    host, proxy_port = (await proxy.start()).rsplit(":", 1)
    _, writer = await asyncio.open_connection(host, int(proxy_port))
    writer.write(b"before;")
    await writer.drain()
    await asyncio.wait_for(got_some.wait(), 30)
    proxy.set_faults(Faults(stall=True))
    for i in range(100):
        writer.write(f"held {i};".encode())
    await writer.drain()
    await asyncio.sleep(0.3)  # ample time to pass on what a stall would not hold
    assert bytes(received) == b"before;" and not writer.is_closing()
    proxy.set_faults(Faults())  # the stall ends: the same connection carries it all
    expected = b"before;" + b"".join(f"held {i};".encode() for i in range(100))
    while len(received) < len(expected):
        got_some.clear()
        await asyncio.wait_for(got_some.wait(), 30)
    assert bytes(received) == expected
    writer.close()
    await writer.wait_closed()
    await proxy.close()
    server.close()
    await server.wait_closed()


ETHERTYPE = 0x88B5  # IEEE local experimental: no stack on the host answers it


@pytest.mark.skipif(not can_use_namespaces(), reason="needs root for veths and raw sockets")
def test_a_stalled_wire_holds_frames_then_delivers_them_in_order() -> None:
    tag = f"{PREFIX}t{os.getpid() % 10000}"
    pairs = [(f"{tag}ao", f"{tag}ai"), (f"{tag}bo", f"{tag}bi")]
    switch = Switch(random.Random(1))
    try:
        for outer, inner in pairs:
            ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            ip("link", "set", outer, "up")
            ip("link", "set", inner, "up")
        wire = Wire("a->b", pairs[0][0], pairs[1][0])
        switch.add(wire)
        switch.start()
        with packet_socket(pairs[0][1]) as send, packet_socket(pairs[1][1]) as receive:
            stall_and_resume(switch, wire, send, receive)
    finally:
        switch.close()
        for outer, _ in pairs:
            subprocess.run(["ip", "link", "del", outer], capture_output=True, check=False)


def frame(i: int) -> bytes:
    header = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + ETHERTYPE.to_bytes(2, "big")
    return header + i.to_bytes(4, "big") + b"\x00" * 42  # padded to Ethernet's minimum


def payload(data: bytes) -> int:
    return int.from_bytes(data[14:18], "big")


def packet_socket(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETHERTYPE))
    s.bind((ifname, 0))
    s.settimeout(30)
    return s


def stall_and_resume(
    switch: Switch, wire: Wire, send: socket.socket, receive: socket.socket
) -> None:
    """Numbered frames sent into a stalled wire are held, none passes, and all arrive
    in order when it resumes."""
    send.send(frame(0))
    assert payload(receive.recv(2048)) == 0  # a clean wire forwards at once
    switch.set_faults("a->b", Faults(stall=True))
    for i in range(1, 51):
        send.send(frame(i))

    def held() -> list[int]:  # ours only: the host's IPv6 chatter on the veths is held too
        return [payload(f) for _, f in wire.held if f[12:14] == ETHERTYPE.to_bytes(2, "big")]

    deadline = time.monotonic() + 30
    while len(held()) < 50 and time.monotonic() < deadline:
        time.sleep(0.02)  # wait for the switch to take them in, not for a result
    assert held() == list(range(1, 51)) and wire.dropped == 0
    receive.setblocking(False)
    with pytest.raises(BlockingIOError):
        receive.recv(2048)  # held, so none has reached the far side
    receive.settimeout(30)
    switch.set_faults("a->b", Faults())
    assert [payload(receive.recv(2048)) for _ in range(50)] == list(range(1, 51))
    assert wire.held == []


# ---- the coverage figure on real daemons ---------------------------------------------------


def test_the_coverage_run_gives_each_kind_its_own_row() -> None:
    # Two of the new kinds (about 12 s each on loopback): `ring` cuts an edge's uplink,
    # `stall` holds a link; `minority` cuts as the older shapes do (its cut set is above).
    done = run_chaos("--each", "1", "--faults", "ring,stall", "--steps", "1", "--loopback")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["kind"] for r in rows] == ["ring", "stall"]
    for row in rows:
        assert row["seeds"] == [1] and row["converged"] == 1 and row["violations"] == 0
        assert row["lost"] == 0 and row["acknowledged"] > 0
        (outcome,) = row["outcomes"]
        assert outcome["faults"][0].startswith(row["kind"] + ":")
