"""The hub roles: what ``edgesync hub --role regional|cloud`` runs on the shared daemon.

A regional hub has edges (and their peers) below it and the cloud hub above; the
cloud hub is the root, with regional hubs (or edges) below. Both relay: what
comes in on one link goes out on the others, so everything written anywhere
reaches every replica whose filters admit it. What a role sets here:

- **Relaying.** The replica sends on what it receives, logged as received
  (``ReplicaConfig.relay``), with the default interval budget: a relayed
  interval's bytes are counted, not its keys.
- **Fan-in.** A hub accepts at most ``max_links`` links from peers that dial it
  (``--max-links``, default 1,024): one more is refused with RESOURCE_EXHAUSTED
  and its dialer backs off and retries, so a fleet restarting at once, or a
  misconfigured one, cannot take a hub's memory and file descriptors without
  bound.
- **What flows up and down.** Links a hub dials are upstream; links dialed to it
  come from below. ``--push`` and ``--pull`` hold on every link unless
  ``--down-push`` and ``--down-pull`` give the links from below their own: a
  regional hub with ``--down-push config/`` sends its edges only ``config/``
  while it takes everything they write and passes it up.
- **Nothing else beside the replica.** Sensors run on edges, and hubs link with
  ``--upstream`` only (``--peer`` is how edges peer).
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_node.config import DaemonConfig, prefix_policy
from edge_node.daemon import Stop, daemon_replica_config
from sync._policy import LinkPolicy
from sync._replica import ReplicaConfig
from sync.adapters.aio import AsyncReplica

HUB_ROLES = ("regional", "cloud")
DEFAULT_MAX_LINKS = 1024
EDGE_ONLY_KEYS = ("peer", "sensors", "mqtt", "mqtt_topic", "sensor_seed")


@dataclass(frozen=True)
class HubRole:
    name: str  # "regional" or "cloud"
    max_links: int = DEFAULT_MAX_LINKS

    def __post_init__(self) -> None:
        if self.name not in HUB_ROLES:
            raise ValueError(f"a hub's role is regional or cloud, not {self.name!r}")

    def replica_config(self, new_epoch: bool = False) -> ReplicaConfig:
        return daemon_replica_config(relay=True, new_epoch=new_epoch)

    def check(self, cfg: DaemonConfig) -> None:
        cfg.refuse(
            EDGE_ONLY_KEYS, "an edge node's keys; a hub runs no sensors and links with --upstream"
        )

    def link_policy(self, cfg: DaemonConfig, accepted: bool) -> LinkPolicy:
        if not accepted:
            return cfg.link_policy()
        return prefix_policy(cfg.down_push or cfg.push, cfg.down_pull or cfg.pull)

    async def start(self, cfg: DaemonConfig, replica: AsyncReplica) -> Stop | None:
        return None
