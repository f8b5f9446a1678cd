"""A daemon's configuration: flags and a TOML file with the same keys, each value
checked for its kind, and the whole refused with one clear ``ConfigError`` (what
to change) before anything starts. ``DaemonConfig.check`` holds the rules every
role shares; a role adds its own (``edge_node.daemon.Role.check``).
"""

from __future__ import annotations

import ipaddress
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sync._policy import LinkPolicy
from sync.adapters.lmdb_storage import MiB

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
