"""An asyncio front end to a durable replica, for daemons and async programs.

Writers are coroutines, so they never fight over the GIL: an update is applied in
memory on the event loop at once, then awaits durability. A group of applied
updates becomes one ``Replica.ready()`` batch, committed in a worker thread of its
own (LMDB releases the GIL while it writes and fsyncs) while the loop keeps
applying updates that will form the next batch. The slower the disk, the bigger
each group: throughput follows the CPU, not the fsync rate.

Commits are pipelined two deep. When every writer waits on the same commit, the
loop has nothing to apply while it runs, and CPU and disk take turns. So while a
commit runs, the writers it woke are flushed as a batch of their own once half of
the writers in play wait again: they split into two groups, one applying while
the other's batch is on disk. That pays only while a commit takes less time than
applying every writer's update once (W writers, c seconds of apply each, commits
of f seconds: two groups give W/2 per max(f, cW/2), one group W per f + cW, and
the first is more exactly when f < cW). Both are measured as they go (commit time
in the worker, apply time from a group's wakeup to its flush), and a slow disk
keeps everyone in one group, as group commit alone would. The model flatters the
split: two groups make twice the commits, each with its fsync, and while one
group applies, the other's commit waits for the GIL after its fsync, so both
measures grow once split. So a split needs applying every writer to take twice
a commit (``SPLIT_MARGIN``); on this project's 2-core host with 64 writers, one
group ran 44,000-56,000 updates/s against 28,000-44,000 for the split the plain
rule chose. When the rule turns back to one group, writers who applied during
the last commit wait for the ones it woke, so the two groups merge; flushed at
once, they would take turns at the disk forever. Batches go to the one
worker thread in order, so they commit in the order ``ready()`` made them, and a
batch's writers are woken (and its messages sent) only after it committed. A
failed commit fails every batch behind it (they hold its changes) and every
writer that applied since, and the replica is rebuilt from the store.

Messages leave only after the commit that holds their state returned.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from sync import CRDT
from sync._keyspace import Key, digest_of_stored, parse_storage_key
from sync._policy import EVERYTHING, LinkPolicy
from sync._replica import Ready, Replica, ReplicaConfig
from sync._storage import Storage, StorageError, WriteBatch

log = logging.getLogger("edgesync.replica")

T = TypeVar("T", bound=CRDT)
Update = tuple[str, type[CRDT], Callable[[Any, str], Any]]  # path, type, mutate(value, actor)
Sender = Callable[[str, bytes], Awaitable[None] | None]
PIPELINE_DEPTH = 2  # batches submitted to the worker thread and not yet settled
SPLIT_MARGIN = 2  # split only when applying every writer takes this many commits


class _Batch:
    """One submitted commit: its writers, what ``ready()`` gave, the worker's future."""

    __slots__ = ("committed", "ready", "waiting")

    def __init__(
        self, waiting: list[asyncio.Future[None]], ready: Ready, committed: Future[float]
    ) -> None:
        self.waiting, self.ready, self.committed = waiting, ready, committed


