# ruff: noqa: E402  (BLAS thread limits must be set before numpy is imported)
"""Inference throughput: the whole sensor pipeline against the raw interpreter.

    python bench/inference_bench.py [--batches 200] [--batch 256]

One core (BLAS and the interpreter held to one thread, everything on the main
thread). The pipeline leg replays a simulated vibration recording from an NPY
file as fast as it goes: file source, windowing, bounded buffer, features,
batched model invoke, calibration-thresholded flags, CRDT updates committed to
an LMDB replica through the daemon's path (an ``AsyncReplica`` on an event loop
thread, group commits, up to 8 batches awaiting their commit); the clock stops
once every update is durable. The baseline leg calls the same model's batched invoke on
precomputed feature rows of the same batch size, nothing else. Each leg runs
three times and keeps its best; the ratio is pipeline over baseline.
Targets: ratio >= 0.5 and >= 1,000,000 samples/s through the pipeline.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core: set before numpy loads its BLAS

import argparse
import asyncio
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from sensors.features import features
from sensors.model import AnomalyModel
from sensors.pipeline import Pipeline
from sensors.replay import ReplaySource
from sensors.signals import DEFAULT_SPECS
from sensors.simulated import SimulatedSource
from sensors.state import LoopWriter
from sync.adapters.aio import AsyncReplica
from sync.adapters.embedded import fresh_epoch, wall_clock_ms
from sync.adapters.lmdb_storage import LMDBStorage

SPEC = DEFAULT_SPECS["vibration"]
RUNS = 3


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

    def __enter__(self) -> LoopWriter:
        return LoopWriter(self.replica, self.loop)

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.replica.close(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


def pipeline_run(path: Path, data: Path, batch: int) -> tuple[int, float]:
    """Windows through the whole pipeline, durable in the store, and the seconds it took."""
    with LoopThread(data) as writer:
        pipeline = Pipeline(writer, batch=batch, capacity=1 << 20)
        replay = ReplaySource(path, "pump-1", "vibration", SPEC.rate_hz, SPEC.window,
                              chunk=batch * SPEC.window, start_s=1_800_000_000.0)  # fmt: skip
        buffer = pipeline.add(replay)
        pipeline._scorer("vibration")  # load and calibrate outside the clock
        began = time.perf_counter()
        for block in replay.blocks():
            buffer.put(block)
            while len(buffer) >= batch:
                pipeline.step()
        while pipeline.step():
            pass
        writer.flush()  # every update durable before the clock stops
        elapsed = time.perf_counter() - began
        assert buffer.dropped == 0
        return pipeline.windows_scored, elapsed


def raw_run(model: AnomalyModel, rows: np.ndarray, batches: int) -> tuple[int, float]:
    began = time.perf_counter()
    for _ in range(batches):
        model.invoke(rows)
    return batches * rows.shape[0], time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    windows = args.batches * args.batch
    with tempfile.TemporaryDirectory() as tmp:
        path = recording(Path(tmp) / "vibration.npy", windows)
        model = AnomalyModel.for_kind("vibration", batch=args.batch)
        first = np.load(path)[: args.batch * SPEC.window].reshape(args.batch, SPEC.window)
        rows = np.ascontiguousarray(features(first, SPEC.bands))
        model.invoke(rows)  # warm up
        raw = [raw_run(model, rows, args.batches) for _ in range(RUNS)]
        piped = [pipeline_run(path, Path(tmp) / f"store{i}", args.batch) for i in range(RUNS)]
    raw_wps = max(n / s for n, s in raw)
    pipe_wps = max(n / s for n, s in piped)
    ratio = pipe_wps / raw_wps
    samples_ps = pipe_wps * SPEC.window
    print(f"model {model.card.path.name} ({model.card.raw['architecture']}), batch {args.batch}, "
          f"window {SPEC.window}, {windows} windows a run, best of {RUNS}, one core")  # fmt: skip
    print(f"{'leg':<34} {'windows/s':>12} {'samples/s':>14}")
    print(
        f"{'raw interpreter batched invoke':<34} {raw_wps:>12,.0f} {raw_wps * SPEC.window:>14,.0f}"
    )
    print(f"{'whole pipeline (file..LMDB state)':<34} {pipe_wps:>12,.0f} {samples_ps:>14,.0f}")
    print(f"ratio pipeline / raw interpreter: {ratio:.3f} (target >= 0.5: "
          f"{'met' if ratio >= 0.5 else 'NOT met'})")  # fmt: skip
    print(f"pipeline samples/s: {samples_ps:,.0f} (target >= 1,000,000: "
          f"{'met' if samples_ps >= 1e6 else 'NOT met'})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
