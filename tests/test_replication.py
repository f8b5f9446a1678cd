"""Replicas over the in-memory network: loss, duplication, reordering, partitions."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from sync import CRDT, AWSet, GCounter, Keyspace, LWWRegister, MVRegister, PNCounter, Timestamp
from sync._errors import ClockSkewError, ProtocolError
from sync._memnet import Faults, MemoryNetwork, introduce
from sync._messages import Deltas, ProbeAck, decode_message, encode_message
from sync._policy import LinkPolicy
from sync._propagation import probe_stamp
from sync._replica import Replica, ReplicaConfig
from sync._storage import MemoryStorage

NAMES = ("a", "b", "c", "d")


def mesh(seed: int, faults: Faults) -> MemoryNetwork:
    net = MemoryNetwork(random.Random(seed), faults)
    for name in NAMES:
        net.add(name)
    for i, a in enumerate(NAMES):
        for b in NAMES[i + 1 :]:
            net.link(a, b)
    net.run()
    return net


def random_writes(net: MemoryNetwork, rng: random.Random, n: int) -> dict[str, int]:
    """Writes of every kind on random nodes; returns expected counter totals."""
    expected: dict[str, int] = {}
    for i in range(n):
        name = rng.choice(sorted(net.nodes))
        r = net.nodes[name].replica
        path = f"k{rng.randrange(6)}"
        cls, mutate = random_op(r, rng, i)
        if cls is PNCounter:
            expected[path] = expected.get(path, 0) + i % 3 + 1
        r.update(path, cls, mutate)
        net.flush(name)
        if rng.random() < 0.3:
            for _ in range(rng.randrange(5)):
                net.step()
    return expected


def random_op(r: Replica, rng: random.Random, i: int) -> tuple[type[CRDT], Callable[[Any], Any]]:
    kind = rng.randrange(5)
    if kind == 0:
        return PNCounter, lambda c: c.increment(r.actor, i % 3 + 1)
    if kind == 1:
        return AWSet, lambda s: s.add(r.actor, i % 7)
    if kind == 2:
        ts = r.hlc.now()
        return LWWRegister, lambda g: g.set(r.actor, i, ts)
    if kind == 3:
        return MVRegister, lambda g: g.write(r.actor, i)
    return AWSet, lambda s: s.remove(i % 7)


@pytest.mark.parametrize("seed", range(6))
def test_lossy_duplicating_reordering_network_converges_and_log_drains(seed: int) -> None:
    net = mesh(seed, Faults(loss=0.2, duplicate=0.2, reorder=True))
    rng = random.Random(seed)
    expected = random_writes(net, rng, 200)
    net.run()
    assert len(set(net.digests().values())) == 1, net.digests()
    some = net.nodes["a"].replica
    for path, total in expected.items():
        counter = some.get(path, PNCounter)
        assert counter is not None and counter.value() == total
    for node in net.nodes.values():
        assert len(node.replica.log) == 0, node.replica.log  # every peer acknowledged
    assert net.stats.dropped > 0 and net.stats.duplicated > 0


def test_partition_heal_converges_with_writes_on_both_sides() -> None:
    net = mesh(7, Faults(loss=0.05, duplicate=0.05))
    for x in ("a", "b"):
        for y in ("c", "d"):
            net.partition(x, y)
    rng = random.Random(7)
    random_writes(net, rng, 100)
    net.run()
    d = net.digests()
    assert d["a"] == d["b"] and d["c"] == d["d"] and d["a"] != d["c"]
    for x in ("a", "b"):
        for y in ("c", "d"):
            net.heal(x, y)
    net.run()
    assert len(set(net.digests().values())) == 1


def test_no_back_propagation_and_local_keys_stay_home() -> None:
    net = MemoryNetwork(random.Random(1))
    for name in ("a", "b"):
        net.add(name)
    net.link("a", "b")
    net.run()
    a = net.nodes["a"].replica
    a.update("local/raw", GCounter, lambda c: c.increment(a.actor, 5))
    net.flush("a")
    a.update("shared", GCounter, lambda c: c.increment(a.actor, 1))
    net.flush("a")
    sent_before = net.stats.bytes_sent
    net.run()
    b = net.nodes["b"].replica
    assert b.get("local/raw", GCounter) is None
    assert b.get("shared", GCounter) is not None
    # b must not echo a's delta back to a: its log entry for it is one a never received
    # (acknowledged by b itself, as an interval holding nothing for a).
    progress = b.log.peers[a.actor]
    assert progress.acked == b.log.next_seq and progress.delivered == 0
    assert net.stats.bytes_sent > sent_before


def test_pull_policy_filters_what_a_peer_accepts() -> None:
    net = MemoryNetwork(random.Random(2))
    for name in ("edge", "hub"):
        net.add(name)
    net.link("edge", "hub", policy_b=LinkPolicy(pull=("alerts/",)))
    net.run()
    edge = net.nodes["edge"].replica
    for path in ("alerts/pump", "metrics/x"):
        edge.update(path, GCounter, lambda c: c.increment(edge.actor, 1))
        net.flush(edge.node_id)
    net.run()
    hub = net.nodes["hub"].replica
    assert [p for p, _ in hub.keyspace.keys()] == ["alerts/pump"]


def test_a_peer_behind_the_collected_log_is_caught_up() -> None:
    net = MemoryNetwork(random.Random(3))
    from sync._replica import ReplicaConfig

    small_log = ReplicaConfig(log_max_entries=5, batch_bytes=200)
    for name in ("a", "b"):
        net.add(name, config=small_log)
    net.link("a", "b")
    net.run()
    net.partition("a", "b")
    a = net.nodes["a"].replica
    for i in range(40):
        a.update(f"k{i}", GCounter, lambda c: c.increment(a.actor, 1))
        net.flush("a")
    assert a.log.first_seq() > 1  # the bound collected entries b still needed
    net.heal("a", "b")
    net.run()
    assert net.digests()["a"] == net.digests()["b"]
    assert {"a: catch-up started", "a: catch-up done"} <= set(net.stats.events)


def test_status_reports_identity_digest_and_lag() -> None:
    net = mesh(4, Faults())
    r: Replica = net.nodes["a"].replica
    status = r.status()
    assert status["id"] == "a" and status["actor"] == r.actor
    assert isinstance(status["digest"], str) and len(status["digest"]) == 64


def test_a_new_link_sends_each_delta_once() -> None:
    net = MemoryNetwork(random.Random(0), Faults(reorder=False))
    for name in ("a", "b"):
        net.add(name)
    net.link("a", "b")
    net.run()
    a = net.nodes["a"].replica
    a.update("k", GCounter, lambda c: c.increment(a.actor, 1))
    net.flush("a")
    deltas = [m for m in net.pending if decode_message(m[2]).__class__ is Deltas]
    net.run()
    assert len(deltas) == 1 and net.stats.delivered == 4 + 2  # hellos, interval, ack


CLOCK = itertools.count(1_700_000_000_000).__next__


EPOCH_RNG = random.Random(7)


def EPOCHS() -> int:
    return EPOCH_RNG.getrandbits(64)


def deltas_in(ready: Any) -> int:
    return sum(decode_message(data).__class__ is Deltas for _, data in ready.messages)


def test_intervals_per_ready_sends_a_backlog_one_interval_per_ready() -> None:
    """With a cap, each ready() builds one interval per link and says there is more,
    until the window is full; without one, the first ready() fills the window."""
    for cap, expected in ((1, [1] * 8), (None, [8])):
        config = ReplicaConfig(batch_bytes=200, intervals_per_ready=cap)
        a, b = (Replica.open(MemoryStorage(), n, CLOCK, EPOCHS, config) for n in "ab")
        introduce(a, "b", b, "a")
        a.disconnect("b")
        for i in range(40):  # a backlog of 40 entries, one interval each
            bump_own(a, f"k{i}")
            a.ready()
        b.disconnect("a")
        introduce(a, "b", b, "a")  # the link is back: a resumes where b's Hello says
        counts, more = [], True
        while more:
            ready = a.ready()
            counts.append(deltas_in(ready))
            more = ready.more
        assert counts == expected


def test_a_busy_peer_working_through_a_full_window_is_resent_nothing() -> None:
    """A window of 32 intervals to a peer that takes 150 ms over each (so the last is
    acknowledged seconds after it was sent, past the 2 s timeout): every ack restarts
    the timer, so each interval crosses once. (Timed from their sends, the 100
    intervals crossed 683 times.)"""
    now = [1_700_000_000_000]

    def clock() -> int:
        return now[0]

    a = Replica.open(MemoryStorage(), "a", clock, EPOCHS, ReplicaConfig(window=32, batch_bytes=64))
    b = Replica.open(MemoryStorage(), "b", clock, EPOCHS)
    introduce(a, "b", b, "a")
    stream: list[bytes] = []  # in order, as a gRPC stream carries them

    def send() -> int:
        """a's ready(): its messages onto the stream; how many were Deltas."""
        ready = a.ready()
        stream.extend(data for _, data in ready.messages)
        return deltas_in(ready)

    sent = 0
    for i in range(100):  # 100 log entries, one interval each (batch_bytes)
        bump_own(a, f"k{i}")
        sent += send()
    ticked = now[0]
    while stream:
        now[0] += 150  # b's time over one message
        b.receive("a", stream.pop(0))
        for _, back in b.ready().messages:
            a.receive("b", back)
        if now[0] - ticked >= 200:  # a's ticker
            a.tick()
            ticked = now[0]
        sent += send()
    assert b.received[a.actor] == a.log.next_seq and sent == 100


