"""The edge role: what ``edgesync node`` runs on the shared daemon (``daemon.py``).

An edge sends only its own updates (it does not relay), in large intervals; it
may peer with other edges (``--peer``), which may in turn send it only their
own; and it runs the sensor pipeline when its flags ask for one. The filters
(``--push``, ``--pull``) are the same on every link.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from edge_node.config import DaemonConfig
from edge_node.daemon import Stop, daemon_replica_config
from sync._policy import LinkPolicy
from sync._replica import ReplicaConfig
from sync.adapters.aio import AsyncReplica

log = logging.getLogger("edgesync.daemon")

# An edge's intervals: up to 1 MiB, but no more keys than a 256 KiB interval of small
# deltas holds (about 25 bytes each). Every frame costs both ends the same fixed work
# (gRPC's message path, a commit and an Ack each, the sender's next ready()), so 16 KiB
# values went 15 to a 256 KiB frame and paid it fifteen times as often as 1 MiB frames
# do; and 40,000 small deltas to a frame made the receiver's pipeline too coarse (a
# 200,000-delta backlog in five frames). An edge logs only its own updates, all held
# decoded, so the key count is exact. Hubs keep the defaults: what they relay is
# logged as received, where only bytes are counted.
EDGE_BATCH_BYTES = 1024 * 1024
EDGE_BATCH_KEYS = 10_000


@dataclass(frozen=True)
class EdgeRole:
    name: str = "edge"
    # Peers that dial an edge are other edges: a handful, not a fleet.
    max_links: int = 64

    def replica_config(self, new_epoch: bool = False) -> ReplicaConfig:
        config = daemon_replica_config(relay=False, new_epoch=new_epoch)
        return replace(config, batch_bytes=EDGE_BATCH_BYTES, batch_keys=EDGE_BATCH_KEYS)

    def check(self, cfg: DaemonConfig) -> None:
        cfg.refuse(
            ("down_push", "down_pull"), "a hub's keys; an edge's --push and --pull hold everywhere"
        )
        cfg.sensor_sources()  # refuses a bad --sensors or --mqtt before anything starts

    def link_policy(self, cfg: DaemonConfig, accepted: bool) -> LinkPolicy:
        return cfg.link_policy()

    async def start(self, cfg: DaemonConfig, replica: AsyncReplica) -> Stop | None:
        """The sensor pipeline (sensors/node.py), if the flags ask for one; inference
        runs in worker threads and hands its updates to this loop."""
        sources = cfg.sensor_sources()
        if not sources:
            return None
        from sensors.node import start_pipeline, stop_pipeline

        pipeline = await start_pipeline(replica, sources)
        log.info("sensors started", extra={"sources": ",".join(s.name for s in sources)})
        return lambda: stop_pipeline(pipeline)


EDGE = EdgeRole()
