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
import datetime
import ipaddress
import logging
import signal
import socket
import tomllib
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from edge_node.certs import (
    CertError,
    dial_names,
    expected_name,
    identity_of,
    load_material,
    material_files,
    names_of,
    valid_until,
)
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
EXPIRY_WARNING_DAYS = 30  # a certificate this close to its end is warned of daily


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
    max_links: int | None = None  # links accepted from peers that dial in (the role's default)
    metrics: str | None = None  # HOST:PORT to serve Prometheus metrics at (edge_node/metrics.py)
    # hubs only: the filters on links from below (peers that dial in), in place of
    # push and pull there; push and pull still hold upstream
    down_push: list[str] = field(default_factory=list)
    down_pull: list[str] = field(default_factory=list)
    # sensors and inference (sensors/node.py); edge nodes only
    sensors: list[str] = field(default_factory=list)
    mqtt: str | None = None
    mqtt_topic: list[str] = field(default_factory=list)
    sensor_seed: int | None = None

    def link_policy(self) -> LinkPolicy:
        """The push and pull filters (all but ``local/``, which never leaves)."""
        return prefix_policy(self.push, self.pull)

    def refuse(self, keys: tuple[str, ...], why: str) -> None:
        """A ``ConfigError`` naming those of ``keys`` that are set, and ``why`` not."""
        given = [k.replace("_", "-") for k in keys if getattr(self, k) not in (None, [])]
        if given:
            raise ConfigError(f"{', '.join(given)}: {why}")

    def check(self) -> None:
        """What every role needs; ``Role.check`` adds its own."""
        if self.reconnect_max_ms < RECONNECT_MIN_MS:
            raise ConfigError(f"--reconnect-max-ms must be at least {RECONNECT_MIN_MS}")
        if self.tls_dir is None and not self.insecure:
            raise ConfigError(
                "choose --tls-dir DIR (mutual TLS) or --insecure (plain text, loopback only)"
            )
        if self.metrics is not None and not _is_host_port(self.metrics):
            raise ConfigError(
                f"--metrics takes HOST:PORT, like 127.0.0.1:9464, not {self.metrics!r}"
            )
        dialed = [dial_target(spec, "--upstream") for spec in self.upstream]
        dialed += [dial_target(spec, "--peer") for spec in self.peer]
        if self.insecure:
            served = [self.listen] if self.metrics is None else [self.listen, self.metrics]
            for address in [*served, *(address for _, address in dialed)]:
                if not is_loopback(address):
                    raise ConfigError(
                        f"--insecure serves plain text on loopback only, not {address}"
                    )
        self.max_store_bytes()
        if self.max_links is not None and (
            isinstance(self.max_links, bool) or not isinstance(self.max_links, int)
            or self.max_links < 1
        ):  # fmt: skip
            raise ConfigError(
                f"--max-links must be a whole number of at least 1, not {self.max_links!r}"
            )

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


def prefix_policy(push: list[str], pull: list[str]) -> LinkPolicy:
    """Filters from prefix lists; an empty list admits everything (but ``local/``)."""
    return LinkPolicy(push=tuple(push) or ("",), pull=tuple(pull) or ("",))


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


def dial_target(spec: str, flag: str = "--upstream") -> tuple[str | None, str]:
    """``[ID@]HOST:PORT`` as (node id or None, address): with an id, the node dialed
    must be that node (its certificate, or in plain text its Hello, must say so)."""
    node, at, address = spec.rpartition("@")
    if (at and not node) or not _is_host_port(address):
        raise ConfigError(f"{flag} takes [ID@]HOST:PORT, like e2@10.0.0.7:7402, not {spec!r}")
    return (node if at else None), address


def _is_host_port(address: str) -> bool:
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


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
    # A flag not given is None, [] or False (0 is given: --max-links 0 is refused, not unset).
    values.update({k: v for k, v in flags.items() if v is not None and v is not False and v != []})
    missing = [k for k in ("id", "data", "listen") if k not in values]
    if missing:
        raise ConfigError(f"missing {', '.join('--' + m for m in missing)}")
    known = set(DaemonConfig.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
    typed = {key: _typed(key, value) for key, value in values.items()}
    typed["data"] = Path(typed["data"])
    if typed.get("tls_dir") is not None:
        typed["tls_dir"] = Path(typed["tls_dir"])
    return DaemonConfig(**typed)


# What each key takes, by its DaemonConfig annotation: a TOML file can hold anything.
_KINDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "str": (str, "a string"),
    "Path": ((str, Path), "a path"),
    "int": (int, "a whole number"),
    "bool": (bool, "true or false"),
    "int | str": ((int, str), 'a number of bytes or a size like "8GiB"'),
}


