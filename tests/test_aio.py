"""The asyncio front end: coroutine writers share commits, and every ack is durable."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sync import GCounter, LWWRegister, PNCounter, Timestamp
from sync._errors import ProtocolError
from sync._messages import Deltas, decode_message
from sync._replica import Replica, ReplicaConfig
from sync._storage import MemoryStorage, StoreFullError, WriteBatch
from sync.adapters.aio import AsyncReplica
from sync.adapters.embedded import open_replica
from sync.adapters.lmdb_storage import LMDBStorage

CLOCK = itertools.count(1_700_000_000_000).__next__
TS = Timestamp(1_700_000_000_000, 0)


def open_async(path: Path, node_id: str = "n") -> AsyncReplica:
    rng = random.Random(1)
    return AsyncReplica(
        LMDBStorage(path), node_id, clock=CLOCK, new_epoch=lambda: rng.getrandbits(64)
    )


def test_coroutine_writers_share_commits_and_everything_acked_is_on_disk(tmp_path: Path) -> None:
    writers, each = 64, 20

    async def main() -> int:
        r = open_async(tmp_path)

        async def writer(w: int) -> None:
            for i in range(each):
                await r.update(f"c/{w % 8}", PNCounter, lambda c, actor: c.increment(actor, 1))
                await r.update(f"g/{w}/{i}", GCounter, lambda c, actor: c.increment(actor, 2))

        await asyncio.gather(*(writer(w) for w in range(writers)))
        commits = r.commits
        await r.close()
        return commits

    commits = asyncio.run(main())
    assert commits < writers * each * 2 / 4  # groups, not one commit per write
    with open_replica(tmp_path, "n") as r:
        assert sum(r.value(f"c/{k}") for k in range(8)) == writers * each
        assert len(r.keys("g/")) == writers * each


def test_updates_applied_together_share_one_commit_and_a_bad_one_spoils_no_other(
    tmp_path: Path,
) -> None:
    async def main() -> tuple[int, int]:
        r = open_async(tmp_path)
        await r.tick()
        before = r.commits
        await r.update_all([(f"g/{i}", GCounter, _increment(i)) for i in range(50)])
        together = r.commits - before
        with pytest.raises(ValueError):
            await r.update_all([
                ("x", GCounter, lambda c, actor: c.increment(actor, 1)),
                ("x", GCounter, lambda c, actor: c.increment(actor, -1)),
                ("y", LWWRegister, lambda reg, actor: reg.set(actor, "kept", TS)),
            ])  # fmt: skip
        await r.close()
        return together, r.commits - before

    together, commits = asyncio.run(main())
    assert together == 1 and commits == 2
    with open_replica(tmp_path, "n") as r:
        assert [r.value(f"g/{i}") for i in range(50)] == list(range(50))
        assert r.value("x") == 1 and r.value("y") == "kept"


def _increment(n: int) -> Callable[[GCounter, str], GCounter]:
    return lambda c, actor: c.increment(actor, n)


def test_bad_input_raises_and_commits_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        r = open_async(tmp_path)
        await r.update("x", GCounter, lambda c, actor: c.increment(actor, 1))
        before = r.commits
        with pytest.raises(ValueError):
            await r.update("x", GCounter, lambda c, actor: c.increment(actor, -1))
        with pytest.raises(ProtocolError):
            await r.deliver("nobody", b"\x01\x02")
        assert r.commits == before
        await r.close()

    asyncio.run(main())


def test_a_failed_commit_fails_the_batches_behind_it_and_every_ack_is_on_disk(
    tmp_path: Path,
) -> None:
    """Commits are pipelined: when one fails (the store is at its ceiling), the batches
    queued behind it hold its changes, so they fail too, as does every writer that
    applied meanwhile; the replica reloads, and later writes go on."""
    acked: list[str] = []
    refused: list[str] = []

    async def main() -> None:
        rng = random.Random(1)
        storage = LMDBStorage(tmp_path, initial_map_size=1 << 20, max_map_size=1 << 20)
        r = AsyncReplica(storage, "n", clock=CLOCK, new_epoch=lambda: rng.getrandbits(64))

        async def writer(w: int) -> None:
            for i in range(40):
                path = f"blob/{w}/{i}"
                try:
                    await r.update(path, LWWRegister, lambda g, a: g.set(a, "x" * 2000, TS))
                except StoreFullError:
                    refused.append(path)
                else:
                    acked.append(path)

        epoch = r.replica.epoch
        await asyncio.gather(*(writer(w) for w in range(32)))
        assert r.commits > 2 and refused  # pipelined commits, and the ceiling was hit
        assert r.replica.epoch == epoch  # reloaded, not restarted: no dot it sent is lost
        await r.update("after", GCounter, lambda c, actor: c.increment(actor, 1))
        await r.close()

    asyncio.run(main())
    with open_replica(tmp_path, "n", max_store_bytes=1 << 20) as r:
        stored = {path for path, _ in r.keys("blob/")}
        assert set(acked) <= stored  # every acknowledged write is durable
        assert not stored & set(refused)  # and no refused one slipped in behind a failure
        assert r.value("after") == 1


def test_writers_split_into_two_groups_only_while_commits_are_quicker_than_applies() -> None:
    """Two groups pay while one group's commit hides behind the other's applies (a
    commit quicker than applying every writer once); a slower disk keeps one group."""

    async def main() -> None:
        rng = random.Random(1)
        r = AsyncReplica(MemoryStorage(), "n", clock=CLOCK, new_epoch=lambda: rng.getrandbits(64))
        assert r._group_size(64) > 64  # nothing timed yet: no split
        r._apply_seconds = 25e-6  # per writer: 64 of them take 1.6 ms
        r._commit_seconds = 0.4e-3
        assert r._group_size(64) == 32
        r._commit_seconds = 3e-3
        assert r._group_size(64) > 64
        await r.close()

    asyncio.run(main())


class SlowDisk(MemoryStorage):
    """A store whose commits take 20 ms, as a slow disk's would, and which counts
    the writers' updates each commit holds."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def commit(self, batch: WriteBatch) -> None:
        time.sleep(0.02)
        self.sizes.append(sum(key.startswith(b"w/") for key in batch.entries))
        super().commit(batch)


