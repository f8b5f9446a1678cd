"""Local updates on a bare replica, for counting their instructions.

64 writers alternate ``PNCounter`` increments and ``LWWRegister`` sets on keys of
their own (``storage_bench``'s mix), with one ``ready()``, committed to
``MemoryStorage``, per 32 updates, under the daemons' collector policy. Run it
under callgrind for two sizes and divide the difference by the updates between
them (64 * 200 for the sizes below); ``callgrind_annotate --inclusive=yes`` on
each splits it by compiled function (``CPyDef__replica___Replica___update``)::

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=100.out \\
        python bench/bare_update.py 100
    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=300.out \\
        python bench/bare_update.py 300

``CPyDef__crdt___encode`` is the encode of each changed key in ``ready()``. It
prints the thread CPU per update too, which on a shared machine moves with its
load; the instruction counts do not.
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
PER_READY = 32


def run(each: int) -> float:
    """``each`` updates per writer, interleaved; the CPU microseconds per update."""
    r = Replica.open(MemoryStorage(), "bench", wall_clock_ms, fresh_epoch)
    store = MemoryStorage()
    plans = [sb.writer_keys(w) for w in range(WRITERS)]
    actor = r.actor
    started, n = time.thread_time(), 0
    for i in range(each):
        k = (i // 2) % sb.KEYS_PER_WRITER
        for keys in plans:
            if i % 2 == 0:
                r.update(keys.counters[k], PNCounter, lambda c: c.increment(actor, 1))
            else:
                ts = r.hlc.now()
                r.update(keys.registers[k], LWWRegister, lambda g: g.set(actor, i, ts))  # noqa: B023
            n += 1
            if n % PER_READY == 0:
                store.commit(r.ready().batch)
    return (time.thread_time() - started) * 1e6 / n


if __name__ == "__main__":
    with sb.collector_policy("daemon"):
        print(f"{run(int(sys.argv[1])):.2f} us of CPU per update")
