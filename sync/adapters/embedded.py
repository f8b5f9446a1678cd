"""The embedding API: a durable replica in a directory, for your own program.

    from sync.adapters.embedded import open_replica
    with open_replica("/var/lib/myapp/state", node_id="pump-station-4") as r:
        r.counter("line1/anomalies").increment(3)   # returns once durable
        r.set("line1/alerts").add("pump-7")
        r.register("line1/threshold").set(0.8)
        print(r.value("line1/anomalies"))

Every write returns only after the LMDB transaction holding it has committed.
Writers from many threads share commits (group commit, leader/follower as in
LevelDB's write path): the first writer to find no commit in progress commits
everything queued so far, the others wait for it. Durable throughput therefore
rises with concurrency instead of paying one fsync per write.

Peers connect through any ``Transport``: hand it to ``connect`` and feed the
bytes it receives to ``deliver``. Messages leave only after the state they
describe is durable.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, Protocol, Self, TypeVar

from sync import (
    CRDT,
    AWSet,
    EWFlag,
    GCounter,
    LWWRegister,
    MaxRegister,
    MinRegister,
    MVRegister,
    ORMap,
    PNCounter,
)
from sync._policy import EVERYTHING, LinkPolicy
from sync._replica import Replica, ReplicaConfig
from sync._storage import Storage
from sync.adapters.lmdb_storage import LMDBStorage

T = TypeVar("T", bound=CRDT)


class Transport(Protocol):
    """Carries encoded messages to the peer at the other end of ``link``."""

    def send(self, link: str, data: bytes) -> None: ...


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def fresh_epoch() -> int:
    return random.SystemRandom().getrandbits(64)


class EmbeddedReplica:
    def __init__(
        self,
        storage: Storage,
        node_id: str,
        *,
        config: ReplicaConfig | None = None,
        clock: Callable[[], int] = wall_clock_ms,
        new_epoch: Callable[[], int] = fresh_epoch,
    ) -> None:
        self.storage = storage
        self.replica = Replica.open(storage, node_id, clock, new_epoch, config)
        self.storage.commit(self.replica.ready().batch)
        self.transports: dict[str, Transport] = {}
        self._state_lock = threading.Lock()  # guards the replica and the queue
        self._commit_cond = threading.Condition()
        self._queued_ticket = 0
        self._durable_ticket = 0
        self._committing = False
        self._failures: dict[int, BaseException] = {}
        self.commits = 0

    # ---- typed accessors -------------------------------------------------------------

    def counter(self, path: str) -> CounterHandle:
        return CounterHandle(self, path, PNCounter)

    def gcounter(self, path: str) -> CounterHandle:
        return CounterHandle(self, path, GCounter)

    def set(self, path: str) -> SetHandle:
        return SetHandle(self, path, AWSet)

    def register(self, path: str) -> RegisterHandle:
        return RegisterHandle(self, path, LWWRegister)

    def mvregister(self, path: str) -> MVRegisterHandle:
        return MVRegisterHandle(self, path, MVRegister)

    def flag(self, path: str) -> FlagHandle:
        return FlagHandle(self, path, EWFlag)

    def maximum(self, path: str) -> ExtremumHandle:
        return ExtremumHandle(self, path, MaxRegister)

    def minimum(self, path: str) -> ExtremumHandle:
        return ExtremumHandle(self, path, MinRegister)

    def map(self, path: str) -> MapHandle:
        return MapHandle(self, path, ORMap)

    # ---- generic writes and reads ------------------------------------------------------

    def update(self, path: str, cls: type[T], mutate: Callable[[T, str], Any]) -> None:
        """Apply ``mutate(value, actor)`` at ``(path, cls)``; returns once durable.

        ``actor`` is this replica's current actor id, read under the lock: a mutator
        must tag its update with it, never with an id remembered from earlier.
        """
        self._submit(lambda r: r.update(path, cls, lambda child: mutate(child, r.actor)))

    def remove(self, path: str, cls: type[CRDT]) -> None:
        self._submit(lambda r: r.remove(path, cls))

    def get(self, path: str, cls: type[T]) -> T | None:
        with self._state_lock:
            found = self.replica.get(path, cls)
            return None if found is None else found.copy()

    def value(self, path: str) -> Any:
        """The value at ``path``: of its one type, or a dict by type name if several."""
        with self._state_lock:
            found = {type(c).__name__: c.value() for c in self.replica.keyspace.types_at(path)}
        if len(found) == 1:
            return next(iter(found.values()))
        return found or None

    def keys(self, prefix: str = "") -> list[tuple[str, str]]:
        with self._state_lock:
            return [(p, c.TYPE_NAME) for p, c in self.replica.keyspace.keys(prefix)]

    def status(self, prefix: str = "") -> dict[str, object]:
        with self._state_lock:
            return self.replica.status(prefix)

    @property
    def actor(self) -> str:
        return self.replica.actor

    # ---- peers --------------------------------------------------------------------------

    def connect(self, link: str, transport: Transport, policy: LinkPolicy = EVERYTHING) -> None:
        self.transports[link] = transport
        self._submit(lambda r: r.connect(link, policy))

    def deliver(self, link: str, data: bytes) -> None:
        """Bytes from ``link``'s peer. Bad input raises ``ProtocolError``; nothing changes."""
        self._submit(lambda r: r.receive(link, data))

    def disconnect(self, link: str) -> None:
        with self._state_lock:
            self.replica.disconnect(link)
        self.transports.pop(link, None)

    def tick(self) -> None:
        """Call periodically (every few hundred ms): retransmits and flushes."""
        self._submit(lambda r: r.tick())

    # ---- group commit -------------------------------------------------------------------

    def _submit(self, step: Callable[[Replica], object]) -> None:
        """Apply ``step`` in memory now; return once a commit holding it is durable."""
        with self._state_lock:
            step(self.replica)  # raises before anything changes on bad input
            self._queued_ticket += 1
            ticket = self._queued_ticket
        self._wait_durable(ticket)

    def _wait_durable(self, ticket: int) -> None:
        with self._commit_cond:
            while self._durable_ticket < ticket:
                if self._committing:
                    self._commit_cond.wait()
                    continue
                self._committing = True
                self._commit_cond.release()
                try:
                    self._commit_queued()
                finally:
                    self._commit_cond.acquire()
                    self._committing = False
                    self._commit_cond.notify_all()
            failure = self._failures.get(ticket)
        if failure is not None:
            raise failure

    def _commit_queued(self) -> None:
        """Leader: commit everything queued so far in one transaction, then send."""
        with self._state_lock:
            ready = self.replica.ready()
            first, upto = self._durable_ticket + 1, self._queued_ticket
        try:
            self.storage.commit(ready.batch)
        except Exception as exc:
            self._reload()  # memory ran ahead of the store: bring it back in line
            with self._commit_cond:
                for ticket in range(first, upto + 1):
                    self._failures[ticket] = exc
        else:
            self.commits += 1
            self._send(ready.messages)
        with self._commit_cond:
            self._durable_ticket = upto

    def _send(self, messages: list[tuple[str, bytes]]) -> None:
        for link, data in messages:
            transport = self.transports.get(link)
            if transport is not None:
                transport.send(link, data)

    def _reload(self) -> None:
        with self._state_lock:
            self.replica = self.replica.reloaded(self.storage)

    def close(self) -> None:
        with self._state_lock:
            ready = self.replica.close()
        self.storage.commit(ready.batch)
        self._send(ready.messages)
        self.storage.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EmbeddedReplica({self.replica!r})"