def test_a_hub_with_one_peer_logs_nothing_of_it_and_a_later_peer_is_caught_up() -> None:
    """What the only tracked peer sends is needed by no peer: the hub stores it once
    (no log entry), keeps that peer up to date, and a peer that comes later is
    caught up from the state."""
    net = MemoryNetwork(random.Random(2), Faults(reorder=False))
    for name in ("hub", "p", "q"):
        net.add(name)
    net.link("hub", "p")
    net.run()
    hub, p = net.nodes["hub"].replica, net.nodes["p"].replica
    for i in range(20):
        bump_own(p, f"k{i}")
        net.flush("p")
        net.run()
    assert len(hub.log) == 0 and hub.log.next_seq > 20  # counted, not kept
    assert not hub.catchups and "hub: catch-up started" not in net.stats.events
    bump_own(hub, "from-hub")  # the hub's own update still reaches p
    net.flush("hub")
    net.run()
    assert net.digests(["hub", "p"])["hub"] == net.digests(["hub", "p"])["p"]
    net.link("hub", "q")
    net.run()
    assert len(set(net.digests().values())) == 1
    assert "hub: catch-up started" in net.stats.events


def test_writes_made_before_any_peer_reach_a_peer_that_comes_later() -> None:
    net = MemoryNetwork(random.Random(5))
    for name in ("a", "b"):
        net.add(name)
    a = net.nodes["a"].replica
    for i in range(10):
        a.update(f"k{i}", GCounter, lambda c: c.increment(a.actor, 1))
        net.flush("a")
    assert len(a.log) == 0  # nobody to send to: nothing logged
    net.link("a", "b")
    net.run()
    assert net.digests()["a"] == net.digests()["b"]


