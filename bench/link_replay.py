"""Replay one replication link's frames into a hub replica in process, and time it.

``gossip_bench.py`` measures the link between two processes, where gRPC, the event
loops and the machine's load move every figure; this takes the hub's core work
alone: a sender ``Replica`` loads a backlog (``gossip_bench``'s workloads), the
frames it sends are recorded, then replayed into a fresh hub ``Replica`` with the
daemons' collector and allocator policies (``tune_gc``, ``applying_large_frame`` and
``tune_malloc``), and the thread
CPU of the hub's ``receive``, ``ready()`` and (with ``--lmdb``) commit is printed
per delta, with the sender's CPU for building the frames, and the minor page faults
the hub's thread takes in each: a fresh page costs a hub 1-3 us, which its CPU time
alone hides among everything else (the state's copy of a 16 KiB value takes four).

CPU time on a shared machine moves with its load; instruction counts do not.
``--save FILE`` records the frames and stops, ``--load FILE`` replays them, so
the replay alone can run under callgrind, counting only the hub's two calls::

    python bench/link_replay.py 100000 --save frames.pkl
    valgrind --tool=callgrind --collect-atstart=no \\
        --toggle-collect='CPyPy__replica___Replica___receive' \\
        --toggle-collect='CPyPy__replica___Replica___ready' \\
        python bench/link_replay.py 100000 --load frames.pkl --reps 1

(the names are the compiled core's entry points; divide the total by the deltas).
``--value-bytes 16384 --per-commit 15`` is ``gossip_bench``'s large workload.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import pickle
import resource
import tempfile
import time
from pathlib import Path

from sync import LWWRegister, PNCounter
from sync._memnet import introduce
from sync._messages import Deltas, decode_message
from sync._replica import Replica
from sync.adapters.gc_policy import applying_large_frame, tune_gc
from sync.adapters.lmdb_storage import LMDBStorage
from sync.adapters.malloc_policy import tune_malloc

Recording = tuple[list[bytes], list[bytes], float]  # the sender's Hello, its frames, CPU s


def clock() -> int:
    return int(time.time() * 1000)


_EPOCHS = itertools.count(1)


def new_epoch() -> int:
    return next(_EPOCHS)


def write(r: Replica, i: int, blob: bytes | None) -> None:
    """``gossip_bench``'s update ``i``: a counter or a small register, or a blob."""
    actor, ts = r.actor, r.hlc.now()
    if blob is not None:
        value = i.to_bytes(8, "big") + blob[8:]
        r.update(f"blob/{i}", LWWRegister, lambda g: g.set(actor, value, ts))
    elif i % 2 == 0:
        r.update(f"c/{i}", PNCounter, lambda c: c.increment(actor, 1))
    else:
        r.update(f"r/{i}", LWWRegister, lambda g: g.set(actor, i, ts))


def record(updates: int, per_commit: int, blob: bytes | None) -> Recording:
    """The sender meets the hub, goes offline, loads the backlog, comes back, and
    drains it; returns its Hello and Deltas frames and the CPU it spent sending."""
    sender = Replica("sender", new_epoch(), clock, new_epoch)
    hub = Replica("hub", new_epoch(), clock, new_epoch)
    introduce(sender, "hub", hub, "sender", rounds=4)
    sender.disconnect("hub")
    hub.disconnect("sender")
    for first in range(0, updates, per_commit):
        for i in range(first, min(first + per_commit, updates)):
            write(sender, i, blob)
        sender.ready()
    sender.connect("hub")
    hub.connect("sender")
    hello = [raw for _, raw in sender.ready().messages]
    for _, raw in hub.ready().messages:
        sender.receive("hub", raw)
    frames: list[bytes] = []
    spent = 0.0
    while True:
        began = time.thread_time()
        out = sender.ready().messages
        spent += time.thread_time() - began
        if not out:
            return hello, frames, spent
        for _, raw in out:
            if isinstance(decode_message(raw), Deltas):
                frames.append(raw)
            hub.receive("sender", raw)
        for _, raw in hub.ready().messages:
            began = time.thread_time()
            sender.receive("hub", raw)
            spent += time.thread_time() - began


