"""A daemon's figures at one moment: what ``Status`` answers and ``/metrics`` shows.

Taken on the event loop, from memory only (no digest, no store scan): cheap
enough for every scrape.
"""

from __future__ import annotations

from dataclasses import dataclass

from sync.adapters.aio import AsyncReplica
from sync.adapters.grpc_link import GrpcLinks


@dataclass(frozen=True)
class LinkFigures:
    link: str
    up: bool
    lag: int  # log entries its peer has not acknowledged
    refused: int  # frames from the peer we refused
    last_refusal: str
    refused_by_peer: int  # frames of ours the peer refused
    last_refused_by_peer: str


@dataclass(frozen=True)
class Snapshot:
    node: str
    role: str
    epoch: str
    version_vector: dict[str, int]
    used_bytes: int
    max_bytes: int  # 0: no ceiling
    journal_bytes: int
    write_backs: int
    keys: int  # removed keys' tombstones included
    log_entries: int
    commits: int
    turned_away: int  # links refused at the fan-in limit
    links: tuple[LinkFigures, ...]
    certificate_expires: int  # Unix seconds: the TLS certificate's (or CA's) end; 0: none


def snapshot(
    replica: AsyncReplica, links: GrpcLinks, role: str, certificate_expires: int = 0
) -> Snapshot:
    """The daemon's figures now; call it on the event loop.

    Keys stored are the keyspace's entries, as the digest tree counts them; not
    ``len(tree)``, which first hashes every key written since its last read (up to
    64 MiB of values) on the event loop.
    """
    r, usage = replica.replica, replica.storage.usage()
    return Snapshot(
        node=r.node_id, role=role, epoch=f"{r.epoch:016x}",
        version_vector=r.keyspace.actor_progress(),
        used_bytes=usage.used_bytes, max_bytes=usage.max_bytes or 0,
        journal_bytes=usage.journal_bytes, write_backs=usage.write_backs,
        keys=len(r.keyspace.entries), log_entries=len(r.log), commits=replica.commits,
        turned_away=links.turned_away, links=tuple(_links(replica, links)),
        certificate_expires=certificate_expires,
    )  # fmt: skip


def _links(replica: AsyncReplica, links: GrpcLinks) -> list[LinkFigures]:
    r = replica.replica
    figures = []
    for link, up in sorted(links.connected.items()):
        state = r.links.get(link)
        lag = r._lag(state.remote) if state is not None else None
        refused, why = links.refused.get(link, (0, ""))
        by_peer, peer_why = links.refused_by_peer.get(link, (0, ""))
        figures.append(LinkFigures(link, up, lag or 0, refused, why, by_peer, peer_why))
    return figures