def test_an_edge_link_refuses_updates_the_edge_did_not_make() -> None:
    net = MemoryNetwork(random.Random(9))
    for name in ("c", "edge", "hub"):
        net.add(name)
    net.link("c", "edge")
    hub, edge = net.nodes["hub"].replica, net.nodes["edge"].replica
    hub.connect("edge", certified_node="edge", own_writes_only=True)  # as an edge cert says
    net.flush("hub")
    edge.connect("hub")
    net.flush("edge")
    net.run()
    c = net.nodes["c"].replica
    c.update("from-c", GCounter, lambda g: g.increment(c.actor, 1))
    net.flush("c")
    edge.update("from-edge", GCounter, lambda g: g.increment(edge.actor, 1))
    net.flush("edge")
    for _ in range(200):
        if not net.step():
            net.tick(500)
    assert hub.get("from-edge", GCounter) is not None
    assert hub.get("from-c", GCounter) is None  # relayed by an edge: refused
    assert any("may send only its own updates" in r for r in net.stats.rejected)


def bump_own(r: Replica, path: str) -> None:
    r.update(path, GCounter, lambda g: g.increment(r.actor, 1))


def test_peered_edges_send_hubs_only_their_own_updates_and_everything_converges() -> None:
    from sync._replica import ReplicaConfig

    net = MemoryNetwork(random.Random(10))
    edge_config = ReplicaConfig(relay=False)
    for name in ("e1", "e2"):
        net.add(name, config=edge_config)
    net.add("hub")
    net.link("e1", "e2")  # edges peer with each other
    for edge in ("e1", "e2"):
        link_to_hub(net, edge)
    for edge in ("e1", "e2"):
        bump_own(net.nodes[edge].replica, f"from/{edge}")
        net.flush(edge)
    net.run()
    # The network reorders: a message may overtake the Hello it follows (refused, then
    # resent). No other refusal: nothing foreign reached the hub from an edge.
    assert [r for r in net.stats.rejected if "before Hello" not in r] == []
    assert len(set(net.digests().values())) == 1


