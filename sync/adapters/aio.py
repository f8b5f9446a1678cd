"""An asyncio front end to a durable replica, for daemons and async programs.

Writers are coroutines, so they never fight over the GIL: an update is applied in
memory on the event loop at once, then awaits durability. One committer task
takes everything applied so far (one ``Replica.ready()``), commits it in a worker
thread (LMDB releases the GIL while it writes and fsyncs), and meanwhile the loop
keeps applying updates that will form the next commit. The slower the disk, the
bigger each group: throughput follows the CPU, not the fsync rate.

Messages leave only after the commit that holds their state returned.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sync import CRDT
from sync._keyspace import Key, parse_storage_key
from sync._policy import EVERYTHING, LinkPolicy
from sync._replica import Replica, ReplicaConfig
from sync._storage import Storage

log = logging.getLogger("edgesync.replica")

T = TypeVar("T", bound=CRDT)
Sender = Callable[[str, bytes], Awaitable[None] | None]


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
        self._committer: asyncio.Task[None] | None = None
        self.commits = 0
        self.watchers: list[Callable[[list[Key]], None]] = []  # told the keys each commit changed

    @property
    def actor(self) -> str:
        return self.replica.actor

    async def update(self, path: str, cls: type[T], mutate: Callable[[T, str], Any]) -> None:
        """Apply ``mutate(value, actor)`` at ``(path, cls)``; return once durable."""
        actor = self.replica.actor
        self.replica.update(path, cls, lambda child: mutate(child, actor))
        await self._until_durable()

    async def remove(self, path: str, cls: type[CRDT]) -> None:
        self.replica.remove(path, cls)
        await self._until_durable()

    async def connect(
        self,
        link: str,
        policy: LinkPolicy = EVERYTHING,
        certified_node: str | None = None,
        own_writes_only: bool = False,
    ) -> None:
        self.replica.connect(link, policy, certified_node, own_writes_only)
        await self._until_durable()

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

    async def tick(self) -> None:
        self.replica.tick()
        await self._until_durable()

    def disconnect(self, link: str) -> None:
        self.replica.disconnect(link)

    async def _until_durable(self) -> None:
        await self._durable_soon()

    def _durable_soon(self) -> asyncio.Future[None]:
        """A future that settles with the commit of everything applied so far."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(done)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_loop())
        return done

    async def _commit_loop(self) -> None:
        """Commit whatever has been applied, again and again, until nothing waits."""
        while self._waiting:
            # ``ready()`` takes exactly the inputs of the writers waiting now.
            waiting, self._waiting = self._waiting, []
            ready = self.replica.ready()
            try:
                await asyncio.to_thread(self.storage.commit, ready.batch)
            except Exception as exc:
                self._reload()
                _settle(waiting, exc)
                continue
            self.commits += 1
            for event in ready.events:
                log.info(event.what, extra={"node": self.replica.node_id, **event.fields})
            _settle(waiting, None)
            self._notify([parse_storage_key(raw) for raw in ready.batch.entries])
            await self._send(ready.messages)

    def _notify(self, keys: list[Key]) -> None:
        if keys:
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
        while self._committer is not None and not self._committer.done():
            await self._committer
        ready = self.replica.close()
        await asyncio.to_thread(self.storage.commit, ready.batch)
        await self._send(ready.messages)
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
