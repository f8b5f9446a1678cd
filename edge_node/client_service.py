"""The client API of a daemon: reads, typed writes, watch and status over gRPC.

Values travel as JSON, one per CRDT type present at a key (a key is a path and a
type, so one path can hold a counter and a set at once). A write returns once it
is durable on this node.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc

from edge_node.status import snapshot
from sync import CRDT, AWSet, LWWRegister, PNCounter, crdt_types
from sync._keyspace import Key, Keyspace
from sync._storage import StorageError, StoreFullError
from sync._values import thaw
from sync.adapters.aio import AsyncReplica
from sync.adapters.grpc_link import GrpcLinks
from sync.adapters.pb import client_pb2, client_pb2_grpc

TYPES = {cls.TYPE_TAG: cls for cls in crdt_types()}


def to_json(value: Any) -> str:
    if isinstance(value, frozenset):
        value = sorted(value, key=lambda e: (str(type(e)), e))
    return json.dumps(thaw(value), sort_keys=True, default=_bytes_as_hex)


def _bytes_as_hex(obj: object) -> str:
    if isinstance(obj, bytes):
        return obj.hex()
    raise TypeError(f"cannot show {type(obj).__name__} as JSON")


def values_at(keyspace: Keyspace, path: str) -> list[client_pb2.Value]:
    return [
        client_pb2.Value(type=child.TYPE_TAG, json=to_json(child.value()))  # type: ignore[arg-type]
        for child in keyspace.types_at(path)
    ]


class ClientService(client_pb2_grpc.ClientServicer):
    def __init__(
        self, replica: AsyncReplica, links: GrpcLinks, role: str, certificate_expires: int = 0
    ) -> None:
        self.replica = replica
        self.links = links
        self.role = role
        self.certificate_expires = certificate_expires

    async def Get(self, request: Any, context: Any) -> Any:
        return client_pb2.GetReply(
            key=request.key, values=values_at(self.replica.replica.keyspace, request.key)
        )

    async def Keys(self, request: Any, context: Any) -> Any:
        found = self.replica.replica.keyspace.keys(request.prefix)
        return client_pb2.KeysReply(
            keys=[client_pb2.KeyEntry(key=p, type=cls.TYPE_TAG) for p, cls in found]  # type: ignore[arg-type]
        )

    async def Update(self, request: Any, context: Any) -> Any:
        op = request.WhichOneof("op")
        try:
            await self._apply(request, op)
        except (ValueError, TypeError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except StoreFullError as exc:  # the ceiling or a full disk: reads and sync go on
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"not stored: {exc}")
        except StorageError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"not stored: {exc}")
        r = self.replica.replica
        return client_pb2.UpdateReply(actor=r.actor, digest=r.keyspace.digest())

    async def _apply(self, request: Any, op: str | None) -> None:
        key = request.key
        if op == "register_set_json":
            value = json.loads(request.register_set_json)
            hlc = self.replica.replica.hlc
            await self.replica.update(key, LWWRegister, lambda g, a: g.set(a, value, hlc.now()))
        elif op == "counter_add":
            n = request.counter_add
            await self.replica.update(key, PNCounter, lambda c, a: c.increment(a, n))
        elif op in ("set_add", "set_remove"):
            elements = list(getattr(request, op).elements)
            adding = op == "set_add"
            await self.replica.update(key, AWSet, lambda s, a: _set_op(s, a, elements, adding))
        elif op == "remove_key":
            cls = TYPES.get(request.remove_key)
            if cls is None:
                raise ValueError(f"unknown type {request.remove_key}")
            await self.replica.remove(key, cls)
        else:
            raise ValueError("an update needs an operation")

    async def Watch(self, request: Any, context: Any) -> AsyncIterator[Any]:
        changed: asyncio.Queue[list[Key]] = asyncio.Queue()
        self.replica.watchers.append(changed.put_nowait)
        try:
            while True:
                for path in sorted(
                    {k[0] for k in await changed.get() if k[0].startswith(request.prefix)}
                ):
                    yield client_pb2.Change(
                        key=path, values=values_at(self.replica.replica.keyspace, path)
                    )
        finally:
            self.replica.watchers.remove(changed.put_nowait)

    async def Status(self, request: Any, context: Any) -> Any:
        s = snapshot(self.replica, self.links, self.role, self.certificate_expires)
        peers = [
            client_pb2.PeerStatus(
                address=f.link, connected=f.up, lag=f.lag, refused=f.refused,
                last_refusal=f.last_refusal, refused_by_peer=f.refused_by_peer,
                last_refused_by_peer=f.last_refused_by_peer,
            )
            for f in s.links
        ]  # fmt: skip
        store = client_pb2.StoreStatus(
            used_bytes=s.used_bytes, max_bytes=s.max_bytes, journal_bytes=s.journal_bytes,
            write_backs=s.write_backs, keys=s.keys, log_entries=s.log_entries,
        )  # fmt: skip
        return client_pb2.StatusReply(
            id=s.node, role=s.role, epoch=s.epoch, version_vector=s.version_vector,
            digest=await self.replica.durable_digest(request.prefix), peers=peers, store=store,
            certificate_expires=s.certificate_expires,
        )  # fmt: skip


def _set_op(s: AWSet, actor: str, elements: list[str], adding: bool) -> AWSet:
    delta = s._delta()
    for e in elements:
        delta.merge(s.add(actor, e) if adding else s.remove(e))
    return delta


def type_name(tag: int) -> str:
    cls: type[CRDT] | None = TYPES.get(tag)
    return cls.__name__ if cls is not None else f"type-{tag}"