def test_an_edge_logs_only_its_own_updates_and_still_sends_them_all() -> None:
    """An edge never relays, so what it merges from its hub goes to its store only."""
    from sync._replica import ReplicaConfig

    net = MemoryNetwork(random.Random(11))
    for name in ("e1", "e2"):
        net.add(name, config=ReplicaConfig(relay=False))
    net.add("hub")
    for edge in ("e1", "e2"):
        link_to_hub(net, edge)
    e1, e2, hub = (net.nodes[n].replica for n in ("e1", "e2", "hub"))
    for i in range(3):  # e2's updates reach e1 through the hub, in three deltas
        bump_own(e2, f"from/e2/{i}")
        net.flush("e2")
        net.run()
    assert all(e1.get(f"from/e2/{i}", GCounter) is not None for i in range(3))
    assert e1.log.next_seq == 1 and not e1.log.entries  # nothing logged, no seq used
    for i in range(2):
        bump_own(e1, f"from/e1/{i}")
        net.flush("e1")
        net.run()
    assert e1.log.next_seq == 3  # its two updates, sent and acknowledged
    assert hub.log.peers[e1.actor].acked > 1 and e1.log.peers[hub.actor].acked == 3
    assert not e1.log.entries  # collected once the hub acknowledged them
    assert len(set(net.digests().values())) == 1


def test_an_edge_resent_a_delta_it_holds_changes_nothing() -> None:
    """An edge joins what it receives whole (it logs none of it, so it skips the novel
    part): a delta sent again after a later one leaves the state and store as they were."""
    from sync._replica import ReplicaConfig

    net = MemoryNetwork(random.Random(13))
    net.add("e1", config=ReplicaConfig(relay=False))
    hub = net.add("hub")
    link_to_hub(net, "e1")
    net.run()
    sent = []
    for n in (1, 2):
        hub.update("k", PNCounter, partial(PNCounter.increment, actor=hub.actor, n=n))
        ready = hub.ready()
        sent += [raw for link, raw in ready.messages if link == "e1"]
        net.deliver_ready("hub", ready)
        net.run()
    e1, store = net.nodes["e1"].replica, net.nodes["e1"].storage
    before, digest = dict(store.entries()), net.digests()["e1"]
    assert len(sent) == 2 and digest == net.digests()["hub"]
    e1.receive("hub", sent[0])  # the first delta again, after the second
    net.deliver_ready("e1", e1.ready())
    assert dict(store.entries()) == before and net.digests()["e1"] == digest
    assert e1.get("k", PNCounter).value() == 3  # type: ignore[union-attr]


def write_shared(r: Replica, n: int) -> None:
    r.update("shared/n", PNCounter, lambda c: c.increment(r.actor, n))
    r.update("shared/alerts", AWSet, lambda s: s.add(r.actor, f"{r.node_id}-a"))
    r.update("shared/alerts", AWSet, lambda s: s.add(r.actor, f"{r.node_id}-b"))


def test_a_wiped_hub_is_caught_up_by_edges_that_send_only_their_own_part() -> None:
    """Edges share keys, so each edge's copy holds the other's updates; a hub refuses
    those from an edge. Catch-up pushes must carry only the edge's own part."""
    from sync._replica import ReplicaConfig
    from sync._storage import MemoryStorage

    net = MemoryNetwork(random.Random(12))
    edges = ("e1", "e2")
    for edge in edges:
        net.add(edge, config=ReplicaConfig(relay=False))

    def hub_up() -> Replica:
        hub = net.add("hub", MemoryStorage())  # a fresh store: the old one was wiped
        for edge in edges:
            link_to_hub(net, edge)
        return hub

    hub_up()
    for i, edge in enumerate(edges, start=1):
        write_shared(net.nodes[edge].replica, i)
        net.flush(edge)
    net.run()
    e1 = net.nodes["e1"].replica
    e1.update("shared/alerts", AWSet, lambda s: s.remove("e2-b"))  # e1 removes e2's alert
    net.flush("e1")
    net.run()
    assert len(set(net.digests().values())) == 1
    assert all(len(net.nodes[e].replica.log) == 0 for e in edges)  # the log was collected

    hub = hub_up()
    net.run()
    assert not net.stats.rejected, net.stats.rejected
    assert len(set(net.digests().values())) == 1
    counter, alerts = hub.get("shared/n", PNCounter), hub.get("shared/alerts", AWSet)
    assert counter is not None and counter.value() == 3
    assert alerts is not None and alerts.value() == frozenset({"e1-a", "e1-b", "e2-a"})