def test_split_groups_merge_back_once_commits_are_slower_than_applies() -> None:
    """Writers split in two, then the disk proves slow: the groups must merge, not
    keep taking turns at the disk with a commit each and no overlap."""
    writers, rounds = 32, 6
    disk = SlowDisk()

    async def main() -> None:
        rng = random.Random(1)
        r = AsyncReplica(disk, "n", clock=CLOCK, new_epoch=lambda: rng.getrandbits(64))
        r._split_at = writers // 2  # as if commits had been quick so far

        async def writer(w: int) -> None:
            for _ in range(rounds):
                await r.update(f"w/{w}", GCounter, lambda c, actor: c.increment(actor, 1))

        await asyncio.gather(*(writer(w) for w in range(writers)))
        await r.close()

    asyncio.run(main())
    updates = [size for size in disk.sizes if size]
    assert sum(updates) == writers * rounds
    assert updates[0] == writers // 2  # the split happened
    assert updates[-2:] == [writers, writers]  # and the groups merged


def test_a_capped_ready_is_called_again_until_the_window_is_full() -> None:
    """With one interval per ready(), AsyncReplica sends each and builds the next by
    itself: a backlog fills the window with no further input."""
    sent: list[bytes] = []

    async def main() -> None:
        rng = random.Random(1)
        config = ReplicaConfig(batch_bytes=200, intervals_per_ready=1)
        a = AsyncReplica(MemoryStorage(), "a", clock=CLOCK, new_epoch=lambda: rng.getrandbits(64),
                         config=config, send=lambda link, data: sent.append(data))  # fmt: skip
        b = Replica.open(MemoryStorage(), "b", CLOCK, lambda: rng.getrandbits(64), config)
        b.connect("a")
        await a.connect("b")
        for _, hello in b.ready().messages:
            await a.deliver("b", hello)
        a.disconnect("b")  # b stays tracked: a logs for it
        for i in range(40):
            await a.update(f"k{i}", GCounter, lambda c, actor: c.increment(actor, 1))
        await a.connect("b")
        b.disconnect("a")
        b.connect("a")
        sent.clear()
        for _, hello in b.ready().messages:
            await a.deliver("b", hello)
        deadline = time.monotonic() + 30  # each sends one, commits in the worker, builds the next
        while deltas() < 8 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await a.close()

    def deltas() -> int:
        return sum(decode_message(data).__class__ is Deltas for data in sent)

    asyncio.run(main())
    assert deltas() == 8


def test_the_durable_digest_equals_the_keyspace_digest_for_every_prefix(tmp_path: Path) -> None:
    """Status reads the digest from the store in a thread; it must be the keyspace's."""

    async def main() -> None:
        r = open_async(tmp_path)
        for path in ["a", "a/b", "a/é", "b/1", "local/raw", "local", "z"]:
            await r.update(path, PNCounter, lambda c, actor: c.increment(actor, 2))
            await r.update(path, LWWRegister, lambda g, actor: g.set(actor, 7, TS))
        await r.remove("z", PNCounter)  # a tombstone counts too
        for prefix in ["", "a", "a/", "local", "local/", "b/1", "nothing"]:
            assert await r.durable_digest(prefix) == r.replica.keyspace.digest(prefix), prefix
        await r.close()

    asyncio.run(main())
