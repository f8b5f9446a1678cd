"""An in-memory network of replicas, for tests and the simulator.

In the spirit of etcd's ``rafttest``: a seeded random source decides which
message is delivered next (reordering), which are lost and which duplicated, and
links can be cut and restored. Each node is a ``Replica`` with its own storage; the
network plays the driver, committing every ``Ready`` before its messages leave.
Nothing here reads a clock or global randomness: time is a counter the network
advances, and randomness is the ``rng`` it is given.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from sync._errors import ProtocolError
from sync._policy import EVERYTHING, LinkPolicy
from sync._replica import Ready, Replica, ReplicaConfig
from sync._storage import MemoryStorage, Storage


class RandomSource(Protocol):
    def random(self) -> float: ...
    def randrange(self, start: int, stop: int | None = ..., step: int = ...) -> int: ...
    def getrandbits(self, k: int) -> int: ...


@dataclass
class Faults:
    loss: float = 0.0  # probability a message is dropped
    duplicate: float = 0.0  # probability a message is delivered twice
    reorder: bool = True  # deliver a random pending message rather than the oldest


@dataclass
class Node:
    replica: Replica
    storage: Storage


@dataclass
class Stats:
    delivered: int = 0
    dropped: int = 0
    duplicated: int = 0
    bytes_sent: int = 0
    rejected: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)  # "node: what" of each Event


class MemoryNetwork:
    def __init__(self, rng: RandomSource, faults: Faults | None = None) -> None:
        self.rng = rng
        self.faults = faults or Faults()
        self.now = 1_700_000_000_000
        self.nodes: dict[str, Node] = {}
        self.pending: list[tuple[str, str, bytes]] = []  # (from, to, message)
        self.cut: set[frozenset[str]] = set()
        self.stats = Stats()

    def clock(self) -> int:
        return self.now

    def new_epoch(self) -> int:
        return self.rng.getrandbits(64)

    # ---- nodes and links ----------------------------------------------------------

    def add(
        self, name: str, storage: Storage | None = None, config: ReplicaConfig | None = None
    ) -> Replica:
        storage = storage if storage is not None else MemoryStorage()
        replica = Replica.open(storage, name, self.clock, self.new_epoch, config)
        self.nodes[name] = Node(replica, storage)
        self.flush(name)
        return replica

    def link(self, a: str, b: str, policy_a: LinkPolicy = EVERYTHING,
             policy_b: LinkPolicy = EVERYTHING) -> None:  # fmt: skip
        self.nodes[a].replica.connect(b, policy_a)
        self.flush(a)
        self.nodes[b].replica.connect(a, policy_b)
        self.flush(b)

    def partition(self, a: str, b: str) -> None:
        """Cut the link both ways; messages in flight between them are lost."""
        self.cut.add(frozenset((a, b)))
        self.pending = [m for m in self.pending if frozenset(m[:2]) != frozenset((a, b))]

    def heal(self, a: str, b: str, reconnect: bool = True) -> None:
        """Restore the link: by reconnecting (the stream broke: fresh Hellos), or not
        (it survived the cut, and nothing tells the replicas it is back)."""
        self.cut.discard(frozenset((a, b)))
        if not reconnect:
            return
        for x, y in ((a, b), (b, a)):
            self.nodes[x].replica.disconnect(y)
        self.link(a, b)

    # ---- driving -------------------------------------------------------------------

    def flush(self, name: str) -> None:
        """Play the driver for ``name``: take its ready(), commit, then send; again
        while ready() held intervals back (``ReplicaConfig.intervals_per_ready``)."""
        while True:
            ready = self.nodes[name].replica.ready()
            self.deliver_ready(name, ready)
            if not ready.more:
                return

    def deliver_ready(self, name: str, ready: Ready) -> None:
        """Commit first, then let the messages go."""
        self.nodes[name].storage.commit(ready.batch)
        self.stats.events.extend(f"{name}: {event.what}" for event in ready.events)
        for to, data in ready.messages:
            self._send(name, to, data)

    def _send(self, src: str, dst: str, data: bytes) -> None:
        self.stats.bytes_sent += len(data)
        if frozenset((src, dst)) in self.cut or self.rng.random() < self.faults.loss:
            self.stats.dropped += 1
            return
        self.pending.append((src, dst, data))
        if self.rng.random() < self.faults.duplicate:
            self.stats.duplicated += 1
            self.pending.append((src, dst, data))

    def step(self) -> bool:
        """Deliver one pending message; False when none is pending."""
        if not self.pending:
            return False
        i = self.rng.randrange(len(self.pending)) if self.faults.reorder else 0
        src, dst, data = self.pending.pop(i)
        self.stats.delivered += 1
        try:
            self.nodes[dst].replica.receive(src, data)
        except ProtocolError as exc:  # a real driver logs it and keeps serving
            self.stats.rejected.append(f"{dst} <- {src}: {exc}")
            return True
        self.flush(dst)
        return True

    def tick(self, ms: int = 100) -> None:
        self.now += ms
        for name, node in self.nodes.items():
            node.replica.tick()
            self.flush(name)

    def run(self, max_steps: int = 1_000_000, tick_every: int = 50) -> int:
        """Deliver and tick until nothing is pending or in flight; return steps taken."""
        steps = 0
        while steps < max_steps:
            if not self.step():
                if self.quiet():
                    return steps
                self.tick(ms=500)
            steps += 1
            if steps % tick_every == 0:
                self.tick()
        raise RuntimeError(f"network still busy after {max_steps} steps")

    def quiet(self) -> bool:
        """Nothing pending, every peer reachable has acknowledged every entry and
        answered our last Sources."""
        if self.pending:
            return False
        for name, node in self.nodes.items():
            log = node.replica.log
            for peer, link in node.replica.links.items():
                if frozenset((name, peer)) in self.cut:
                    continue
                if link.remote is None or link.sources_pending is not None:
                    return False
                progress = log.peers.get(link.remote)
                if progress is not None and progress.acked < log.next_seq:
                    return False
        return True

    def digests(self, names: Iterable[str] | None = None) -> dict[str, str]:
        chosen = list(names) if names is not None else list(self.nodes)
        return {n: self.nodes[n].replica.keyspace.digest() for n in chosen}


def introduce(a: Replica, a_link: str, b: Replica, b_link: str, rounds: int = 1) -> None:
    """Link two bare replicas by hand: ``a`` reaches ``b`` over ``a_link`` and ``b``
    reaches ``a`` over ``b_link``, and pass what they send for ``rounds`` rounds (``a``
    first). After one, each has the other's Hello (``a`` last), and what ``a`` then
    has to send waits in its next ``ready()``."""
    a.connect(a_link)
    b.connect(b_link)
    for _ in range(rounds):
        for _, data in a.ready().messages:
            b.receive(b_link, data)
        for _, data in b.ready().messages:
            a.receive(a_link, data)