def link_to_hub(net: MemoryNetwork, edge: str) -> None:
    """Link ``edge`` to "hub", which knows it by its certificate (as over mutual TLS)
    and takes only its own updates; the edge drops a link to it it had, and dials."""
    net.nodes["hub"].replica.connect(edge, certified_node=edge, own_writes_only=True)
    net.flush("hub")
    net.nodes[edge].replica.disconnect("hub")
    net.nodes[edge].replica.connect("hub")
    net.flush(edge)


def add_own_name(r: Replica, path: str) -> None:
    r.update(path, AWSet, lambda s: s.add(r.actor, r.node_id))


def test_an_edge_catch_up_may_resend_updates_the_hub_already_holds() -> None:
    """Found by the simulator (sim/findings/): an edge that wrote before meeting its hub
    catches the hub up by pushing whole keys, which hold other nodes' updates it got
    meanwhile; the hub used to refuse the push forever, and the edge's own writes with it.
    """
    from sync._replica import ReplicaConfig

    net = MemoryNetwork(random.Random(11))
    net.add("e1", config=ReplicaConfig(relay=False))
    net.add("hub")
    net.add("other", config=ReplicaConfig(relay=False))  # so e1's update reaches the hub
    net.link("hub", "other")  # only through e1
    e1, other = net.nodes["e1"].replica, net.nodes["other"].replica
    for r in (e1, other):  # both write to one key; e1 has met nobody yet
        add_own_name(r, "shared")
        net.flush(r.node_id)
    net.run()
    e1.connect("other")  # e1 gets other's update first, then meets the hub
    net.flush("e1")
    other.connect("e1")
    net.flush("other")
    net.run()
    assert e1.get("shared", AWSet) == other.get("shared", AWSet)
    link_to_hub(net, "e1")
    net.run(max_steps=20_000)  # refused pushes used to keep the network busy forever
    # (This network reorders, so a message may overtake the Hello before it: refused,
    # and sent again. Only that refusal may appear.)
    assert all("before Hello" in r for r in net.stats.rejected), net.stats.rejected
    assert len(set(net.digests().values())) == 1


def test_peered_edges_that_wrote_first_catch_their_hub_up_with_their_own_parts() -> None:
    """Found by the simulator: each edge's catch-up pushed the other's writes, new to
    the hub, which refused both pushes forever (sim/scenarios/edge-peering-catch-up)."""
    from sync._replica import ReplicaConfig

    net = MemoryNetwork(random.Random(12))
    for edge in ("e1", "e2"):
        net.add(edge, config=ReplicaConfig(relay=False))
        add_own_name(net.nodes[edge].replica, "shared")  # before meeting anyone
        net.flush(edge)
    net.add("hub")
    net.link("e1", "e2")
    net.run()
    hub = net.nodes["hub"].replica
    for edge in ("e1", "e2"):
        link_to_hub(net, edge)
    net.run(max_steps=20_000)
    assert not net.stats.rejected
    assert len(set(net.digests().values())) == 1
    assert hub.get("shared", AWSet).value() == {"e1", "e2"}  # type: ignore[union-attr]


# ---- declared sources: hubs do not forward what their peers got directly -----------------


