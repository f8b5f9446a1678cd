"""The edgesync daemon: one replica, its links, and the client API, in one process.

Edge nodes (``edgesync node``, ``edge_node/edge.py``) and hubs (``edgesync hub
--role regional|cloud``, ``cloud_hub/hub.py``) run this same machinery; a
``Role`` is configuration and policy: how the replica runs, which prefixes flow
on which links, how many links it accepts, what else runs beside it. The daemon
serves the Replication and Client services, the standard gRPC health service and
server reflection, dials its upstreams and peers (reconnecting with backoff and
jitter), and on SIGTERM or SIGINT stops accepting, lets in-flight writes commit,
closes its links and exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from edge_node.certs import expected_name, material_files
from edge_node.client_service import ClientService
from edge_node.config import RECONNECT_MIN_MS, ConfigError, DaemonConfig, dial_target
from edge_node.tls import peer_identity, tls_credentials, warn_before_expiry
from sync._policy import LinkPolicy
from sync._replica import ReplicaConfig
from sync.adapters.aio import AsyncReplica
from sync.adapters.embedded import fresh_epoch, wall_clock_ms
from sync.adapters.gc_policy import collect_everything_hourly, tune_gc
from sync.adapters.grpc_link import GrpcLinks, channel_options, ticker
from sync.adapters.lmdb_storage import LMDBStorage
from sync.adapters.malloc_policy import tune_malloc
from sync.adapters.pb import client_pb2, client_pb2_grpc, replication_pb2

log = logging.getLogger("edgesync.daemon")
SERVICES = ("edgesync.v1.Replication", "edgesync.v1.Client")
T = TypeVar("T")


Stop = Callable[[], Awaitable[None]]


class Role(Protocol):
    """What a daemon's role decides (``edge_node.edge.EDGE``, ``cloud_hub.hub``)."""

    @property
    def name(self) -> str:
        """Edge, regional or cloud: as its certificate and its status say."""

    @property
    def max_links(self) -> int:
        """How many links it accepts from peers that dial it, unless configured."""

    def replica_config(self, new_epoch: bool) -> ReplicaConfig: ...

    def check(self, cfg: DaemonConfig) -> None:
        """Refuse keys the role has no use for (``ConfigError``)."""

    def link_policy(self, cfg: DaemonConfig, accepted: bool) -> LinkPolicy:
        """A link's filters; ``accepted``: the peer dialed us."""

    async def start(self, cfg: DaemonConfig, replica: AsyncReplica) -> Stop | None:
        """Start what runs beside the replica; how to stop it, before the replica."""


def daemon_replica_config(relay: bool, new_epoch: bool = False) -> ReplicaConfig:
    """How a daemon runs its replica; ``relay``: it sends on what it receives."""
    return ReplicaConfig(
        relay=relay,
        new_epoch=new_epoch,
        # AsyncReplica sends each interval before it builds the next: a backlog's
        # first frame leaves after one interval's work, not a whole window's.
        intervals_per_ready=1,
        # A peer acknowledges an interval after the commit that holds it, and takes in
        # what arrives during one commit with the next: more in flight makes its
        # commits bigger and fewer (a commit's fsyncs cost about the same for one
        # frame as for six). Eight 256 KiB intervals left a hub fed 16 KiB values idle
        # between commits; the timer restarts on each ack, so a long queue at a busy
        # peer is not resent.
        window=32,
    )


def check_config(cfg: DaemonConfig, role: Role) -> None:
    """Refuse a configuration that cannot work, before anything starts."""
    if cfg.role != role.name:
        raise ConfigError(f"this daemon runs as {role.name!r}, but its config says {cfg.role!r}")
    cfg.check()
    role.check(cfg)


