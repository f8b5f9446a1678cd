# ruff: noqa: E402  (BLAS thread limits must be set before numpy is imported)
"""Inference throughput: the whole sensor pipeline against the raw interpreter.

    python bench/inference_bench.py [--batches 200] [--batch 256] [--rounds 7]

One core: BLAS held to one thread, both legs' interpreters built with
``num_threads=1`` (XNNPACK runs on the calling thread), all inference on the
main thread. The pipeline leg replays a simulated vibration recording from an
NPY file as fast as it goes: file source, windowing, bounded buffer, features,
batched model invoke, calibration-thresholded flags, CRDT updates committed to
an LMDB replica through the daemon's path (an ``AsyncReplica`` on an event loop
thread, group commits, up to 8 batches awaiting their commit); the clock stops
once every update is durable. The raw leg calls the same model's batched invoke
on precomputed feature rows of the same batch size, as many batches, nothing else.

The machine is shared, so its load drifts; a ratio of two legs measured minutes
apart would measure the drift. The legs alternate instead: each round runs one
raw leg and one pipeline leg back to back (the order swapped every round), and
the ratio is taken within the round. Printed: medians and ranges over the
rounds, of the wall-clock ratio and of the ratio in CPU time (the process's CPU
seconds, which count the pipeline's event-loop thread and LMDB work too, and
which other processes' load disturbs far less than the wall clock).
Targets: ratio >= 0.5 and >= 1,000,000 samples/s through the pipeline.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core: set before numpy loads its BLAS

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sensors.features import features
from sensors.model import AnomalyModel, ModelCard
from sensors.pipeline import Pipeline
from sensors.replay import ReplaySource
from sensors.signals import DEFAULT_SPECS
from sensors.simulated import SimulatedSource
from sensors.state import LoopWriter
from sync.adapters.aio import AsyncReplica
from sync.adapters.embedded import fresh_epoch, wall_clock_ms
from sync.adapters.lmdb_storage import LMDBStorage

SPEC = DEFAULT_SPECS["vibration"]
THREADS = 1  # the interpreter's threads, both legs: "one core"


def recording(path: Path, windows: int) -> Path:
    source = SimulatedSource("bench", SPEC, 1, np.random.default_rng(1), realtime=False,
                             anomaly_rate=0.01, clock=lambda: 1_800_000_000.0)  # fmt: skip
    np.save(path, np.concatenate([b.windows.reshape(-1) for b in source.step(windows)]))
    return path


class LoopThread:
    """An event loop in a thread holding the replica, as in the daemon."""

    def __init__(self, data: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.replica = AsyncReplica(LMDBStorage(data), "bench-edge", clock=wall_clock_ms,
                                    new_epoch=fresh_epoch)  # fmt: skip
        # Opening commits the store's meta and starts the commit thread: setup, as
        # in a daemon that opened its store long before, so outside the clock.
        asyncio.run_coroutine_threadsafe(self.replica.tick(), self.loop).result()

    def __enter__(self) -> LoopWriter:
        return LoopWriter(self.replica, self.loop)

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.replica.close(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@dataclass(frozen=True)
class Leg:
    """One timed leg: windows through it, wall seconds, process CPU seconds."""

    windows: int
    wall_s: float
    cpu_s: float

    @property
    def per_s(self) -> float:
        return self.windows / self.wall_s

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.windows * 1e6


def load_model(kind: str, batch: int) -> AnomalyModel:
    return AnomalyModel(ModelCard.load(kind), batch, threads=THREADS)


def pipeline_leg(path: Path, data: Path, batch: int) -> Leg:
    """Windows through the whole pipeline, durable in the store."""
    with LoopThread(data) as writer:
        pipeline = Pipeline(writer, batch=batch, capacity=1 << 20, load_model=load_model)
        replay = ReplaySource(path, "pump-1", "vibration", SPEC.rate_hz, SPEC.window,
                              chunk=batch * SPEC.window, start_s=1_800_000_000.0)  # fmt: skip
        buffer = pipeline.add(replay)
        pipeline._scorer("vibration")  # load and calibrate outside the clock
        began, cpu = time.perf_counter(), time.process_time()
        for block in replay.blocks():
            buffer.put(block)
            while len(buffer) >= batch:
                pipeline.step()
        while pipeline.step():
            pass
        writer.flush()  # every update durable before the clock stops
        leg = Leg(pipeline.windows_scored, time.perf_counter() - began, time.process_time() - cpu)
        assert buffer.dropped == 0
        return leg


def raw_leg(model: AnomalyModel, rows: np.ndarray, batches: int) -> Leg:
    began, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        model.invoke(rows)
    return Leg(batches * rows.shape[0], time.perf_counter() - began, time.process_time() - cpu)


def rounds(path: Path, tmp: Path, batch: int, batches: int, count: int) -> list[tuple[Leg, Leg]]:
    """(raw, pipeline) per round, the two legs back to back, their order swapped
    every round so that a steady drift in load favours neither."""
    model = load_model("vibration", batch)
    first = np.load(path)[: batch * SPEC.window].reshape(batch, SPEC.window)
    rows = np.ascontiguousarray(features(first, SPEC.bands))
    model.invoke(rows)  # warm up
    pipeline_leg(path, tmp / "warm-up", batch)
    out = []
    for i in range(count):
        if i % 2 == 0:
            raw = raw_leg(model, rows, batches)
            piped = pipeline_leg(path, tmp / f"store{i}", batch)
        else:
            piped = pipeline_leg(path, tmp / f"store{i}", batch)
            raw = raw_leg(model, rows, batches)
        out.append((raw, piped))
    return out


def spread(values: list[float], fmt: str) -> str:
    """median (min-max)"""
    mid, low, high = (format(v, fmt) for v in (statistics.median(values), min(values), max(values)))
    return f"{mid} ({low}-{high})"


def verdict(value: float, target: float) -> str:
    return "MET" if value >= target else "MISSED"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    windows = args.batches * args.batch
    with tempfile.TemporaryDirectory() as tmp:
        path = recording(Path(tmp) / "vibration.npy", windows)
        legs = rounds(path, Path(tmp), args.batch, args.batches, args.rounds)
    raw, piped = [r for r, _ in legs], [p for _, p in legs]
    ratios = [p.per_s / r.per_s for r, p in legs]
    cpu_ratios = [r.cpu_us / p.cpu_us for r, p in legs]
    samples = [p.per_s * SPEC.window for p in piped]
    card = load_model("vibration", args.batch).card
    print(f"model {card.path.name} ({card.raw['architecture']}), batch {args.batch}, "
          f"window {SPEC.window}, {windows} windows a leg, {args.rounds} rounds alternating "
          f"raw and pipeline legs; one core: interpreter num_threads={THREADS} in both "
          "legs, BLAS 1 thread")  # fmt: skip
    print("median (min-max) over the rounds")
    print(f"{'leg':<34} {'windows/s':>30} {'samples/s':>14} {'CPU us/window':>22}")
    for name, leg in (("raw interpreter batched invoke", raw),
                      ("whole pipeline (file..LMDB state)", piped)):  # fmt: skip
        wps = [x.per_s for x in leg]
        print(f"{name:<34} {spread(wps, ',.0f'):>30} "
              f"{statistics.median(wps) * SPEC.window:>14,.0f} "
              f"{spread([x.cpu_us for x in leg], '.2f'):>22}")  # fmt: skip
    ratio, cpu_ratio = statistics.median(ratios), statistics.median(cpu_ratios)
    print(f"ratio pipeline / raw interpreter, wall clock: {spread(ratios, '.3f')} "
          f"(target >= 0.5: {verdict(ratio, 0.5)})")  # fmt: skip
    print(f"ratio pipeline / raw interpreter, CPU time:   {spread(cpu_ratios, '.3f')} "
          f"(target >= 0.5: {verdict(cpu_ratio, 0.5)})")  # fmt: skip
    print(f"pipeline samples/s: {spread(samples, ',.0f')} "
          f"(target >= 1,000,000: {verdict(statistics.median(samples), 1e6)})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