class AsyncReplica:
    def __init__(
        self,
        storage: Storage,
        node_id: str,
        *,
        clock: Callable[[], int],
        new_epoch: Callable[[], int],
        config: ReplicaConfig | None = None,
        send: Sender | None = None,
    ) -> None:
        self.storage = storage
        self.replica = Replica.open(storage, node_id, clock, new_epoch, config)
        self.storage.commit(self.replica.ready().batch)
        self.send = send
        # Writers whose inputs are applied in memory but not yet taken into a commit.
        self._waiting: list[asyncio.Future[None]] = []
        self._pending: deque[_Batch] = deque()  # submitted, in commit order
        self._committer: asyncio.Task[None] | None = None  # settles _pending in order
        self._flush_soon = False  # a flush is scheduled for the end of this loop round
        # Flush once this many writers wait (and a pipeline slot is free); no split
        # until commits and applies have been timed.
        self._split_at = sys.maxsize
        self._commit_seconds: float | None = None  # moving average, per commit
        self._apply_seconds: float | None = None  # moving average, per waiting writer
        self._woken_at: float | None = None  # when the last settled batch's writers woke
        self._failed: BaseException | None = None  # a commit failed; later ones must not run
        self._closing = False  # close() began: no ready() of our own any more
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")
        # The loop this replica's futures belong to, taken at the first wait:
        # asyncio.get_running_loop() per update was a measurable share of a write.
        self._loop: asyncio.AbstractEventLoop | None = None
        self.commits = 0
        self.watchers: list[Callable[[list[Key]], None]] = []  # told the keys each commit changed

    @property
    def actor(self) -> str:
        return self.replica.actor

    def update(
        self, path: str, cls: type[T], mutate: Callable[[T, str], Any]
    ) -> asyncio.Future[None]:
        """Apply ``mutate(value, actor)`` at ``(path, cls)`` now; the future settles
        once it is durable. (A plain function returning the future, not a coroutine:
        one coroutine less per write, on the path every writer takes.)"""
        self.replica.update(path, cls, _as_actor(mutate, self.replica.actor))
        return self._durable_soon()

    async def update_all(self, updates: Iterable[Update]) -> None:
        """Apply each ``(path, cls, mutate)`` in order, as ``update`` does; return once
        all are durable. One writer, so they share one commit: a program that
        gathers many changes (the sensor pipeline's group of batches) pays one
        task, one future and one commit for them, not one each (nor a split of its
        own updates into two commits). If a mutator raises, the others still
        apply and become durable, then its error is raised."""
        actor, failed = self.replica.actor, None
        for path, cls, mutate in updates:
            try:
                self.replica.update(path, cls, _as_actor(mutate, actor))
            except Exception as exc:
                failed = failed or exc
        await self._durable_soon()
        if failed is not None:
            raise failed

    async def remove(self, path: str, cls: type[CRDT]) -> None:
        self.replica.remove(path, cls)
        await self._durable_soon()

    async def connect(
        self,
        link: str,
        policy: LinkPolicy = EVERYTHING,
        certified_node: str | None = None,
        own_writes_only: bool = False,
    ) -> None:
        self.replica.connect(link, policy, certified_node, own_writes_only)
        await self._durable_soon()

    async def deliver(self, link: str, data: bytes) -> None:
        """Bytes from a peer. Bad input raises ``ProtocolError`` and changes nothing."""
        await self.deliver_soon(link, data)

    def deliver_soon(self, link: str, data: bytes) -> asyncio.Future[None]:
        """Apply bytes from a peer now; the future settles once they are durable.

        A link reader applies the next frame while the commit of the last one runs;
        what the frame calls for (its Ack) still leaves only after that commit.
        Bad input raises ``ProtocolError`` here and changes nothing.
        """
        self.replica.receive(link, data)
        return self._durable_soon()

    async def durable_digest(self, prefix: str = "") -> str:
        """``Keyspace.digest`` of the committed state, computed in a worker thread from
        one read of the store: over a million keys it takes seconds, which the event
        loop (and every link it drives) should not wait for."""
        snapshot = self.storage.entries_snapshot
        scope = prefix.encode("utf-8")
        return await asyncio.to_thread(lambda: digest_of_stored(snapshot(scope), prefix))

    async def tick(self) -> None:
        self.replica.tick()
        await self._durable_soon()

    def disconnect(self, link: str) -> None:
        self.replica.disconnect(link)

    def _durable_soon(self) -> asyncio.Future[None]:
        """A future that settles with the commit of everything applied so far."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        waiting = self._waiting
        waiting.append(done)
        if len(waiting) >= self._split_at and len(self._pending) < PIPELINE_DEPTH:
            self._flush()  # a group's worth: to the disk while the others apply
        elif not self._pending and not self._flush_soon:
            # The disk is idle: commit at the end of this round, which takes in every
            # writer already woken and about to apply.
            self._flush_soon = True
            loop.call_soon(self._flush)
        return done

    def _flush(self, force: bool = False) -> None:
        """Make one batch of every writer waiting and hand it to the worker thread
        (``force``: even with no writer waiting, for what ``ready()`` held back)."""
        self._flush_soon = False
        if not self._waiting and (not force or self._closing):
            return
        waiting, self._waiting = self._waiting, []
        if self._woken_at is not None and waiting:  # the first group since a wakeup
            per_writer = (time.perf_counter() - self._woken_at) / len(waiting)
            self._apply_seconds = _averaged(self._apply_seconds, per_writer)
            self._woken_at = None
        ready = self.replica.ready()
        committed = self._worker.submit(self._commit_in_order, ready.batch)
        self._pending.append(_Batch(waiting, ready, committed))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._settle_in_order())

    def _commit_in_order(self, batch: WriteBatch) -> float:
        """In the worker thread: commit, unless an earlier batch (whose changes this
        one holds) failed; return how long the commit took."""
        failed = self._failed
        if failed is not None:  # the same kind of error, so callers can tell why
            kind = type(failed) if isinstance(failed, StorageError) else StorageError
            raise kind(f"not committed: an earlier commit failed: {failed}")
        began = time.perf_counter()
        try:
            self.storage.commit(batch)
        except BaseException as exc:
            self._failed = exc
            raise
        return time.perf_counter() - began

    async def _settle_in_order(self) -> None:
        """Wake each batch's writers and send its messages once it committed, in order."""
        while self._pending:
            batch = self._pending[0]
            try:
                seconds = await asyncio.wrap_future(batch.committed)
            except Exception as exc:
                self._pending.popleft()
                _settle(batch.waiting, exc)
                if not self._pending:
                    self._recover(exc)
                continue
            self._pending.popleft()
            self.commits += 1
            self._commit_seconds = _averaged(self._commit_seconds, seconds)
            for event in batch.ready.events:
                log.info(event.what, extra={"node": self.replica.node_id, **event.fields})
            self._split_at = self._group_size(len(batch.waiting))
            _settle(batch.waiting, None)
            self._woken_at = None  # who waits now applied before this wakeup
            if self._waiting and len(self._waiting) >= self._split_at:
                self._flush()  # they applied while the disk was busy: their turn now
            elif self._waiting and not self._pending:
                self._merge_groups()
            self._woken_at = time.perf_counter()
            self._notify(batch.ready.batch.entries)
            await self._send(batch.ready.messages)
            if batch.ready.more:
                self._ready_more()

    def _ready_more(self) -> None:
        """``ready()`` held intervals back (``ReplicaConfig.intervals_per_ready``) and
        its messages are out now: build the next ones at the end of this round."""
        assert self._loop is not None
        if not self._closing:
            self._loop.call_soon(self._flush, True)

    def _merge_groups(self) -> None:
        """No split any more, yet writers wait who applied during the last commit: flush
        them at the end of this round, with the writers just woken, who apply first
        (their wakeups are queued before it). Flushed now, they would keep the two
        groups taking turns at the disk, one commit each, with none of the overlap
        that a split is for."""
        assert self._loop is not None
        if not self._flush_soon:
            self._flush_soon = True
            self._loop.call_soon(self._flush)

    def _group_size(self, woken: int) -> int:
        """Half the writers in play (the ``woken`` writers of a commit, those in later
        batches, those waiting) while ``SPLIT_MARGIN`` commits take less time than
        applying all of them once; otherwise no split (the maximum size)."""
        writers = woken + len(self._waiting) + sum(len(b.waiting) for b in self._pending)
        commit, apply = self._commit_seconds, self._apply_seconds
        if commit is None or apply is None or SPLIT_MARGIN * commit >= apply * writers:
            return sys.maxsize
        return max(1, (writers + 1) // 2)

    def _recover(self, exc: Exception) -> None:
        """Every batch after a failed commit has failed too: memory ran ahead of the
        store, so fail the writers who applied since and rebuild from the store."""
        waiting, self._waiting = self._waiting, []
        _settle(waiting, exc)
        self._reload()
        self._failed = None

    def _notify(self, changed: dict[bytes, bytes | None]) -> None:
        """Tell the watchers the keys a commit changed (by storage key): parsed only
        when someone watches, which saved a hub 1.5 us per received key."""
        if changed and self.watchers:
            keys = [parse_storage_key(raw) for raw in changed]
            for watcher in list(self.watchers):
                watcher(keys)

    async def _send(self, messages: list[tuple[str, bytes]]) -> None:
        if self.send is None:
            return
        for link, data in messages:
            sent = self.send(link, data)
            if sent is not None:
                await sent

    def _reload(self) -> None:
        """A commit failed: memory ran ahead of the store, so rebuild it from the store."""
        self.replica = self.replica.reloaded(self.storage)

    async def close(self) -> None:
        self._closing = True
        while self._waiting or self._pending:
            self._flush()
            if self._committer is not None:
                await self._committer
        ready = self.replica.close()
        await asyncio.wrap_future(self._worker.submit(self.storage.commit, ready.batch))
        await self._send(ready.messages)
        self._worker.shutdown()
        self.storage.close()

    def __repr__(self) -> str:
        return f"AsyncReplica({self.replica!r}, commits={self.commits})"


def _settle(waiting: list[asyncio.Future[None]], error: Exception | None) -> None:
    """Wake the writers of one commit (a cancelled writer's future is already done)."""
    for done in waiting:
        if not done.done():
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)


def _as_actor(mutate: Callable[[Any, str], Any], actor: str) -> Callable[[Any], Any]:
    return lambda child: mutate(child, actor)


def _averaged(average: float | None, sample: float) -> float:
    """A moving average that gives the newest sample a weight of 1/4."""
    return sample if average is None else average + (sample - average) / 4
