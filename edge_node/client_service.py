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

from sync import CRDT, AWSet, LWWRegister, PNCounter, crdt_types
from sync._keyspace import Key, Keyspace
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
    def __init__(self, replica: AsyncReplica, links: GrpcLinks, role: str) -> None:
        self.replica = replica
        self.links = links
        self.role = role

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
        r = self.replica.replica
        peers = []
        for link, up in sorted(self.links.connected.items()):
            state = r.links.get(link)
            lag = r._lag(state.remote) if state is not None else None
            refused, why = self.links.refused.get(link, (0, ""))
            refused_by_peer, peer_why = self.links.refused_by_peer.get(link, (0, ""))
            peers.append(
                client_pb2.PeerStatus(
                    address=link, connected=up, lag=lag or 0, refused=refused, last_refusal=why,
                    refused_by_peer=refused_by_peer, last_refused_by_peer=peer_why,
                )
            )  # fmt: skip
        return client_pb2.StatusReply(
            id=r.node_id,
            role=self.role,
            epoch=f"{r.epoch:016x}",
            version_vector=r.keyspace.actor_progress(),
            digest=await self.replica.durable_digest(request.prefix),
            peers=peers,
            store=self._store_status(),
        )

    def _store_status(self) -> Any:
        # Keys stored: the keyspace's entries, removed ones' tombstones included, as
        # the digest tree counts them; not len(tree), which first hashes every key
        # written since its last read (up to 64 MiB of values) on the event loop.
        usage, r = self.replica.storage.usage(), self.replica.replica
        return client_pb2.StoreStatus(
            used_bytes=usage.used_bytes, max_bytes=usage.max_bytes or 0,
            journal_bytes=usage.journal_bytes, write_backs=usage.write_backs,
            keys=len(r.keyspace.entries), log_entries=len(r.log),
        )  # fmt: skip


def _set_op(s: AWSet, actor: str, elements: list[str], adding: bool) -> AWSet:
    delta = s._delta()
    for e in elements:
        delta.merge(s.add(actor, e) if adding else s.remove(e))
    return delta


def type_name(tag: int) -> str:
    cls: type[CRDT] | None = TYPES.get(tag)
    return cls.__name__ if cls is not None else f"type-{tag}"