def _typed(key: str, value: Any) -> Any:
    """``value`` for ``key`` as DaemonConfig takes it; a ``ConfigError`` that names the
    key and what it takes if it is of another kind. A list key takes one string too."""
    hint = str(DaemonConfig.__dataclass_fields__[key].type).removesuffix(" | None")
    flag = "--" + key.replace("_", "-")
    if hint == "list[str]":
        value = [value] if isinstance(value, str) else value
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        raise ConfigError(f'{flag} takes strings, like ["a", "b"], not {value!r}')
    kinds, text = _KINDS[hint]
    if isinstance(value, kinds) and (hint == "bool" or not isinstance(value, bool)):
        return value
    raise ConfigError(f"{flag} takes {text}, not {value!r}")


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


@dataclass(frozen=True)
class Tls:
    server: grpc.ServerCredentials
    channel: grpc.ChannelCredentials
    expires: datetime.datetime  # ours or the CA's certificate's end, the sooner


def tls_credentials(cfg: DaemonConfig) -> Tls | None:
    """Mutual TLS from ``--tls-dir``: every peer and client must hold a certificate of
    our CA, and ours must name this node and its role, and be valid now."""
    if cfg.tls_dir is None:
        return None
    try:
        material = load_material(cfg.tls_dir, cfg.id)
        mine = identity_of(material.cert)
        expires = valid_until(material, cfg.tls_dir, cfg.id)
    except (CertError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    if (mine.node_id, mine.role) != (cfg.id, cfg.role):
        raise ConfigError(
            f"{cfg.id}.pem is for {mine.node_id!r} as {mine.role!r}, not {cfg.id!r} as {cfg.role!r}"
        )
    if not set(dial_names(cfg.id, cfg.role)) <= set(names_of(material.cert)):
        # Peers dialing us check these names in the handshake, and would never link.
        raise ConfigError(
            f"{cfg.id}.pem does not name {' or '.join(dial_names(cfg.id, cfg.role))}, which "
            f"peers dialing this node check (one an earlier edgesync issued): "
            f"issue it again with `edgesync certs issue --dir {cfg.tls_dir} --id {cfg.id} "
            f"--role {cfg.role}`"
        )
    server = grpc.ssl_server_credentials(
        [(material.key, material.cert)], root_certificates=material.ca, require_client_auth=True
    )
    channel = grpc.ssl_channel_credentials(material.ca, material.key, material.cert)
    return Tls(server, channel, expires)


async def warn_before_expiry(node: str, expires: datetime.datetime) -> None:
    """Log a warning each day from ``EXPIRY_WARNING_DAYS`` before the certificate ends:
    after that, every peer refuses this node's handshakes (``certificate_expires`` in
    ``status`` and the metrics tells the same to a monitor)."""
    while True:
        left = expires - datetime.datetime.now(datetime.UTC)
        if left <= datetime.timedelta(days=EXPIRY_WARNING_DAYS):
            log.warning("certificate expires soon", extra={
                "node": node, "expires": f"{expires:%Y-%m-%d %H:%M} UTC",
                "days_left": max(0, left.days)})  # fmt: skip
        await asyncio.sleep(24 * 3600)


def peer_identity(context: Any) -> tuple[str, str] | None:
    """(node id, role) from the certificate an incoming peer presented, if any."""
    pems = context.auth_context().get("x509_pem_cert")
    if not pems:
        return None
    found = identity_of(pems[0])
    return found.node_id, found.role


def _add_services(
    server: grpc.aio.Server, replica: AsyncReplica, links: GrpcLinks, role: str,
    certificate_expires: int,
) -> health.aio.HealthServicer:  # fmt: skip
    replication_pb2_grpc.add_ReplicationServicer_to_server(links, server)
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
