"""Catch-up by digest: a peer left behind is brought level range by range."""

from __future__ import annotations

import os
import random
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync import GCounter, LWWRegister, Timestamp
from sync._catchup import CatchUp
from sync._digest import DigestTree
from sync._keyspace import storage_key
from sync._memnet import MemoryNetwork
from sync._replica import Replica, ReplicaConfig
from sync._storage import MemoryStorage, StoreMeta, WriteBatch

SMALL_LOG = ReplicaConfig(log_max_entries=5)
TOTAL = int(os.environ.get("EDGESYNC_CATCHUP_KEYS", "1000000"))
CHANGED = TOTAL // 100


def seeded_storage(node_id: str, total: int) -> MemoryStorage:
    """A store already holding ``total`` registers written by another node.

    Entries are stamped from one encoded template (fixed-width values), so a
    million keys take seconds to make; the replica still decodes and checks each.
    """
    template = LWWRegister()
    template.set("seed@0000000000000001", "v0000000", Timestamp(1_700_000_000_000))
    raw = template.encode()
    at = raw.index(b"v0000000")
    batch = WriteBatch(meta=StoreMeta(node_id, epoch=1 + len(node_id)))
    tag = LWWRegister.TYPE_TAG
    for i in range(total):
        digits = b"%07d" % i
        batch.entries[storage_key((f"k{i:07d}", tag))] = raw[: at + 1] + digits + raw[at + 8 :]
    storage = MemoryStorage()
    storage.commit(batch)
    return storage


def two_nodes(total: int) -> MemoryNetwork:
    net = MemoryNetwork(random.Random(42))
    for name in ("a", "b"):
        net.add(name, storage=seeded_storage(name, total), config=SMALL_LOG)
    net.link("a", "b")
    net.run()
    return net


def set_register(r: Replica, path: str, value: str) -> None:
    ts = r.hlc.now()
    r.update(path, LWWRegister, lambda g: g.set(r.actor, value, ts))


def change_keys(net: MemoryNetwork, name: str, count: int, total: int) -> list[str]:
    r = net.nodes[name].replica
    paths = [f"k{i:07d}" for i in random.Random(7).sample(range(total), count)]
    for n, path in enumerate(paths):
        set_register(r, path, f"new{n}")
        if n % 10 == 9:
            net.flush(name)
    net.flush(name)
    return paths


def test_replicas_that_already_agree_settle_in_one_round_trip() -> None:
    net = two_nodes(2_000)
    a = net.nodes["a"].replica
    session = a.last_catch_up
    assert session is not None and session.pushed_keys == 0
    assert a.tree.root() == net.nodes["b"].replica.tree.root()


def test_digest_catch_up_finds_differences_in_both_directions_and_converges() -> None:
    net = two_nodes(5_000)
    net.partition("a", "b")
    changed_a = change_keys(net, "a", 600, 5_000)  # more than the log keeps
    b = net.nodes["b"].replica
    for i in range(30):
        b.update(f"b-only/{i}", GCounter, lambda c: c.increment(b.actor, 1))
    net.flush("b")
    net.heal("a", "b")
    net.run()
    a = net.nodes["a"].replica
    assert a.tree.root() == b.tree.root() and net.digests()["a"] == net.digests()["b"]
    assert b.get(changed_a[0], LWWRegister).value() == "new0"  # type: ignore[union-attr]
    assert a.get("b-only/7", GCounter) is not None


@pytest.mark.slow
@pytest.mark.timeout(1200)  # a million keys decoded twice: minutes on a loaded machine
def test_offline_replica_catches_up_on_a_million_keys_with_under_5_percent_of_the_bytes() -> None:
    started = time.monotonic()
    net = two_nodes(TOTAL)
    a, b = net.nodes["a"].replica, net.nodes["b"].replica
    assert a.tree.root() == b.tree.root() and len(b.keyspace) == TOTAL
    net.partition("a", "b")  # b goes offline
    changed = change_keys(net, "a", CHANGED, TOTAL)
    assert a.log.first_seq() > 1  # the log no longer holds what b missed
    full_state = len(a.keyspace.encode())
    before = net.stats.bytes_sent
    net.heal("a", "b")
    net.run()
    sent = net.stats.bytes_sent - before
    assert a.tree.root() == b.tree.root() and len(b.keyspace) == TOTAL
    for path in random.Random(1).sample(changed, 200):
        assert b.get(path, LWWRegister).value() == a.get(path, LWWRegister).value()  # type: ignore[union-attr]
    session = a.last_catch_up
    assert session is not None and session.pushed_keys >= CHANGED
    ratio = sent / full_state
    print(
        f"\ncatch-up: {TOTAL:,} keys, {CHANGED:,} changed: {sent:,} bytes sent "
        f"of a {full_state:,}-byte state ({ratio:.2%}); {session.pushed_keys:,} keys pushed; "
        f"{time.monotonic() - started:.0f} s"
    )
    assert ratio < 0.05


@given(st.dictionaries(st.text(max_size=8), st.binary(max_size=8), max_size=300))
def test_bulk_loading_a_digest_tree_equals_setting_each_key(entries: dict[str, bytes]) -> None:
    one_by_one, bulk = DigestTree(), DigestTree()
    keys = [((path, 1), value) for path, value in entries.items()]
    for key, value in keys:
        one_by_one.set(key, value)
    bulk.load((key, storage_key(key), value) for key, value in keys)
    assert bulk.root() == one_by_one.root()  # reading the root hashes in pending keys
    assert (bulk.fps, bulk.counts, bulk.buckets) == (
        one_by_one.fps, one_by_one.counts, one_by_one.buckets
    )  # fmt: skip
    assert bulk.positions == one_by_one.positions


def stalled_session(net: MemoryNetwork) -> CatchUp:
    """Cut a and b once a's catch-up session toward b is under way; return it."""
    a, b = net.nodes["a"].replica, net.nodes["b"].replica
    while not a.catchups or b.links["a"].remote is None:  # both said hello
        assert net.step(), "no catch-up session started"
    net.partition("a", "b")  # a kept stream: nothing tells either side
    [(_, session)] = a.catchups.values()
    return session


def test_a_stalled_catch_up_backs_off_and_resumes_when_the_link_is_heard() -> None:
    net = two_nodes(2_000)
    net.partition("a", "b")
    change_keys(net, "a", 300, 2_000)  # more than the log keeps: b needs a catch-up
    net.heal("a", "b")
    session = stalled_session(net)
    config = net.nodes["a"].replica.config
    sent, requests = session.bytes_sent, sum(len(raw) for raw, _ in session.outstanding.values())
    for _ in range(700):  # 70 s of 100 ms ticks with the link cut
        net.tick()
    # Resent 2, 4, 8, 16 and 32 s after the last: five times, not thirty-five.
    assert session.timeouts == 5
    assert session.bytes_sent - sent == 5 * requests
    assert config.retransmit_max_ms == 32_000
    net.heal("a", "b", reconnect=False)
    healed_at = net.now
    a = net.nodes["a"].replica
    while any(running is session for _, running in a.catchups.values()):
        if not net.step():
            net.tick()
    # A's next tick probed b, whose answer resent the requests: well before a timer.
    assert net.now - healed_at < config.retransmit_ms
    net.run()
    assert net.digests()["a"] == net.digests()["b"]
