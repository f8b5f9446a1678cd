"""The asyncio front end: coroutine writers share commits, and every ack is durable."""

from __future__ import annotations

import asyncio
import itertools
import random
from pathlib import Path

import pytest

from sync import GCounter, PNCounter
from sync._messages import ProtocolError
from sync.adapters.aio import AsyncReplica
from sync.adapters.embedded import open_replica
from sync.adapters.lmdb_storage import LMDBStorage

CLOCK = itertools.count(1_700_000_000_000).__next__


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
