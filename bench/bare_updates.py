"""Updates on a bare replica, for counting instructions: the encode of ``ready()``.

64 interleaved writers alternate ``PNCounter`` increments and ``LWWRegister`` sets
on their own keys (``storage_bench``'s mix) on a ``Replica`` over ``MemoryStorage``,
one ``ready()`` per 32 updates, under the daemons' collector policy. Run it under
callgrind twice and divide the difference by the extra updates (64 x 200)::

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=100.out \\
        python bench/bare_updates.py 100
    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=300.out \\
        python bench/bare_updates.py 300

``callgrind_annotate --inclusive=yes`` on each gives the per-function figures
(``CPyDef__crdt___encode`` is the encode of each changed key in ``ready()``).
"""

from __future__ import annotations

import sys
import time

import storage_bench as sb

from sync import LWWRegister, PNCounter
from sync._replica import Replica
from sync._storage import MemoryStorage
from sync.adapters.embedded import fresh_epoch, wall_clock_ms

WRITERS = 64
GROUP = 32  # updates per ready()


def run(each: int) -> None:
    r = Replica.open(MemoryStorage(), "bench", wall_clock_ms, fresh_epoch)
    store = MemoryStorage()
    plans = [sb.writer_keys(w) for w in range(WRITERS)]
    actor = r.actor
    began, n = time.thread_time(), 0
    for i in range(each):
        for keys in plans:
            k = (i // 2) % sb.KEYS_PER_WRITER
            if i % 2 == 0:
                r.update(keys.counters[k], PNCounter, lambda c: c.increment(actor, 1))
            else:
                ts = r.hlc.now()
                r.update(keys.registers[k], LWWRegister, lambda g: g.set(actor, i, ts))  # noqa: B023
            n += 1
            if n % GROUP == 0:
                store.commit(r.ready().batch)
    print(f"{n} updates: cpu {(time.thread_time() - began) * 1e6 / max(n, 1):.2f} us each")


if __name__ == "__main__":
    with sb.collector_policy("daemon"):
        run(int(sys.argv[1]))