def open_replica(
    path: str | Path,
    node_id: str,
    *,
    config: ReplicaConfig | None = None,
    max_store_bytes: int = 8 * 1024**3,
    clock: Callable[[], int] = wall_clock_ms,
    new_epoch: Callable[[], int] = fresh_epoch,
) -> EmbeddedReplica:
    """Open (or create) the replica stored in directory ``path`` for ``node_id``."""
    initial = min(64 * 1024**2, max_store_bytes)
    storage = LMDBStorage(path, initial_map_size=initial, max_map_size=max_store_bytes)
    try:
        return EmbeddedReplica(storage, node_id, config=config, clock=clock, new_epoch=new_epoch)
    except BaseException:
        storage.close()
        raise


# ---- typed handles ---------------------------------------------------------------------


class Handle(Generic[T]):
    def __init__(self, owner: EmbeddedReplica, path: str, cls: type[T]) -> None:
        self.owner, self.path, self.cls = owner, path, cls

    def _do(self, mutate: Callable[[T, str], Any]) -> None:
        self.owner.update(self.path, self.cls, mutate)

    def value(self) -> Any:
        found = self.owner.get(self.path, self.cls)
        return None if found is None else found.value()

    def remove(self) -> None:
        self.owner.remove(self.path, self.cls)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, {self.value()!r})"


def _joined(deltas: list[T]) -> T:
    first = deltas[0]
    for later in deltas[1:]:
        first.merge(later)
    return first


class CounterHandle(Handle[Any]):
    def increment(self, n: int = 1) -> None:
        self._do(lambda c, actor: c.increment(actor, n))

    def decrement(self, n: int = 1) -> None:
        self.increment(-n)


class SetHandle(Handle[AWSet]):
    def add(self, *elements: Any) -> None:
        self._do(lambda s, actor: _joined([s._delta()] + [s.add(actor, e) for e in elements]))

    def discard(self, *elements: Any) -> None:
        self._do(lambda s, actor: _joined([s._delta()] + [s.remove(e) for e in elements]))

    def __contains__(self, element: object) -> bool:
        found = self.owner.get(self.path, AWSet)
        return found is not None and element in found


class RegisterHandle(Handle[LWWRegister]):
    def set(self, value: object) -> None:
        hlc = self.owner.replica.hlc
        self._do(lambda r, actor: r.set(actor, value, hlc.now()))


class MVRegisterHandle(Handle[MVRegister]):
    def write(self, value: object) -> None:
        self._do(lambda r, actor: r.write(actor, value))


class FlagHandle(Handle[EWFlag]):
    def enable(self) -> None:
        self._do(lambda f, actor: f.enable(actor))

    def disable(self) -> None:
        self._do(lambda f, actor: f.disable())


class ExtremumHandle(Handle[Any]):
    def set(self, x: int | float) -> None:
        self._do(lambda r, actor: r.set(actor, x))


class MapHandle(Handle[ORMap]):
    def update(self, name: str, cls: type[T], mutate: Callable[[T, str], T]) -> None:
        """Mutate the nested value ``(name, cls)``; ``mutate`` gets it and the actor id."""
        self._do(lambda m, actor: m.apply(name, cls, lambda child: mutate(child, actor)))
