"""The edgesync daemon: one replica, its links, and the client API, in one process.

Edge nodes (``edgesync node``) and hubs (``edgesync hub --role regional|cloud``)
run this same machinery; a role is configuration. The daemon serves the
Replication and Client services, the standard gRPC health service and server
reflection, dials its upstreams and peers (reconnecting with backoff and
jitter), and on SIGTERM or SIGINT stops accepting, lets in-flight writes commit,
closes its links and exits 0.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import socket
import tomllib
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from edge_node.certs import CertError, identity_of, load_material
from edge_node.client_service import ClientService
from sync._policy import LinkPolicy
from sync._replica import ReplicaConfig
from sync.adapters.aio import AsyncReplica
from sync.adapters.embedded import fresh_epoch, wall_clock_ms
from sync.adapters.gc_policy import collect_everything_hourly, tune_gc
from sync.adapters.grpc_link import GrpcLinks, channel_options, ticker
from sync.adapters.lmdb_storage import LMDBStorage, MiB
from sync.adapters.malloc_policy import tune_malloc
from sync.adapters.pb import client_pb2, client_pb2_grpc, replication_pb2, replication_pb2_grpc

log = logging.getLogger("edgesync.daemon")
SERVICES = ("edgesync.v1.Replication", "edgesync.v1.Client")
T = TypeVar("T")
RECONNECT_MIN_MS = 100  # the first redial waits up to this long


class ConfigError(ValueError):
    """The daemon's configuration cannot work; the message says what to change."""


@dataclass
class DaemonConfig:
    id: str
    data: Path
    listen: str
    role: str = "edge"
    upstream: list[str] = field(default_factory=list)
    peer: list[str] = field(default_factory=list)
    insecure: bool = False
    tls_dir: Path | None = None
    reconnect_max_ms: int = 10_000  # redials back off exponentially, with jitter, up to this
    new_epoch: bool = False  # the store was restored from a backup: never reuse its dots
    push: list[str] = field(default_factory=list)  # path prefixes sent on every link (all)
    pull: list[str] = field(default_factory=list)  # path prefixes accepted (all)
    # The store's ceiling: at it, writes are refused and reads and sync go on. Bytes, or
    # a string with a unit ("512MiB", "8GiB").
    max_store_size: int | str = "8GiB"
    # sensors and inference (sensors/node.py); edge nodes only
    sensors: list[str] = field(default_factory=list)
    mqtt: str | None = None
    mqtt_topic: list[str] = field(default_factory=list)
    sensor_seed: int | None = None

    def link_policy(self) -> LinkPolicy:
        """The same push and pull filters on every link; ``local/`` never leaves."""
        return LinkPolicy(push=tuple(self.push) or ("",), pull=tuple(self.pull) or ("",))

    def check(self) -> None:
        if self.reconnect_max_ms < RECONNECT_MIN_MS:
            raise ConfigError(f"--reconnect-max-ms must be at least {RECONNECT_MIN_MS}")
        if self.tls_dir is None and not self.insecure:
            raise ConfigError(
                "choose --tls-dir DIR (mutual TLS) or --insecure (plain text, loopback only)"
            )
        if self.insecure:
            for address in [self.listen, *self.upstream, *self.peer]:
                if not is_loopback(address):
                    raise ConfigError(
                        f"--insecure serves plain text on loopback only, not {address}"
                    )
        self.max_store_bytes()
        self.sensor_sources()  # refuses a bad --sensors or --mqtt before anything starts

    def max_store_bytes(self) -> int:
        size = parse_size(self.max_store_size)
        if size is None or size < MIN_STORE_BYTES:
            raise ConfigError(
                f"--max-store-size must be a size of at least 1MiB, like 512MiB or 8GiB, "
                f"not {self.max_store_size!r}"
            )
        return size

    def sensor_sources(self) -> list[Any]:
        """The sensor sources the flags ask for (none: no pipeline)."""
        if not (self.sensors or self.mqtt or self.mqtt_topic):
            return []
        from sensors.node import SensorSpecError, parse_sources
        from sensors.replay import RecordingError

        try:
            return parse_sources(
                self.id, self.sensors, self.mqtt, self.mqtt_topic, self.sensor_seed
            )
        except (SensorSpecError, RecordingError) as exc:
            raise ConfigError(str(exc)) from None


_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kib": 1024, "kb": 1000,
    "m": 1024**2, "mib": 1024**2, "mb": 1000**2,
    "g": 1024**3, "gib": 1024**3, "gb": 1000**3,
    "t": 1024**4, "tib": 1024**4, "tb": 1000**4,
}  # fmt: skip
MIN_STORE_BYTES = MiB


def parse_size(size: int | str) -> int | None:
    """Bytes from ``4096``, ``"512MiB"``, ``"8GiB"``, ``"1.5G"`` (K, M, G, T are powers
    of 1024 with or without "iB"; KB, MB, GB, TB powers of 1000); None if not a size."""
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    if not isinstance(size, str):
        return None
    text = size.strip().lower().replace(" ", "").replace("_", "")
    number = text.rstrip("kmgtib")
    unit = _UNITS.get(text[len(number) :])
    try:
        value = float(number)
    except ValueError:
        return None
    return None if unit is None or value < 0 else int(value * unit)


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(
                ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(host, None)
            )
        except OSError:
            return False


