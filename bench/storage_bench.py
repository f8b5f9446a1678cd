"""Benchmark edgesync's durable write path and sync traffic against baselines, in one run.

Run ``python bench/storage_bench.py`` (``--quick`` for a ~10x smaller smoke run,
``--json PATH`` to also write the results). Workloads:

(a) raw py-lmdb in a temp dir, opened like our store (sync=True, metasync=True):
    (a1) one ~40-byte put per synced write transaction (one fsync per write),
    (a2) 1,000 puts per synced write transaction.
(b) durable CRDT updates through ``open_replica`` with 1, 8 and 64 writer threads
    (counter increments and register sets on keys of their own; group commit),
    the same through ``AsyncReplica`` with 1, 8 and 64 coroutine writers, against
    (a1), as the daemons run: on their event loop (uvloop where installed) and
    with their garbage-collector policy (``sync.adapters.gc_policy``: the loaded
    state frozen, young collections every 50,000 allocations); extra rows run the
    64 on asyncio's own loop, with the journal off, with CPython's default
    collector, and on ``MemoryStorage`` (no disk: the most a group commit could
    reach with this CPU); an extra row with one coroutine applying 100 updates per
    durable wait; plus the same mix on a sans-IO ``Replica`` over ``MemoryStorage`` in
    one thread, one ``ready()`` per update, with the daemons' collector policy too
    (the ceiling the coroutine rows are a share of). The threaded rows keep
    CPython's defaults, as a program embedding ``open_replica`` does.
(c) bytes to converge three replicas after a partition, against shipping full state,
    over in-order links (as gRPC streams are) and again over reordering ones.

Then a cProfile of the one-writer durable path. Timings are the best of ``REPEATS``
runs, each in a fresh temp dir; nothing asserts on timings.
"""

# Each mutator lambda runs inside ``update``, before the loop variable moves on, so
# late binding is harmless here, and it is how callers write updates.
# ruff: noqa: B023

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import pstats
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from edge_node.daemon import run_event_loop
from sync import LWWRegister, PNCounter
from sync._memnet import Faults, MemoryNetwork
from sync._replica import Replica
from sync._storage import MemoryStorage, Storage
from sync.adapters.aio import AsyncReplica
from sync.adapters.embedded import EmbeddedReplica, fresh_epoch, open_replica, wall_clock_ms
from sync.adapters.gc_policy import daemon_gc
from sync.adapters.lmdb_storage import JOURNAL_BYTES, LMDBStorage

REPEATS = 3
KEYS_PER_WRITER = 100  # each writer owns this many counters and as many registers
BATCH = 100  # updates per durable wait in the extra batched-writer row
LMDB_MAP_BYTES = 256 * 1024**2
TARGET_RATIO = 40  # durable updates/s over (a1)'s puts/s
TARGET_RATE = 50_000  # durable updates/s
SEED = 7
LOOP_NAME = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"  # the daemons' loop

R = TypeVar("R")


@dataclass(frozen=True)
class Sizes:
    single_put_txns: int  # (a1)
    batch_txns: int  # (a2)
    puts_per_batch: int  # (a2)
    durable_runs: tuple[tuple[int, int], ...]  # (b): (writer threads, total updates)
    memory_updates: int  # (b) in-memory ceiling
    partition_updates: int  # (c): updates on a, and as many on b
    partition_keys: int  # (c)
    profile_updates: int
    shared_history: int = 10_000  # (c): keys all replicas share before the partition


FULL = Sizes(
    single_put_txns=500,
    batch_txns=50,
    puts_per_batch=1_000,
    # 20,000 rather than 40,000 for 8 and 64 writers keeps the default run under two
    # minutes at today's few thousand durable updates/s (three repetitions each).
    durable_runs=((1, 4_000), (8, 20_000), (64, 20_000)),
    memory_updates=20_000,
    partition_updates=1_000,
    partition_keys=300,
    profile_updates=2_000,
)
QUICK = Sizes(
    single_put_txns=100,
    batch_txns=5,
    puts_per_batch=1_000,
    durable_runs=((1, 400), (8, 2_000), (64, 2_000)),
    memory_updates=2_000,
    partition_updates=100,
    partition_keys=30,
    profile_updates=200,
    shared_history=1_000,
)


