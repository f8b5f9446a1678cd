"""The embedding API: a durable replica in a directory, for your own program.

    from sync.adapters.embedded import open_replica
    with open_replica("/var/lib/myapp/state", node_id="pump-station-4") as r:
        r.counter("line1/anomalies").increment(3)   # returns once durable
        r.set("line1/alerts").add("pump-7")
        r.register("line1/threshold").set(0.8)
        print(r.value("line1/anomalies"))

Every write returns only after the LMDB transaction holding it has committed.
Writers from many threads share commits (group commit, leader/follower as in
LevelDB's write path). A writer applies its update in memory and joins the open
*group*; the first writer of a group to find no commit running leads: it closes
the group (later writers join the next one), commits everything the group
applied in one transaction, and wakes the group's writers. Meanwhile the next
group fills, and when the commit ends exactly one of its writers is woken to
lead it. So each writer is woken once, by the commit that holds its update, not
by every commit that ends while it waits (a thread woken for nothing costs a
GIL handoff). Durable throughput therefore rises with concurrency instead of
paying one fsync per write.

Peers connect through any ``Transport``: hand it to ``connect`` and feed the
bytes it receives to ``deliver``. Messages leave only after the state they
describe is durable.
"""

from __future__ import annotations

import dataclasses
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


class _Group:
    """Writers whose updates one commit will hold, and how that commit went."""

    __slots__ = ("cond", "done", "error", "may_lead")

    def __init__(self, may_lead: bool) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.may_lead = may_lead  # no commit runs: the next writer to look leads
        self.done = False
        self.error: BaseException | None = None

    def finish(self, error: BaseException | None) -> None:
        with self.cond:
            self.done, self.error = True, error
            self.cond.notify_all()

    def let_lead(self) -> None:
        """The commit before this group's ended: one waiting writer (or the next to
        arrive) leads."""
        with self.cond:
            self.may_lead = True
            self.cond.notify()

    def __repr__(self) -> str:
        return f"_Group(done={self.done}, may_lead={self.may_lead})"


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
        self._state_lock = threading.Lock()  # guards the replica and the open group
        self._open = _Group(may_lead=True)  # writers applied since the last commit began
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
        """The replica's status, and under ``"store"`` the room its store takes."""
        with self._state_lock:
            status = self.replica.status(prefix)
        return status | {"store": dataclasses.asdict(self.storage.usage())}

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
            group = self._open
        self._wait_durable(group)

    def _wait_durable(self, group: _Group) -> None:
        with group.cond:
            while not group.done and not group.may_lead:
                group.cond.wait()
            leads = not group.done
            group.may_lead = False
        if leads:
            self._commit_group(group)
        if group.error is not None:
            raise group.error

    def _commit_group(self, group: _Group) -> None:
        """Leader: close ``group`` (the open one), commit it in one transaction, wake
        its writers and send; then hand the lead to the group that filled meanwhile."""
        try:
            with self._state_lock:
                assert group is self._open, "only the open group has a leader"
                self._open = _Group(may_lead=False)
                ready = self.replica.ready()
            self.storage.commit(ready.batch)
        except BaseException as exc:
            self._fail(group, exc)
            if not isinstance(exc, Exception):
                raise
            return
        self.commits += 1
        group.finish(None)
        try:
            self._send(ready.messages)
        finally:
            with self._state_lock:
                following = self._open
            following.let_lead()

    def _fail(self, group: _Group, error: BaseException) -> None:
        """A commit failed: memory ran ahead of the store, so rebuild it from the
        store, and fail the writers of the group behind too: their updates are in
        the memory dropped. Both groups are woken whatever happens, or their writers
        would wait for ever."""
        with self._state_lock:
            following, self._open = self._open, _Group(may_lead=True)
            try:
                self.replica = self.replica.reloaded(self.storage)
            finally:
                group.finish(error)
                following.finish(error)

    def _send(self, messages: list[tuple[str, bytes]]) -> None:
        for link, data in messages:
            transport = self.transports.get(link)
            if transport is not None:
                transport.send(link, data)

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
    storage = LMDBStorage(path, max_map_size=max_store_bytes)
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
