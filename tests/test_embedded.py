"""The embedding API on real LMDB directories: durability, group commit, peers."""

from __future__ import annotations

import threading
from collections import deque
from pathlib import Path

import pytest

from sync import AWSet, GCounter, PNCounter
from sync._storage import StorageError, StoreFullError
from sync.adapters.embedded import EmbeddedReplica, open_replica


def test_typed_accessors_write_durably_and_survive_reopen(tmp_path: Path) -> None:
    with open_replica(tmp_path, "pump-4") as r:
        r.counter("line1/anomalies").increment(3)
        r.counter("line1/anomalies").decrement(1)
        r.set("line1/alerts").add("pump-7", "fan-2")
        r.set("line1/alerts").discard("fan-2")
        r.register("line1/threshold").set({"vib": 0.8})
        r.mvregister("line1/note").write("bearing replaced")
        r.flag("line1/maintenance").enable()
        r.maximum("line1/peak").set(4.5)
        r.minimum("line1/low").set(-2)
        r.map("line1/machine").update("runs", GCounter, lambda c, actor: c.increment(actor, 2))
        epoch = r.status()["epoch"]
    with open_replica(tmp_path, "pump-4") as r:
        assert r.value("line1/anomalies") == 2
        assert r.value("line1/alerts") == frozenset({"pump-7"})
        assert r.value("line1/threshold")["vib"] == 0.8
        assert r.value("line1/note") == ("bearing replaced",)
        assert r.value("line1/maintenance") is True
        assert (r.value("line1/peak"), r.value("line1/low")) == (4.5, -2)
        assert r.value("line1/machine") == {("runs", "GCounter"): 2}
        assert r.status()["epoch"] == epoch  # an intact store keeps its epoch
        assert "pump-7" in r.set("line1/alerts")


def test_a_store_refuses_another_node_id(tmp_path: Path) -> None:
    open_replica(tmp_path, "a").close()
    with pytest.raises(StorageError, match="belongs to node 'a'"):
        open_replica(tmp_path, "b")


def test_concurrent_writers_share_commits(tmp_path: Path) -> None:
    writers, each = 8, 100
    with open_replica(tmp_path, "n") as r:
        start = threading.Barrier(writers)

        def write() -> None:
            start.wait()
            for _ in range(each):
                r.counter("hits").increment()

        threads = [threading.Thread(target=write) for _ in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert r.value("hits") == writers * each
        assert r.commits < writers * each  # writes were grouped
    with open_replica(tmp_path, "n") as r:
        assert r.value("hits") == writers * each


def test_concurrent_writers_to_a_filling_store_keep_exactly_what_was_acknowledged(
    tmp_path: Path,
) -> None:
    """Commits fail once the store is full. A failed commit fails its group, and the
    group that applied behind it (its updates were in the memory rebuilt from the
    store): every write that returned is stored, and nothing else is, in memory or
    on disk."""
    writers = 16
    acknowledged: list[set[str]] = [set() for _ in range(writers)]
    with open_replica(tmp_path, "n", max_store_bytes=1024 * 1024) as r:
        start = threading.Barrier(writers)

        def write(w: int) -> None:
            start.wait()
            for i in range(10_000):
                try:
                    r.register(f"blob/{w}/{i}").set("x" * 2000)
                except StoreFullError:
                    return
                acknowledged[w].add(f"blob/{w}/{i}")

        threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        expected = set().union(*acknowledged)
        assert expected and {path for path, _ in r.keys("blob/")} == expected
        store = r.status()["store"]
        assert isinstance(store, dict) and store["max_bytes"] == 1024 * 1024
    with open_replica(tmp_path, "n", max_store_bytes=1024 * 1024) as r:
        assert {path for path, _ in r.keys("blob/")} == expected


def test_bad_updates_raise_and_change_nothing(tmp_path: Path) -> None:
    with open_replica(tmp_path, "n") as r:
        r.set("s").add("x")
        before = r.status()["digest"]
        with pytest.raises(TypeError):
            r.set("s").add(1.5)
        with pytest.raises(ValueError):
            r.register("").set(1)
        with pytest.raises(ValueError):
            r.gcounter("g").increment(-1)
        assert r.status()["digest"] == before


class QueueTransport:
    """Delivers to the peer later, when the test pumps: never re-enters a commit."""

    def __init__(self) -> None:
        self.queue: deque[tuple[EmbeddedReplica, str, bytes]] = deque()
        self.ends: dict[str, tuple[EmbeddedReplica, str]] = {}

    def join(self, a: EmbeddedReplica, b: EmbeddedReplica) -> None:
        self.ends[f"{a.replica.node_id}->{b.replica.node_id}"] = (b, a.replica.node_id)
        self.ends[f"{b.replica.node_id}->{a.replica.node_id}"] = (a, b.replica.node_id)
        a.connect(b.replica.node_id, _Outbox(self, a.replica.node_id))
        b.connect(a.replica.node_id, _Outbox(self, b.replica.node_id))

    def pump(self) -> None:
        while self.queue:
            target, link, data = self.queue.popleft()
            target.deliver(link, data)


class _Outbox:
    def __init__(self, net: QueueTransport, me: str) -> None:
        self.net, self.me = net, me

    def send(self, link: str, data: bytes) -> None:
        target, back = self.net.ends[f"{self.me}->{link}"]
        self.net.queue.append((target, back, data))


def test_two_embedded_replicas_converge_through_a_transport(tmp_path: Path) -> None:
    with open_replica(tmp_path / "a", "a") as a, open_replica(tmp_path / "b", "b") as b:
        net = QueueTransport()
        net.join(a, b)
        a.counter("n").increment(2)
        b.counter("n").increment(5)
        b.set("s").add("x")
        net.pump()
        assert a.value("n") == b.value("n") == 7
        assert a.status()["digest"] == b.status()["digest"]
        assert a.get("s", AWSet) is not None
        assert b.get("n", PNCounter) is not None


def test_a_full_store_refuses_writes_clearly_and_keeps_serving_reads(tmp_path: Path) -> None:
    with open_replica(tmp_path, "n", max_store_bytes=1024 * 1024) as r:
        r.counter("kept").increment(7)
        with pytest.raises(StoreFullError, match="ceiling"):
            for i in range(10_000):
                r.register(f"blob/{i}").set("x" * 4000)
        written = len(r.keys("blob/"))
        assert r.value("kept") == 7  # reads keep working
        digest = r.status()["digest"]
        with pytest.raises(StoreFullError):
            r.register("blob/one-more").set("x" * 4000)
        assert r.status()["digest"] == digest  # the refused write left no trace in memory
    with open_replica(tmp_path, "n", max_store_bytes=1024 * 1024) as r:
        assert r.status()["digest"] == digest and len(r.keys("blob/")) == written