@dataclass
class Row:
    workload: str
    metric: str
    value: float
    unit: str  # "/s", "bytes" or "" (a plain number): decides formatting
    ratio: float | None = None
    ratio_means: str = ""  # what the ratio divides, e.g. "ours/(a1)"
    target: str = ""


# ---- helpers -------------------------------------------------------------------


def best_of(run: Callable[[], tuple[float, R]], repeats: int = REPEATS) -> tuple[float, R]:
    """The smallest time ``run`` reports over ``repeats`` runs, with that run's result.

    ``run`` times itself, so setup (temp dirs, opening stores, threads) stays off
    the clock.
    """
    best: tuple[float, R] | None = None
    for _ in range(repeats):
        gc.collect()  # so one run's garbage is not collected on the next run's clock
        seconds, result = run()
        if best is None or seconds < best[0]:
            best = (seconds, result)
    assert best is not None
    return best


def timed(work: Callable[[], R]) -> tuple[float, R]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


# ---- (a) raw py-lmdb baselines -----------------------------------------------------


def lmdb_items(count: int) -> list[tuple[bytes, bytes]]:
    """``count`` (40-byte key, 40-byte value) pairs, formatted outside the timed loop."""
    return [(f"bench/key/{i:030d}".encode(), f"value/{i:034d}".encode()) for i in range(count)]


def open_synced_env(directory: str) -> lmdb.Environment:
    """An environment with our store's durability: fsync data and meta on every commit."""
    return lmdb.open(directory, map_size=LMDB_MAP_BYTES, sync=True, metasync=True, readahead=False)


def put_in_synced_txns(
    env: lmdb.Environment, items: list[tuple[bytes, bytes]], per_txn: int
) -> None:
    for first in range(0, len(items), per_txn):
        with env.begin(write=True) as txn:
            for key, value in items[first : first + per_txn]:
                txn.put(key, value)


def timed_lmdb_puts(txns: int, per_txn: int) -> tuple[float, None]:
    """Seconds to put ``txns * per_txn`` items, ``per_txn`` per synced transaction."""
    items = lmdb_items(txns * per_txn)
    with tempfile.TemporaryDirectory() as directory:
        env = open_synced_env(directory)
        try:
            seconds, _ = timed(lambda: put_in_synced_txns(env, items, per_txn))
        finally:
            env.close()
    return seconds, None


def lmdb_puts_per_second(txns: int, per_txn: int) -> float:
    seconds, _ = best_of(lambda: timed_lmdb_puts(txns, per_txn))
    return txns * per_txn / seconds


def run_lmdb_baselines(sizes: Sizes) -> tuple[list[Row], float]:
    """(a)'s rows, and (a1)'s puts/s, the baseline of (b)."""
    single = lmdb_puts_per_second(sizes.single_put_txns, 1)
    batched = lmdb_puts_per_second(sizes.batch_txns, sizes.puts_per_batch)
    rows = [
        Row(f"(a1) raw lmdb, 1 put/txn x {sizes.single_put_txns}", "puts/s", single, "/s"),
        Row(
            f"(a2) raw lmdb, {sizes.puts_per_batch:,} puts/txn x {sizes.batch_txns}",
            "puts/s",
            batched,
            "/s",
            batched / single,
            "(a2)/(a1)",
        ),
    ]
    return rows, single


# ---- (b) durable CRDT updates ---------------------------------------------------------


@dataclass(frozen=True)
class WriterKeys:
    counters: list[str]
    registers: list[str]


def writer_keys(writer: int) -> WriterKeys:
    """Paths formatted once, outside the timed loops."""
    return WriterKeys(
        counters=[f"c/{writer}/{k}" for k in range(KEYS_PER_WRITER)],
        registers=[f"r/{writer}/{k}" for k in range(KEYS_PER_WRITER)],
    )


