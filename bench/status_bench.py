"""What a Hello and a Status cost a daemon's event loop on a large store, in one run.

Run ``python bench/status_bench.py`` (``--keys N``, default 200,000). One LMDB
store of N counter keys, then, each in process CPU time:

(progress) events per actor, which every Hello and Status carries: counted afresh
    over every key (the baseline: what each call cost before the keyspace kept the
    count) against the kept count after
    one more update;
(digest) the Status digest: ``Keyspace.digest`` on the event loop (the baseline:
    every key encoded and hashed) against what ``AsyncReplica.durable_digest``
    runs in a worker thread (one LMDB snapshot, hashed from the stored encodings).

Nothing asserts on timings.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from typing import TypeVar

from sync import Keyspace, PNCounter
from sync._keyspace import digest_of_stored
from sync._replica import Replica
from sync.adapters.embedded import fresh_epoch, wall_clock_ms
from sync.adapters.lmdb_storage import LMDBStorage

R = TypeVar("R")
COMMIT_EVERY = 5_000


def cpu(work: Callable[[], R]) -> tuple[float, R]:
    began = time.process_time()
    result = work()
    return time.process_time() - began, result


def filled(storage: LMDBStorage, keys: int) -> Replica:
    r = Replica.open(storage, "bench", wall_clock_ms, fresh_epoch)
    for i in range(keys):
        r.update(f"k/{i}", PNCounter, lambda c: c.increment(r.actor, 1))
        if i % COMMIT_EVERY == COMMIT_EVERY - 1:
            storage.commit(r.ready().batch)
    storage.commit(r.ready().batch)
    return r


def counted_afresh(keyspace: Keyspace) -> dict[str, int]:
    """What every Hello and Status paid before: a pass over every key's context."""
    view = Keyspace()
    view.entries = keyspace.entries  # the same values, no count kept yet
    return view.actor_progress()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        storage = LMDBStorage(tmp)
        r = filled(storage, args.keys)
        r.keyspace.actor_progress()  # from here on the keyspace keeps the count
        recount_s, fresh = cpu(lambda: counted_afresh(r.keyspace))
        r.update("k/0", PNCounter, lambda c: c.increment(r.actor, 1))
        storage.commit(r.ready().batch)
        kept_s, kept = cpu(r.keyspace.actor_progress)
        assert sum(kept.values()) == sum(fresh.values()) + 1
        loop_s, on_loop = cpu(r.keyspace.digest)
        read_s, rows = cpu(storage.entries_snapshot)
        hash_s, stored = cpu(lambda: digest_of_stored(rows))
        assert stored == on_loop
        storage.close()
    keys = f"{args.keys:,} keys"
    print(f"(progress) counted afresh over {keys}: {recount_s * 1e3:,.1f} ms CPU (baseline)")
    print(f"(progress) kept, after one more update: {kept_s * 1e6:,.0f} us CPU "
          f"({recount_s / max(kept_s, 1e-9):,.0f}x less)")  # fmt: skip
    print(f"(digest)   Keyspace.digest on the event loop over {keys}: {loop_s:.2f} s CPU "
          "(baseline)")  # fmt: skip
    print(f"(digest)   durable_digest in a worker thread: {read_s:.2f} s snapshot + {hash_s:.2f} s "
          f"hashing ({loop_s / (read_s + hash_s):.1f}x less, none of it on the loop)")  # fmt: skip


if __name__ == "__main__":
    main()
