"""Prometheus metrics of a daemon (``--metrics HOST:PORT``), served by prometheus_client.

What ``edgesync status`` shows, in the form a fleet's monitoring scrapes: the
store's use against its ceiling, keys and delta-log entries, commits, and per
link whether it is up, how far behind its peer is, and the frames refused either
way; with the links turned away at the fan-in limit and the process's own
figures (CPU, memory, open files).

A scrape runs in prometheus_client's HTTP thread, but the replica belongs to the
event loop: the collector asks the loop for one snapshot (``edge_node.status.snapshot``,
from memory, no digest) and waits for it, so a scrape never reads a dict the loop is changing.
A loop too busy to answer within ``SCRAPE_TIMEOUT_S`` fails that scrape (the
scraper records it as down) rather than queueing more.

With ``--tls-dir`` the endpoint is HTTPS and asks for a client certificate of the
fleet's CA (``edgesync certs issue --role client`` makes one for the scraper), as
the gRPC services do; with ``--insecure`` it is plain HTTP, on loopback only.
It shows counts and link addresses, never keys or values.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from edge_node.status import LinkFigures, Snapshot, snapshot
from sync.adapters.aio import AsyncReplica
from sync.adapters.grpc_link import GrpcLinks

log = logging.getLogger("edgesync.daemon")
SCRAPE_TIMEOUT_S = 5.0


class DaemonCollector(Collector):
    def __init__(
        self, replica: AsyncReplica, links: GrpcLinks, role: str, certificate_expires: int,
        loop: asyncio.AbstractEventLoop,
    ) -> None:  # fmt: skip
        self.replica, self.links, self.role, self.loop = replica, links, role, loop
        self.certificate_expires = certificate_expires

    def collect(self) -> Iterator[Any]:
        async def take() -> Snapshot:
            return snapshot(self.replica, self.links, self.role, self.certificate_expires)

        s = asyncio.run_coroutine_threadsafe(take(), self.loop).result(SCRAPE_TIMEOUT_S)
        yield from families(s)


def families(s: Snapshot) -> Iterator[Any]:
    """The metric families of a snapshot."""
    yield InfoMetricFamily(
        "edgesync", "this daemon", {"node": s.node, "role": s.role, "epoch": s.epoch}
    )
    for name, text, value in (
        ("store_used_bytes", "bytes the store uses", s.used_bytes),
        ("store_max_bytes", "the store's ceiling (--max-store-size); 0: none", s.max_bytes),
        ("store_journal_bytes", "bytes in the write-ahead journal", s.journal_bytes),
        ("keys", "keys held, removed keys' tombstones included", s.keys),
        ("delta_log_entries", "delta-log entries kept for peers yet to acknowledge", s.log_entries),
        ("actors", "node epochs in the version vector", len(s.version_vector)),
        ("certificate_expiry_timestamp_seconds",
         "when the TLS certificate (or the CA's, if sooner) ends; 0: plain text",
         s.certificate_expires),
    ):  # fmt: skip
        yield GaugeMetricFamily(f"edgesync_{name}", text, value=value)
    for name, text, value in (
        ("commits", "store commits (a group of writes and received deltas each)", s.commits),
        ("store_write_backs", "journal write-backs into LMDB", s.write_backs),
        ("links_turned_away", "links refused at the fan-in limit (--max-links)", s.turned_away),
    ):
        yield CounterMetricFamily(f"edgesync_{name}", text, value=value)
    yield from _per_link(s.links)


def _per_link(links: tuple[LinkFigures, ...]) -> Iterator[Any]:
    up = GaugeMetricFamily("edgesync_link_up", "1 while the link is up", labels=["link"])
    lag = GaugeMetricFamily(
        "edgesync_link_lag", "log entries the link's peer has not acknowledged", labels=["link"]
    )
    refused = CounterMetricFamily(
        "edgesync_link_frames_refused", "frames from the peer refused here", labels=["link"]
    )
    by_peer = CounterMetricFamily(
        "edgesync_link_frames_refused_by_peer", "frames of ours the peer refused", labels=["link"]
    )
    for f in links:
        up.add_metric([f.link], int(f.up))
        lag.add_metric([f.link], f.lag)
        refused.add_metric([f.link], f.refused)
        by_peer.add_metric([f.link], f.refused_by_peer)
    yield from (up, lag, refused, by_peer)


def serve_metrics(
    address: str,
    replica: AsyncReplica,
    links: GrpcLinks,
    role: str,
    *,
    tls: tuple[Path, Path, Path] | None,
    certificate_expires: int = 0,
) -> Any:
    """Serve /metrics at ``address`` (HOST:PORT) until ``.shutdown()`` of the result;
    ``tls``: (CA, certificate, key) files for HTTPS with client certificates."""
    registry = CollectorRegistry(auto_describe=False)
    loop = asyncio.get_running_loop()
    registry.register(DaemonCollector(replica, links, role, certificate_expires, loop))
    ProcessCollector(namespace="edgesync", registry=registry)
    host, port = address.rsplit(":", 1)
    files: dict[str, Any] = {}
    if tls is not None:
        ca, cert, key = (str(p) for p in tls)
        files = {
            "client_cafile": ca,
            "certfile": cert,
            "keyfile": key,
            "client_auth_required": True,
        }
    server, _ = start_http_server(int(port), host.strip("[]"), registry=registry, **files)
    log.info("metrics served", extra={"node": replica.replica.node_id, "metrics": address})
    return server