def write_mix(r: EmbeddedReplica, keys: WriterKeys, count: int) -> None:
    """``count`` durable updates, alternating a counter increment and a register set."""
    for i in range(count):
        k = (i // 2) % KEYS_PER_WRITER
        if i % 2 == 0:
            r.counter(keys.counters[k]).increment()
        else:
            r.register(keys.registers[k]).set(i)


def expected_increments(count: int) -> int:
    return (count + 1) // 2  # the even i in range(count)


def check_durable_writes(r: EmbeddedReplica, writers: int, each: int) -> None:
    for writer in range(writers):
        keys = writer_keys(writer)
        total = sum(r.value(path) or 0 for path in keys.counters)
        assert total == expected_increments(each), (writer, total)


def timed_concurrent_writes(r: EmbeddedReplica, writers: int, each: int) -> float:
    """Seconds from the barrier releasing ``writers`` threads until the last one finishes."""
    start = threading.Barrier(writers + 1)
    plans = [writer_keys(w) for w in range(writers)]

    def writer(keys: WriterKeys) -> None:
        start.wait()
        write_mix(r, keys, each)

    with ThreadPoolExecutor(max_workers=writers) as pool:
        futures = [pool.submit(writer, keys) for keys in plans]
        start.wait()
        began = time.perf_counter()
        for future in futures:
            future.result()  # re-raises a writer's exception
        return time.perf_counter() - began


def timed_durable_run(writers: int, each: int) -> tuple[float, int]:
    """Seconds for ``writers * each`` durable updates on a fresh store, and commits made."""
    with tempfile.TemporaryDirectory() as directory, open_replica(directory, "bench") as r:
        seconds = timed_concurrent_writes(r, writers, each)
        commits = r.commits
        check_durable_writes(r, writers, each)
    return seconds, commits


def target_verdict(rate: float, baseline: float) -> str:
    met = rate >= TARGET_RATIO * baseline and rate >= TARGET_RATE
    goal = f">= {TARGET_RATIO}x (a1) and >= {TARGET_RATE:,}/s"
    return f"{goal}: {'met' if met else 'MISSED'}"


def durable_rows(writers: int, total: int, single_put_rate: float) -> list[Row]:
    each = total // writers
    done = each * writers
    seconds, commits = best_of(lambda: timed_durable_run(writers, each))
    w = f"(b) durable, {writers} writer{'s' if writers > 1 else ''}, {done:,} updates"
    return rate_rows(w, done, seconds, commits, single_put_rate)


def rate_rows(w: str, done: int, seconds: float, commits: int, baseline: float) -> list[Row]:
    """A durable workload's rate against (a1), its verdict, and its updates per commit."""
    rate = done / seconds
    verdict = target_verdict(rate, baseline)
    return [
        Row(w, "updates/s", rate, "/s", rate / baseline, "ours/(a1)", verdict),
        Row(w, "updates per commit", done / commits, ""),
    ]


async def async_write_mix(r: AsyncReplica, keys: WriterKeys, count: int) -> None:
    """The same mix as ``write_mix``, as one coroutine writer."""
    for i in range(count):
        k = (i // 2) % KEYS_PER_WRITER
        if i % 2 == 0:
            await r.update(keys.counters[k], PNCounter, lambda c, actor: c.increment(actor, 1))
        else:
            ts = r.replica.hlc.now()
            await r.update(keys.registers[k], LWWRegister, lambda g, actor: g.set(actor, i, ts))


def run_on(loop: str, main: Coroutine[Any, Any, R]) -> R:
    """Run ``main`` on the daemons' event loop (``"daemon"``: uvloop where it is
    installed) or on asyncio's own (``"asyncio"``)."""
    return run_event_loop(main) if loop == "daemon" else asyncio.run(main)


def timed_async_run(
    writers: int,
    each: int,
    *,
    journal_bytes: int = JOURNAL_BYTES,
    loop: str = "daemon",
    collector: str = "daemon",
    store: str = "lmdb",
) -> tuple[float, int]:
    """Seconds for ``writers`` coroutines to make ``each`` durable updates, and commits
    made; ``collector``: the daemons' GC policy, or ``"default"`` (CPython's);
    ``store``: ``"memory"`` commits to ``MemoryStorage`` (no disk at all)."""

    async def run(directory: str) -> tuple[float, int]:
        storage: Storage = (
            MemoryStorage()
            if store == "memory"
            else LMDBStorage(directory, journal_bytes=journal_bytes)
        )
        r = AsyncReplica(storage, "bench", clock=wall_clock_ms, new_epoch=fresh_epoch)
        plans = [writer_keys(w) for w in range(writers)]
        began = time.perf_counter()
        await asyncio.gather(*(async_write_mix(r, keys, each) for keys in plans))
        seconds = time.perf_counter() - began
        commits = r.commits
        for keys in plans:
            assert sum_of_counters(r.replica, keys.counters) == expected_increments(each)
        await r.close()
        return seconds, commits

    with tempfile.TemporaryDirectory() as directory, collector_policy(collector):
        return run_on(loop, run(directory))


def collector_policy(collector: str) -> contextlib.AbstractContextManager[None]:
    return daemon_gc() if collector == "daemon" else contextlib.nullcontext()


def async_rows(writers: int, total: int, single_put_rate: float) -> list[Row]:
    each = total // writers
    done = each * writers
    seconds, commits = best_of(lambda: timed_async_run(writers, each))
    w = f"(b) durable, {LOOP_NAME}, {writers} coroutine writer{'s' if writers > 1 else ''}"
    return rate_rows(w, done, seconds, commits, single_put_rate)


def variant_rows(
    writers: int, total: int, rate_of_ours: float, change: str, ratio: str, **run: Any
) -> list[Row]:
    """The same coroutine writers with one thing changed, against the row as measured."""
    w = f"(b) durable, {writers} coroutine writers, {change} (extra)"
    rate, per_commit = timed_variant(writers, total, **run)
    return [
        Row(w, "updates/s", rate, "/s", rate_of_ours / rate, ratio),
        Row(w, "updates per commit", per_commit, ""),
    ]


def no_disk_rows(writers: int, total: int, single_put_rate: float) -> list[Row]:
    """The same coroutine writers committing to ``MemoryStorage``: a disk that costs
    nothing. No disk could take the durable rows above this one, so its ratio to
    (a1) is the most any group commit could reach on this machine's CPU."""
    w = f"(b) {writers} coroutine writers, MemoryStorage: no disk (extra)"
    rate, per_commit = timed_variant(writers, total, store="memory")
    return [
        Row(w, "updates/s", rate, "/s", rate / single_put_rate, "no disk/(a1)"),
        Row(w, "updates per commit", per_commit, ""),
    ]


def timed_variant(writers: int, total: int, **run: Any) -> tuple[float, float]:
    """Updates/s and updates per commit of ``writers`` coroutines sharing ``total``
    updates, with ``timed_async_run``'s options ``run``; the best of ``REPEATS``."""
    each = total // writers
    done = each * writers
    seconds, commits = best_of(lambda: timed_async_run(writers, each, **run))
    return done / seconds, done / commits


def timed_async_batched_run(count: int) -> tuple[float, int]:
    """Seconds for one coroutine to make ``count`` durable updates, ``BATCH`` at a time:
    the same mix, applied with ``Replica.update`` and made durable with one wait per
    batch (as a sensor pipeline or a bulk loader writes). Commits made, too."""

    async def run(directory: str) -> tuple[float, int]:
        r = AsyncReplica(
            LMDBStorage(directory), "bench", clock=wall_clock_ms, new_epoch=fresh_epoch
        )
        keys, replica = writer_keys(0), r.replica
        began = time.perf_counter()
        for first in range(0, count, BATCH):
            for i in range(first, min(first + BATCH, count)):
                apply_update(replica, keys, i)
            await r.tick()  # returns once the commit holding the batch is done
        seconds = time.perf_counter() - began
        commits = r.commits
        assert sum_of_counters(r.replica, keys.counters) == expected_increments(count)
        await r.close()
        return seconds, commits

    with tempfile.TemporaryDirectory() as directory, daemon_gc():
        return run_on("daemon", run(directory))


def async_batched_rows(total: int, single_put_rate: float) -> list[Row]:
    seconds, commits = best_of(lambda: timed_async_batched_run(total))
    w = f"(b) durable, {LOOP_NAME}, 1 writer, {BATCH} updates per durable wait (extra)"
    return rate_rows(w, total, seconds, commits, single_put_rate)


def timed_memory_updates(count: int) -> tuple[float, None]:
    """Seconds for the same update mix on a sans-IO replica over ``MemoryStorage``."""
    storage = MemoryStorage()
    r = Replica.open(storage, "n", wall_clock_ms, fresh_epoch)
    storage.commit(r.ready().batch)
    keys = writer_keys(0)
    start = time.perf_counter()
    for i in range(count):
        apply_update(r, keys, i)
        storage.commit(r.ready().batch)
    seconds = time.perf_counter() - start
    assert sum_of_counters(r, keys.counters) == expected_increments(count)
    return seconds, None


def apply_update(r: Replica, keys: WriterKeys, i: int) -> None:
    """Update ``i`` of the mix, applied in memory on a sans-IO replica."""
    k = (i // 2) % KEYS_PER_WRITER
    if i % 2 == 0:
        r.update(keys.counters[k], PNCounter, lambda c: c.increment(r.actor, 1))
    else:
        ts = r.hlc.now()
        r.update(keys.registers[k], LWWRegister, lambda g: g.set(r.actor, i, ts))


def sum_of_counters(r: Replica, paths: list[str]) -> int:
    counters = (r.get(path, PNCounter) for path in paths)
    return sum(c.value() for c in counters if c is not None)


def run_durable_updates(sizes: Sizes, single_put_rate: float) -> tuple[list[Row], float]:
    """(b)'s rows, and the in-memory ceiling in updates/s."""
    rows: list[Row] = []
    for writers, total in sizes.durable_runs:
        rows += durable_rows(writers, total, single_put_rate)
    for writers, total in sizes.durable_runs:
        most_writers = async_rows(writers, total, single_put_rate)
        rows += most_writers
    ours = most_writers[0].value  # the same writers, as edgesync runs them
    # Every commit straight to LMDB, as ``LMDBStorage`` committed before its journal.
    rows += variant_rows(writers, total, ours, "journal off", "journal on/off", journal_bytes=0)
    if LOOP_NAME != "asyncio":
        rows += variant_rows(
            writers, total, ours, "asyncio's own loop", f"{LOOP_NAME}/asyncio", loop="asyncio"
        )
    rows += variant_rows(
        writers, total, ours, "CPython's default GC", "daemons'/default GC", collector="default"
    )
    rows += no_disk_rows(writers, total, single_put_rate)
    rows += async_batched_rows(sizes.durable_runs[-1][1], single_put_rate)
    n = sizes.memory_updates
    with daemon_gc():
        seconds, _ = best_of(lambda: timed_memory_updates(n))
    ceiling = n / seconds
    w = f"(b) in-memory (MemoryStorage), 1 thread, {n:,} updates"
    rows.append(Row(w, "updates/s", ceiling, "/s", ceiling / single_put_rate, "ours/(a1)"))
    return rows, ceiling


# ---- (c) bytes to converge after a partition ------------------------------------------


class AccountingNetwork(MemoryNetwork):
    """A ``MemoryNetwork`` that also counts bytes per directed link and at cut links."""

    def __init__(self, rng: random.Random, faults: Faults) -> None:
        super().__init__(rng, faults)
        self.link_bytes: dict[tuple[str, str], int] = {}
        self.bytes_lost_at_cut = 0

    def _send(self, src: str, dst: str, data: bytes) -> None:
        self.link_bytes[(src, dst)] = self.link_bytes.get((src, dst), 0) + len(data)
        if frozenset((src, dst)) in self.cut:
            self.bytes_lost_at_cut += len(data)
        super()._send(src, dst, data)


@dataclass
class ConvergenceResult:
    partition_bytes: int  # sent from the partition until b and c were quiet
    lost_at_cut: int  # of those, a's sends dropped at the cut
    heal_bytes: int  # sent from the heal until all three were quiet
    full_state_bytes: int
    heal_link_bytes: dict[str, int] = field(default_factory=dict)
    heal_messages: int = 0


def three_linked_nodes(reorder: bool) -> AccountingNetwork:
    """a, b and c, linked pairwise; links deliver in order (as a gRPC stream does)
    unless ``reorder``: then any pending message may go next (the simulator's model,
    where a Deltas overtaking its Hello is refused and resent on the timer)."""
    net = AccountingNetwork(random.Random(SEED), Faults(reorder=reorder))
    for name in ("a", "b", "c"):
        net.add(name)
    for x, y in (("a", "b"), ("a", "c"), ("b", "c")):
        net.link(x, y)
    net.run()
    return net


def mixed_updates(net: MemoryNetwork, name: str, count: int, keys: int) -> None:
    """``count`` updates on ``name``: even-numbered keys are counters, odd ones registers."""
    r = net.nodes[name].replica
    paths = [f"k/{k}" for k in range(keys)]
    for i in range(count):
        k = i % keys
        if k % 2 == 0:
            r.update(paths[k], PNCounter, lambda c: c.increment(r.actor, 1))
        else:
            ts = r.hlc.now()
            r.update(paths[k], LWWRegister, lambda g: g.set(r.actor, f"{name}{i}", ts))
        net.flush(name)  # commit, then send: one driver round per update


def full_state_bytes(net: MemoryNetwork) -> int:
    """a's whole keyspace encoded, sent to b and to c, plus b's (= c's) sent to a."""
    a_state = len(net.nodes["a"].replica.keyspace.encode())
    b_state = len(net.nodes["b"].replica.keyspace.encode())
    return 2 * a_state + b_state


def heal_and_converge(net: AccountingNetwork) -> tuple[int, dict[str, int], int]:
    """Bytes sent from healing a's links until quiet, per directed link, and messages."""
    sent, links, delivered = net.stats.bytes_sent, dict(net.link_bytes), net.stats.delivered
    net.heal("a", "b")
    net.heal("a", "c")
    net.run()
    digests = net.digests()
    assert len(set(digests.values())) == 1, digests
    per_link = {f"{s}->{d}": n - links.get((s, d), 0) for (s, d), n in net.link_bytes.items()}
    return net.stats.bytes_sent - sent, per_link, net.stats.delivered - delivered


def preload(net: MemoryNetwork, keys: int) -> None:
    """Shared history before the partition: ``keys`` registers written on c, synced."""
    r = net.nodes["c"].replica
    for i in range(keys):
        ts = r.hlc.now()
        r.update(f"base/{i}", LWWRegister, lambda g: g.set(r.actor, i, ts))
        if i % 100 == 99:
            net.flush("c")
    net.flush("c")
    net.run()


def measure_convergence(sizes: Sizes, history: int, reorder: bool) -> ConvergenceResult:
    net = three_linked_nodes(reorder)
    preload(net, history)
    start = net.stats.bytes_sent
    net.partition("a", "b")
    net.partition("a", "c")
    mixed_updates(net, "a", sizes.partition_updates, sizes.partition_keys)
    mixed_updates(net, "b", sizes.partition_updates, sizes.partition_keys)
    net.run()
    digests = net.digests()
    assert digests["b"] == digests["c"] != digests["a"], digests
    partition_bytes, lost = net.stats.bytes_sent - start, net.bytes_lost_at_cut
    full = full_state_bytes(net)
    heal_bytes, per_link, messages = heal_and_converge(net)
    return ConvergenceResult(partition_bytes, lost, heal_bytes, full, per_link, messages)


def run_convergence(sizes: Sizes) -> tuple[list[Row], ConvergenceResult]:
    """Two scenarios: no shared history (the worst case for deltas), and 10,000 shared
    keys; each over in-order links, then again over reordering ones (bytes only)."""
    rows: list[Row] = []
    for history in (0, sizes.shared_history):
        result = measure_convergence(sizes, history, reorder=False)
        n, k = sizes.partition_updates, sizes.partition_keys
        w = f"(c) a | b,c, {n:,} updates each side on {k} keys, {history:,} shared keys"
        delta, full = result.heal_bytes, result.full_state_bytes
        reordered = measure_convergence(sizes, history, reorder=True).heal_bytes
        rows += [
            Row(w, "bytes sent during partition", result.partition_bytes, "bytes"),
            Row(w, "  of which a's, lost at the cut", result.lost_at_cut, "bytes"),
            Row(w, "full-state baseline bytes", full, "bytes"),
            Row(w, "bytes after heal (delta)", delta, "bytes", full / delta, "full-state/delta"),
            Row(w, "  same, reordering links", reordered, "bytes", full / reordered,
                "full-state/delta"),
        ]  # fmt: skip
    return rows, result


# ---- profile ---------------------------------------------------------------------------


def print_profile(sizes: Sizes) -> None:
    n = sizes.profile_updates
    print(f"\nprofile of (b), 1 writer (main thread), {n:,} durable updates; top 15 by tottime")
    profile = cProfile.Profile()
    with tempfile.TemporaryDirectory() as directory, open_replica(directory, "bench") as r:
        profile.runcall(write_mix, r, writer_keys(0), n)
    pstats.Stats(profile, stream=sys.stdout).sort_stats("tottime").print_stats(15)


# ---- output ----------------------------------------------------------------------------


def format_value(value: float, unit: str) -> str:
    if unit == "bytes":
        return f"{value:,.0f} B"
    if unit == "/s":
        return f"{value:,.0f}/s"
    return f"{value:,.1f}"


def format_ratio(row: Row) -> str:
    return "" if row.ratio is None else f"{row.ratio:,.2f}x {row.ratio_means}"


def row_cells(row: Row) -> list[str]:
    value = format_value(row.value, row.unit)
    return [row.workload, row.metric, value, format_ratio(row), row.target]


def print_table(rows: list[Row]) -> None:
    header = ["workload", "metric", "value", "ratio", "target"]
    lines = [row_cells(r) for r in rows]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    print("-+-".join("-" * w for w in widths))
    for line in lines:
        text = [line[0].ljust(widths[0]), line[1].ljust(widths[1])]
        ratio, target = line[3].ljust(widths[3]), line[4]
        print(" | ".join([*text, line[2].rjust(widths[2]), ratio, target]).rstrip())


def print_notes(sizes: Sizes, ceiling: float, rows: list[Row], conv: ConvergenceResult) -> None:
    durable = [r for r in rows if r.workload.startswith("(b) durable") and r.unit == "/s"]
    shares = "; ".join(
        f"{r.workload.removeprefix('(b) durable, ')} {r.value / ceiling:.0%}" for r in durable
    )
    links = ", ".join(f"{link} {n:,} B" for link, n in sorted(conv.heal_link_bytes.items()))
    print(
        f"\nnotes: (b) durable rate as a share of the in-memory ceiling: {shares}."
        f" Writers alternate PNCounter increments and LWWRegister sets over"
        f" {KEYS_PER_WRITER} + {KEYS_PER_WRITER} keys of their own; the in-memory row runs"
        " the same mix with one ready() and MemoryStorage commit per update. The"
        " coroutine rows and the in-memory row run with the daemons' GC policy"
        " (sync.adapters.gc_policy.tune_gc); the threaded rows with CPython's default.\n"
        "(c) all bytes are whole encoded protocol messages (Hello, Deltas, Ack) as the"
        " network counts them in stats.bytes_sent, dropped ones included; the full-state"
        " baseline is len(Keyspace.encode()) of a's state twice (to b and to c) plus b's"
        " once (to a), payload only: no framing, no hellos, no acks.\n"
        f"(c) after the heal, {conv.heal_messages:,} messages delivered; bytes per link: {links}."
    )


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "py-lmdb": importlib.metadata.version("lmdb"),
        "lmdb": ".".join(map(str, lmdb.version())),
        "edgesync": importlib.metadata.version("edgesync"),
        "cpus": os.cpu_count(),
        # Timings on a shared machine are only as good as its idleness: record it.
        "load_average_1min": round(os.getloadavg()[0], 2),
        "temp_dir": tempfile.gettempdir(),
        "repeats": REPEATS,
    }


def json_payload(
    env: dict[str, Any], sizes: Sizes, rows: list[Row], conv: ConvergenceResult
) -> dict[str, Any]:
    return {
        "environment": env,
        "sizes": asdict(sizes),
        "rows": [asdict(r) | {"ratio_text": format_ratio(r)} for r in rows],
        "convergence": asdict(conv),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="~10x smaller sizes, for smoke tests")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    env = environment()
    started = time.perf_counter()
    print(
        f"Python {env['python']}, py-lmdb {env['py-lmdb']} (LMDB {env['lmdb']}),"
        f" edgesync {env['edgesync']}, {env['cpus']} CPUs,"
        f" load average {env['load_average_1min']} at start, temp dir {env['temp_dir']}"
    )
    print(f"sizes: {sizes}; timings are the best of {REPEATS} repetitions (time.perf_counter)\n")
    rows, single_put_rate = run_lmdb_baselines(sizes)
    durable, ceiling = run_durable_updates(sizes, single_put_rate)
    convergence, conv = run_convergence(sizes)
    rows += durable + convergence
    print_table(rows)
    print_notes(sizes, ceiling, rows, conv)
    print_profile(sizes)
    wall = time.perf_counter() - started
    print(f"whole run: {wall:.1f} s, load average {os.getloadavg()[0]:.2f} at end")
    if args.json:
        payload = json_payload(env, sizes, rows, conv) | {"wall_seconds": wall}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