def load_config(path: Path | None, flags: dict[str, Any]) -> DaemonConfig:
    """TOML file keys are the flags' names; flags given on the command line win."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from None
    values.update({k: v for k, v in flags.items() if v not in (None, [], False)})
    missing = [k for k in ("id", "data", "listen") if k not in values]
    if missing:
        raise ConfigError(f"missing {', '.join('--' + m for m in missing)}")
    known = set(DaemonConfig.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
    values["data"] = Path(values["data"])
    if values.get("tls_dir") is not None:
        values["tls_dir"] = Path(values["tls_dir"])
    return DaemonConfig(**values)


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


def replica_config(role: str, new_epoch: bool = False) -> ReplicaConfig:
    """How a daemon of ``role`` runs its replica."""
    edge = role == "edge"
    config = ReplicaConfig(
        relay=not edge,  # an edge sends its own updates only
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
    if edge:
        return replace(config, batch_bytes=EDGE_BATCH_BYTES, batch_keys=EDGE_BATCH_KEYS)
    return config


async def serve(cfg: DaemonConfig) -> int:
    cfg.check()
    tune_malloc()  # before the store and the state take their memory
    storage = LMDBStorage(cfg.data, max_map_size=cfg.max_store_bytes())
    replica = AsyncReplica(
        storage, cfg.id, clock=wall_clock_ms, new_epoch=fresh_epoch,
        config=replica_config(cfg.role, cfg.new_epoch),
    )  # fmt: skip
    tune_gc()
    server_creds, channel_creds = tls_credentials(cfg)
    links = GrpcLinks(
        replica, authenticate=peer_identity, credentials=channel_creds,
        backoff_ms=(RECONNECT_MIN_MS, cfg.reconnect_max_ms),
        policy_for=lambda link: cfg.link_policy(),
    )  # fmt: skip
    # No SO_REUSEPORT (gRPC's default on Linux): with it, a second daemon given the same
    # --listen binds as well, and the kernel splits clients and peers between the two.
    options = [*channel_options(replica.replica.config.max_message_bytes), ("grpc.so_reuseport", 0)]
    server = grpc.aio.server(options=options)
    health_servicer = _add_services(server, replica, links, cfg.role)
    try:
        if server_creds is None:
            port = server.add_insecure_port(cfg.listen)
        else:
            port = server.add_secure_port(cfg.listen, server_creds)
    except RuntimeError as exc:  # grpcio raises where older releases returned 0
        raise ConfigError(f"cannot listen on {cfg.listen} (in use?): {exc}") from None
    if port == 0:
        raise ConfigError(f"cannot listen on {cfg.listen} (in use?)")
    await server.start()
    log.info("started", extra={"node": cfg.id, "role": cfg.role, "listen": cfg.listen,
                               "actor": replica.actor})  # fmt: skip
    tasks = [asyncio.create_task(links.dial(a)) for a in [*cfg.upstream, *cfg.peer]]
    tasks.append(asyncio.create_task(ticker(replica)))
    tasks.append(asyncio.create_task(collect_everything_hourly(cfg.id)))
    pipeline = await _start_sensors(cfg, replica)
    await _until_signalled()
    log.info("stopping", extra={"node": cfg.id})
    await health_servicer.enter_graceful_shutdown()
    if pipeline is not None:
        from sensors.node import stop_pipeline

        await stop_pipeline(pipeline)  # its last writes commit before the replica closes
    await server.stop(grace=2)  # stop accepting; in-flight calls (writes) finish
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await replica.close()  # commits what is pending, records a clean shutdown
    log.info("stopped", extra={"node": cfg.id})
    return 0


async def _start_sensors(cfg: DaemonConfig, replica: AsyncReplica) -> Any:
    """The sensor pipeline (sensors/node.py), if the flags ask for one; inference
    runs in worker threads and hands its updates to this loop."""
    sources = cfg.sensor_sources()
    if not sources:
        return None
    from sensors.node import start_pipeline

    pipeline = await start_pipeline(replica, sources)
    log.info("sensors started", extra={"sources": ",".join(s.name for s in sources)})
    return pipeline


def tls_credentials(
    cfg: DaemonConfig,
) -> tuple[grpc.ServerCredentials | None, grpc.ChannelCredentials | None]:
    """Mutual TLS from ``--tls-dir``: every peer and client must hold a certificate of
    our CA, and ours must name this node and its role."""
    if cfg.tls_dir is None:
        return None, None
    try:
        material = load_material(cfg.tls_dir, cfg.id)
        mine = identity_of(material.cert)
    except (CertError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    if (mine.node_id, mine.role) != (cfg.id, cfg.role):
        raise ConfigError(
            f"{cfg.id}.pem is for {mine.node_id!r} as {mine.role!r}, not {cfg.id!r} as {cfg.role!r}"
        )
    server = grpc.ssl_server_credentials(
        [(material.key, material.cert)], root_certificates=material.ca, require_client_auth=True
    )
    channel = grpc.ssl_channel_credentials(material.ca, material.key, material.cert)
    return server, channel


def peer_identity(context: Any) -> tuple[str, str] | None:
    """(node id, role) from the certificate an incoming peer presented, if any."""
    pems = context.auth_context().get("x509_pem_cert")
    if not pems:
        return None
    found = identity_of(pems[0])
    return found.node_id, found.role


def _add_services(
    server: grpc.aio.Server, replica: AsyncReplica, links: GrpcLinks, role: str
) -> health.aio.HealthServicer:
    replication_pb2_grpc.add_ReplicationServicer_to_server(links, server)
    client_pb2_grpc.add_ClientServicer_to_server(ClientService(replica, links, role), server)
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