class CountingNetwork(MemoryNetwork):
    """Counts the Deltas messages sent on each link, by (sender, receiver)."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng, Faults(reorder=False))
        self.deltas: dict[tuple[str, str], int] = {}

    def _send(self, src: str, dst: str, data: bytes) -> None:
        if isinstance(decode_message(data), Deltas):
            self.deltas[(src, dst)] = self.deltas.get((src, dst), 0) + 1
        super()._send(src, dst, data)


def hub_mesh() -> CountingNetwork:
    """Three meshed hubs, an edge below h1."""
    net = CountingNetwork(random.Random(4))
    for name in ("h1", "h2", "h3", "e1"):
        net.add(name)
    for a, b in (("h1", "h2"), ("h1", "h3"), ("h2", "h3"), ("e1", "h1")):
        net.link(a, b)
    net.run()
    net.deltas.clear()
    return net


def between(net: CountingNetwork, a: str, b: str) -> int:
    return net.deltas.get((a, b), 0) + net.deltas.get((b, a), 0)


def test_a_hub_does_not_forward_to_a_hub_what_that_hub_had_from_its_source() -> None:
    net = hub_mesh()
    e1 = net.nodes["e1"].replica
    bump_own(e1, "from/e1")
    net.flush("e1")
    net.run()
    assert len(set(net.digests().values())) == 1
    assert between(net, "h2", "h3") == 0  # each had it from h1, directly
    assert net.deltas[("h1", "h2")] == net.deltas[("h1", "h3")] == 1


def test_a_hub_relays_once_a_peer_says_its_direct_link_broke() -> None:
    net = hub_mesh()
    net.partition("h1", "h3")  # silently: both still think the link is up
    bump_own(net.nodes["e1"].replica, "from/e1")
    net.flush("e1")
    net.run()
    h3 = net.nodes["h3"].replica
    assert h3.get("from/e1", GCounter) is None  # h2 left it out: h3 declared h1
    for a, b in (("h1", "h3"), ("h3", "h1")):  # the keepalive fails: the link is down
        net.nodes[a].replica.disconnect(b)
        net.flush(a)
    net.run()
    # Through h2 now: by digest, since h2's log collected the entry once every peer
    # had acknowledged it (h3 by the interval it was left out of).
    assert h3.get("from/e1", GCounter) is not None
    assert "h2: catch-up started" in net.stats.events
    net.heal("h1", "h3")
    net.run()
    assert len(set(net.digests().values())) == 1


def test_a_hub_relays_once_a_peer_stops_answering_on_its_direct_link() -> None:
    net = hub_mesh()
    net.partition("h1", "h3")  # silently; h3 has something for h1, which goes unanswered
    bump_own(net.nodes["h3"].replica, "from/h3")
    net.flush("h3")
    bump_own(net.nodes["e1"].replica, "from/e1")
    net.flush("e1")
    net.run()
    for _ in range(5):  # 2.5 s: h3's interval to h1 is overdue, so h1 is no source of h3's
        net.tick(500)
        net.run()
    h3 = net.nodes["h3"].replica
    assert h3.links["h1"].silent
    assert h3.get("from/e1", GCounter) is not None  # relayed by h2, no link went down
    net.heal("h1", "h3")
    net.run()
    assert not h3.links["h1"].silent
    assert len(set(net.digests().values())) == 1


def restart(net: MemoryNetwork, name: str) -> None:
    """``name`` crashes and comes back on its store; every peer redials it."""
    peers = list(net.nodes[name].replica.links)
    net.add(name, net.nodes[name].storage)
    for peer in peers:
        net.nodes[peer].replica.disconnect(name)
        net.flush(peer)
        net.link(name, peer)


@pytest.mark.parametrize("source_drops", ["after the restart", "while it was down"])
def test_a_restarted_hub_relays_what_it_left_out_before_the_restart(source_drops: str) -> None:
    net = hub_mesh()
    net.add("e2")
    net.link("e2", "h2")
    net.run()
    bump_own(net.nodes["h1"].replica, "from/h1")  # h3 has had something from h1 directly
    net.flush("h1")
    net.run()
    net.partition("e2", "h2")  # e2 goes offline: h2's log keeps what it has not had
    net.partition("h1", "h3")  # silently: h3 still declares h1, so h2 leaves e1's write out
    bump_own(net.nodes["e1"].replica, "from/e1")
    net.flush("e1")
    net.run()
    bump_own(net.nodes["h2"].replica, "from/h2")  # h3's position in h2's log passes it
    net.flush("h2")
    net.run()
    h3 = net.nodes["h3"].replica
    assert h3.get("from/e1", GCounter) is None
    if source_drops == "while it was down":
        h3.disconnect("h1")  # h3's next Hello to h2 no longer names h1
        net.flush("h3")
    restart(net, "h2")  # it forgets which entries it left out for h3, and why
    net.run()
    if source_drops == "after the restart":
        h3.disconnect("h1")  # the keepalive fails: a Sources message drops h1
        net.flush("h3")
        net.run()
    # h2 still holds the entry (for e2), but which entries it left out for h3 went
    # with the restart: only a digest comparison can tell what h3 lacks.
    assert h3.get("from/e1", GCounter) is not None
    assert "h2: catch-up started" in net.stats.events
    for a, b in (("h1", "h3"), ("e2", "h2")):
        net.heal(a, b)
    net.run()
    assert len(set(net.digests().values())) == 1


# ---- stalls: a link that survives a cut (sync/_propagation.py, "Stalls") ----------------------


class KindCountingNetwork(MemoryNetwork):
    """Counts the messages of each kind sent on each directed link, dropped ones too."""

    def __init__(self, rng: random.Random, faults: Faults | None = None) -> None:
        super().__init__(rng, faults)
        self.sent: dict[tuple[str, str, str], int] = {}

    def _send(self, src: str, dst: str, data: bytes) -> None:
        key = kind_of((src, dst, data))
        self.sent[key] = self.sent.get(key, 0) + 1
        super()._send(src, dst, data)

    def deliver_all(self) -> None:
        """Deliver until nothing is pending, with no tick (so no timer fires)."""
        while self.step():
            pass


def stalled(
    *names: str,
    silent_for_ms: int,
    writers: int = 0,
    config: ReplicaConfig | None = None,
    faults: Faults | None = None,
) -> KindCountingNetwork:
    """``names[0]`` linked to each other node, the links then cut (the streams kept),
    a write on each of the first ``writers`` nodes (all by default), and
    ``silent_for_ms`` of ticks every 250 ms."""
    net = KindCountingNetwork(random.Random(7), faults)
    for name in names:
        net.add(name, config=config)
    for other in names[1:]:
        net.link(names[0], other)
    net.run()
    for other in names[1:]:
        net.partition(names[0], other)
    for name in names[: writers or len(names)]:
        bump_own(net.nodes[name].replica, f"from/{name}")
        net.flush(name)
    for _ in range(silent_for_ms // 250):
        net.tick(250)
    return net


def test_a_refused_first_message_from_a_silent_peer_changes_nothing() -> None:
    """A silent peer that is heard again, but with a message we refuse (its clock far
    ahead), stays silent: nothing is declared or resent on its account."""
    net = stalled("a", "b", silent_for_ms=20_000)
    a, b = net.nodes["a"].replica, net.nodes["b"].replica
    assert a.links["b"].silent
    a.ready()
    ahead = Timestamp(net.clock() + 10 * ReplicaConfig().max_ahead_ms, 0)
    delta = Keyspace().apply("far", LWWRegister, lambda g: g.set(b.actor, 1, ahead))
    with pytest.raises(ClockSkewError, match="ahead"):
        a.receive("b", encode_message(Deltas(1, 2, delta.encode())))
    assert a.links["b"].silent
    assert a.ready().messages == []


@pytest.mark.parametrize(
    ("budget", "carried"),
    [(ReplicaConfig().probe_data_bytes, 70), (16, 0), (0, 0)],  # small enough, too big, off
)
def test_a_silent_peer_is_probed_once_a_tick_and_sent_deltas_with_backoff(
    budget: int, carried: int
) -> None:
    net = stalled("a", "b", silent_for_ms=20_000, config=ReplicaConfig(probe_data_bytes=budget))
    assert net.nodes["a"].replica.links["b"].silent
    # Deltas: the first send, then resends at 2, 6 and 14 s (timeouts of 2, 4, 8 s);
    # the fixed 2 s timer resent ten times. Probes: once a tick after the first
    # timeout (2.25 to 20 s: 72 ticks), but for the two that resent instead; each
    # after a copy of the unacknowledged interval when its Deltas fit the budget.
    assert net.sent[("a", "b", "Deltas")] == 4 + carried
    assert net.sent[("a", "b", "Probe")] == 70
    assert ("a", "b", "ProbeAck") not in net.sent  # nothing got through to answer


def test_a_kept_link_resends_as_soon_as_a_probe_is_answered() -> None:
    net = stalled("a", "b", silent_for_ms=20_000)
    net.heal("a", "b", reconnect=False)
    net.tick(250)  # one tick: each side probes the other
    net.deliver_all()  # each hears the other, answers, and resends at once
    assert len(set(net.digests().values())) == 1
    for x, y in (("a", "b"), ("b", "a")):
        state = net.nodes[x].replica.links[y]
        assert not state.silent  # heard from again
        assert net.nodes[x].replica.log.peers[state.remote or ""].timeouts == 0  # acked
    assert net.sent[("a", "b", "ProbeAck")] == net.sent[("b", "a", "ProbeAck")] == 1
    sent = dict(net.sent)
    net.tick(250)
    net.deliver_all()
    assert net.sent == sent  # quiet again: no probes, and an answer is never answered


def test_a_probe_answer_resends_what_the_last_timeout_sent_into_the_cut() -> None:
    # The heal comes 250 ms after the first timeout's resend, which the cut lost; the
    # next timeout is 4 s away, and the resend is not a timeout old. The probe's
    # answer shows it was lost: it was sent before the probe, and its ack never came.
    net = stalled("a", "b", silent_for_ms=2_250, writers=1)
    net.heal("a", "b", reconnect=False)
    net.tick(250)  # a probes b (b owes nothing, so it does not probe a)
    net.deliver_all()
    assert net.sent[("b", "a", "ProbeAck")] == 1
    assert len(set(net.digests().values())) == 1


def test_a_peer_heard_again_brings_the_resends_to_the_other_silent_peers_forward() -> None:
    # h is cut off from p and q; q has written nothing, so only p probes h. When p's
    # probe (or the copy before it) arrives, h resends to q too, without waiting for q
    # to say anything.
    net = stalled("h", "p", "q", silent_for_ms=20_000, writers=2)
    net.heal("h", "p", reconnect=False)
    net.heal("h", "q", reconnect=False)
    net.now += 250
    net.nodes["p"].replica.tick()  # only p's timer: its probe reaches h first
    net.flush("p")
    assert [kind_of(m) for m in net.pending] == [("p", "h", "Deltas"), ("p", "h", "Probe")]
    net.step()  # either: the copy of p's write that goes with the probe, or the probe
    assert ("h", "q", "Deltas") in [kind_of(m) for m in net.pending]
    net.deliver_all()
    assert len(set(net.digests().values())) == 1


def kind_of(message: tuple[str, str, bytes]) -> tuple[str, str, str]:
    src, dst, data = message
    return src, dst, type(decode_message(data)).__name__


def test_awaiting_wakes_a_driver_for_the_next_probe_and_the_backed_off_resend() -> None:
    net = stalled("a", "b", silent_for_ms=2_250)  # the first timeout fired at 2 s
    a = net.nodes["a"].replica
    state = a.links["b"]
    assert state.silent
    first, _ = a.awaiting() or (0, 0)
    assert first == state.probed_at + a.config.probe_ms
    progress = a.log.peers[state.remote or ""]
    assert progress.timeouts == 1  # the next resend waits 4 s, not 2
    assert min(progress.inflight.values()) + 2 * a.config.retransmit_ms > first


def test_a_forged_probe_answer_resends_nothing_that_no_probe_preceded() -> None:
    net = stalled("a", "b", silent_for_ms=1_000, writers=1)  # no timeout yet: no probe
    net.heal("a", "b", reconnect=False)
    sent = net.sent.get(("a", "b", "Deltas"), 0)
    a = net.nodes["a"].replica
    a.receive("b", encode_message(ProbeAck(probe_stamp(net.now))))  # as if probed now
    net.flush("a")
    assert net.sent.get(("a", "b", "Deltas"), 0) == sent


# ---- data in probes (sync/_propagation.py, "Data in probes") ----------------------------------


def test_a_small_backlog_crosses_with_the_first_probe_after_a_heal() -> None:
    net = stalled("a", "b", silent_for_ms=20_000, faults=Faults(reorder=False))
    net.heal("a", "b", reconnect=False)
    a, b = net.nodes["a"].replica, net.nodes["b"].replica
    deltas_before = net.sent[("a", "b", "Deltas")]
    net.now += 250
    a.tick()  # only a's timer: nothing has told either side of the heal
    net.flush("a")
    assert [kind_of(m) for m in net.pending] == [("a", "b", "Deltas"), ("a", "b", "Probe")]
    net.step()  # the copy: b applies it and acknowledges it, before answering the probe
    held = b.get("from/a", GCounter)
    assert held is not None and held.value() == 1
    assert [kind_of(m) for m in net.pending][:2] == [("a", "b", "Probe"), ("b", "a", "Ack")]
    net.deliver_all()
    assert len(set(net.digests().values())) == 1
    progress = a.log.peers[a.links["b"].remote or ""]
    assert progress.acked == a.log.next_seq and not progress.inflight
    # The ack came before the probe's answer: the copy was all a had to send again.
    assert net.sent[("a", "b", "Deltas")] == deltas_before + 1
    assert net.sent[("b", "a", "ProbeAck")] == 1


def test_a_malformed_copy_with_a_probe_is_refused_and_changes_nothing() -> None:
    net = stalled("a", "b", silent_for_ms=20_000, writers=1, faults=Faults(reorder=False))
    net.heal("a", "b", reconnect=False)
    a, b = net.nodes["a"].replica, net.nodes["b"].replica
    net.now += 250
    a.tick()
    net.flush("a")
    copy = decode_message(net.pending[0][2])
    assert isinstance(copy, Deltas)
    truncated = encode_message(Deltas(copy.start, copy.end, copy.payload[:-1]))
    digest, received = b.keyspace.digest(), dict(b.received)
    with pytest.raises(ProtocolError, match="malformed delta payload from a@"):
        b.receive("a", truncated)
    assert b.keyspace.digest() == digest and b.received == received
    assert b.ready().is_empty()  # nothing to persist, no ack
    net.deliver_all()  # the true copy and the probe, as sent
    assert len(set(net.digests().values())) == 1
    assert net.sent[("b", "a", "ProbeAck")] == 1
