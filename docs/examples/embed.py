"""Embedding edgesync: two durable replicas in your own program.

Run: python docs/examples/embed.py

Two replicas (two directories, as on two machines) write while disconnected,
then exchange messages through a transport of your own (here, a queue) and
converge. Every write returned only after it was durable on disk.
"""

from __future__ import annotations

import tempfile
from collections import deque
from pathlib import Path

from sync.adapters.embedded import EmbeddedReplica, open_replica


class QueueTransport:
    """The simplest transport: messages wait in a queue until ``pump`` delivers them."""

    def __init__(self) -> None:
        self.queue: deque[tuple[EmbeddedReplica, str, bytes]] = deque()
        self.peer_of: dict[str, EmbeddedReplica] = {}
        self.name_of: dict[str, str] = {}

    def link(self, a: EmbeddedReplica, b: EmbeddedReplica) -> None:
        ids = a.replica.node_id, b.replica.node_id
        self.peer_of = {ids[1]: b, ids[0]: a}
        self.name_of = {ids[1]: ids[0], ids[0]: ids[1]}
        a.connect(ids[1], self)  # the link to b is named after b, and vice versa
        b.connect(ids[0], self)

    def send(self, link: str, data: bytes) -> None:
        self.queue.append((self.peer_of[link], self.name_of[link], data))

    def pump(self) -> None:
        while self.queue:
            replica, link, data = self.queue.popleft()
            replica.deliver(link, data)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        gate = open_replica(Path(tmp) / "gateway", node_id="gateway")
        truck = open_replica(Path(tmp) / "truck", node_id="truck-17")
        with gate, truck:
            gate.counter("deliveries").increment(3)  # durable when it returns
            truck.counter("deliveries").increment(2)
            truck.set("alerts").add("door-open")
            gate.register("route").set({"stops": ["depot", "dock 4"]})
            print("before:", gate.value("deliveries"), truck.value("deliveries"))

            net = QueueTransport()
            net.link(gate, truck)
            net.pump()
            print("after: ", gate.value("deliveries"), truck.value("deliveries"))
            print("alerts on the gateway:", sorted(gate.value("alerts")))
            same = gate.status()["digest"] == truck.status()["digest"]
            print("digests equal:", same)


if __name__ == "__main__":
    main()