async def serve(cfg: DaemonConfig, role: Role) -> int:
    check_config(cfg, role)
    tls = tls_credentials(cfg)  # a bad certificate: refused before the store opens
    tune_malloc()  # before the store and the state take their memory
    storage = LMDBStorage(cfg.data, max_map_size=cfg.max_store_bytes())
    replica = AsyncReplica(
        storage, cfg.id, clock=wall_clock_ms, new_epoch=fresh_epoch,
        config=role.replica_config(cfg.new_epoch),
    )  # fmt: skip
    tune_gc()
    links = GrpcLinks(
        replica, authenticate=peer_identity, credentials=None if tls is None else tls.channel,
        claim=(cfg.id, cfg.role),
        max_accepted=cfg.max_links if cfg.max_links is not None else role.max_links,
        backoff_ms=(RECONNECT_MIN_MS, cfg.reconnect_max_ms),
        policy_for=lambda link, accepted: role.link_policy(cfg, accepted),
    )  # fmt: skip
    # No SO_REUSEPORT (gRPC's default on Linux): with it, a second daemon given the same
    # --listen binds as well, and the kernel splits clients and peers between the two.
    options = [*channel_options(replica.replica.config.max_message_bytes), ("grpc.so_reuseport", 0)]
    server = grpc.aio.server(options=options)
    expires = 0 if tls is None else int(tls.expires.timestamp())
    health_servicer = _add_services(server, replica, links, cfg.role, expires)
    try:
        _listen(server, cfg.listen, None if tls is None else tls.server)
        await server.start()
        metrics = _serve_metrics(cfg, replica, links, expires)
    except BaseException:
        # A daemon that cannot start closes its store cleanly: no new epoch next time.
        await server.stop(None)
        await replica.close()
        raise
    log.info("started", extra={"node": cfg.id, "role": cfg.role, "listen": cfg.listen,
                               "actor": replica.actor})  # fmt: skip
    tasks = [asyncio.create_task(_dial(links, cfg, spec, edge=False)) for spec in cfg.upstream]
    tasks += [asyncio.create_task(_dial(links, cfg, spec, edge=True)) for spec in cfg.peer]
    tasks.append(asyncio.create_task(ticker(replica)))
    tasks.append(asyncio.create_task(collect_everything_hourly(cfg.id)))
    if tls is not None:
        tasks.append(asyncio.create_task(warn_before_expiry(cfg.id, tls.expires)))
    stop_beside = await role.start(cfg, replica)
    await _until_signalled()
    log.info("stopping", extra={"node": cfg.id})
    await health_servicer.enter_graceful_shutdown()
    if stop_beside is not None:
        await stop_beside()  # its last writes commit before the replica closes
    await server.stop(grace=2)  # stop accepting; in-flight calls (writes) finish
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await replica.close()  # commits what is pending, records a clean shutdown
    if metrics is not None:
        metrics.shutdown()
    log.info("stopped", extra={"node": cfg.id})
    return 0


def _listen(server: grpc.aio.Server, address: str, creds: grpc.ServerCredentials | None) -> None:
    try:
        if creds is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, creds)
    except RuntimeError as exc:  # grpcio raises where older releases returned 0
        raise ConfigError(f"cannot listen on {address} (in use?): {exc}") from None
    if port == 0:
        raise ConfigError(f"cannot listen on {address} (in use?)")


def _serve_metrics(
    cfg: DaemonConfig, replica: AsyncReplica, links: GrpcLinks, certificate_expires: int
) -> Any:
    """Prometheus metrics at ``--metrics``, if asked: HTTPS with client certificates
    under ``--tls-dir``, plain HTTP (loopback only) under ``--insecure``."""
    if cfg.metrics is None:
        return None
    from edge_node.metrics import serve_metrics

    tls = None if cfg.tls_dir is None else material_files(cfg.tls_dir, cfg.id)
    try:
        return serve_metrics(
            cfg.metrics, replica, links, cfg.role, tls=tls, certificate_expires=certificate_expires
        )
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {cfg.metrics} (in use?): {exc}") from None


async def _dial(links: GrpcLinks, cfg: DaemonConfig, spec: str, edge: bool) -> None:
    """Keep a link to an upstream (a hub) or a ``--peer`` (an edge) up; under TLS, its
    certificate must name the node the spec gives, or else the role expected."""
    node, address = dial_target(spec)
    server_name = None if cfg.tls_dir is None else expected_name(node, edge)
    await links.dial(address, edge=edge, node=node, server_name=server_name)


def _add_services(
    server: grpc.aio.Server, replica: AsyncReplica, links: GrpcLinks, role: str,
    certificate_expires: int,
) -> health.aio.HealthServicer:  # fmt: skip
    links.add_to_server(server)
    service = ClientService(replica, links, role, certificate_expires)
    client_pb2_grpc.add_ClientServicer_to_server(service, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [
        replication_pb2.DESCRIPTOR.services_by_name["Replication"].full_name,
        client_pb2.DESCRIPTOR.services_by_name["Client"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    ]
    reflection.enable_server_reflection(names, server)
    for name in ["", *SERVICES]:
        asyncio.get_running_loop().create_task(
            health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        )
    return health_servicer


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to its result on uvloop, where it is installed: a daemon's
    loop wakes a coroutine per awaited write and per stream message, and uvloop
    does that in about a sixth less time than asyncio's own loop
    (``bench/storage_bench.py`` measures both). Otherwise on asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # no wheel for this platform (Windows)
        return asyncio.run(main)
    return uvloop.run(main)


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


class KeyValueFormatter(logging.Formatter):
    """One line per event: time, level, event, then key=value fields."""

    SKIP = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in sorted(vars(record).items()) if k not in self.SKIP)
        stamp = self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
        return f"{stamp} {record.levelname.lower()} {record.getMessage()} {fields}".rstrip()


def setup_logging() -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger("edgesync")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