class Phases:
    """Thread CPU seconds and minor page faults, summed per phase of applying a frame."""

    NAMES = ("receive", "ready", "commit")

    def __init__(self) -> None:
        self.cpu = [0.0] * len(self.NAMES)
        self.faults = [0] * len(self.NAMES)
        self._at = self._now()

    @staticmethod
    def _now() -> tuple[float, int]:
        return time.thread_time(), resource.getrusage(resource.RUSAGE_THREAD).ru_minflt

    def begin(self) -> None:
        self._at = self._now()

    def end(self, phase: int) -> None:
        """Count what passed since the last ``begin`` or ``end`` to ``phase``."""
        now = self._now()
        self.cpu[phase] += now[0] - self._at[0]
        self.faults[phase] += now[1] - self._at[1]
        self._at = now


def replay(recording: Recording, updates: int, lmdb: bool) -> str:
    hello, frames, sender_cpu = recording
    with tempfile.TemporaryDirectory() as tmp:
        storage = LMDBStorage(Path(tmp) / "hub") if lmdb else None
        if storage is not None:
            hub = Replica.open(storage, "hub", clock, new_epoch)
            storage.commit(hub.ready().batch)
        else:
            hub = Replica("hub", new_epoch(), clock, new_epoch)
        hub.connect("sender")
        for raw in hello:
            hub.receive("sender", raw)
        hub.ready()
        phases = Phases()
        for raw in frames:
            phases.begin()
            with applying_large_frame(len(raw)):
                hub.receive("sender", raw)
            phases.end(0)
            ready = hub.ready()
            phases.end(1)
            if storage is not None:
                storage.commit(ready.batch)
            phases.end(2)
        got = sum(n for actor, n in hub.keyspace.actor_progress().items() if "sender@" in actor)
        assert got == updates, f"the hub has {got} of {updates} updates"
        if storage is not None:
            storage.close()
    us = 1e6 / updates
    receiving, readying, committing = phases.cpu
    faults = ", ".join(
        f"{name} {n / updates:.2f}" for name, n in zip(Phases.NAMES, phases.faults, strict=True)
    )
    return (
        f"{len(frames)} frames; hub CPU per delta: receive {receiving * us:.2f} us, ready"
        f" {readying * us:.2f}, commit {committing * us:.2f}, total"
        f" {(receiving + readying + committing) * us:.2f}; sender {sender_cpu * us:.2f} us;"
        f" minor faults per delta: {faults}, total {sum(phases.faults) / updates:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("updates", type=int)
    parser.add_argument("--value-bytes", type=int, default=0, help="0: small deltas")
    parser.add_argument("--per-commit", type=int, default=1_000)
    parser.add_argument("--lmdb", action="store_true", help="commit the hub's batches to LMDB")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--glibc-defaults", action="store_true", help="leave glibc's malloc thresholds alone"
    )
    parser.add_argument("--save", type=Path, help="record the frames into FILE and stop")
    parser.add_argument("--load", type=Path, help="replay the frames recorded in FILE")
    args = parser.parse_args()
    blob = os.urandom(args.value_bytes) if args.value_bytes else None
    tune_gc()
    if not args.glibc_defaults:
        tune_malloc()
    for rep in range(args.reps):
        gc.collect()
        if args.load:
            recording: Recording = pickle.loads(args.load.read_bytes())
        else:
            recording = record(args.updates, args.per_commit, blob)
        if args.save:
            args.save.write_bytes(pickle.dumps(recording))
            return
        gc.collect()
        print(f"rep {rep}: {replay(recording, args.updates, args.lmdb)}", flush=True)


if __name__ == "__main__":
    main()
