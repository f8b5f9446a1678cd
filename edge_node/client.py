"""A Python client of a daemon's Client service, for programs that drive a fleet.

The CLI speaks the same service one call per process; this client keeps one
channel open, which is what a script that writes to and watches many nodes
wants (the demo and the chaos harness use it). Every write returns once it is
durable on the node it was sent to, as the CLI contract says.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edge_node.certs import client_id, load_material
from edge_node.client_service import type_name
from sync.adapters.pb import client_pb2, client_pb2_grpc


def channel_credentials(tls_dir: Path) -> grpc.ChannelCredentials:
    """Mutual TLS with the one client certificate in ``tls_dir``."""
    material = load_material(tls_dir, client_id(tls_dir))
    return grpc.ssl_channel_credentials(material.ca, material.key, material.cert)


def values_of(values: Any) -> dict[str, Any]:
    """{type name: value} from the ``Value`` messages of a Get reply or a Change."""
    return {type_name(v.type): json.loads(v.json) for v in values}


def status_of(s: Any) -> dict[str, Any]:
    """The contract's ``status --json`` object from a ``StatusReply``."""
    return {
        "id": s.id, "role": s.role, "epoch": s.epoch,
        "version_vector": dict(sorted(s.version_vector.items())), "digest": s.digest,
        "peers": [{"address": p.address, "connected": p.connected, "lag": p.lag,
                   "refused": p.refused, "last_refusal": p.last_refusal,
                   "refused_by_peer": p.refused_by_peer,
                   "last_refused_by_peer": p.last_refused_by_peer} for p in s.peers],
        "store": {f.name: getattr(s.store, f.name) for f in s.store.DESCRIPTOR.fields},
        "certificate_expires": s.certificate_expires,
    }  # fmt: skip


# gRPC's default reconnect backoff grows to 120 s: a client that saw its daemon restart would
# fail every call for minutes after the daemon is back. A local daemon is worth retrying often.
RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class Client:
    """One channel to one daemon; ``async with Client(...)`` closes it."""

    def __init__(self, address: str, *, tls_dir: Path | None = None) -> None:
        self.address = address
        if tls_dir is None:
            self._channel = grpc.aio.insecure_channel(address, options=RECONNECT_OPTIONS)
        else:
            credentials = channel_credentials(tls_dir)
            self._channel = grpc.aio.secure_channel(address, credentials, options=RECONNECT_OPTIONS)
        self._stub = client_pb2_grpc.ClientStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def __repr__(self) -> str:
        return f"Client({self.address!r})"

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def serving(self) -> bool:
        """True once the daemon answers its health check with SERVING."""
        try:
            reply = await self._health.Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def put(self, key: str, value: Any) -> str:
        return await self._update(key, register_set_json=json.dumps(value))

    async def inc(self, key: str, n: int = 1) -> str:
        return await self._update(key, counter_add=n)

    async def add(self, key: str, *elements: str) -> str:
        return await self._update(key, set_add=client_pb2.ElementList(elements=elements))

    async def rm(self, key: str, *elements: str) -> str:
        return await self._update(key, set_remove=client_pb2.ElementList(elements=elements))

    async def get(self, key: str) -> dict[str, Any]:
        """{type name: value} for each type present at ``key``; empty if none."""
        reply = await self._stub.Get(client_pb2.GetRequest(key=key), timeout=30)
        return values_of(reply.values)

    async def status(self, prefix: str = "") -> dict[str, Any]:
        return status_of(
            await self._stub.Status(client_pb2.StatusRequest(prefix=prefix), timeout=30)
        )

    async def _update(self, key: str, **op: Any) -> str:
        """Apply one typed write; returns the digest of the node's state after it."""
        reply = await self._stub.Update(client_pb2.UpdateRequest(key=key, **op), timeout=30)
        return str(reply.digest)
