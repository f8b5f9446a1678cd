"""The inference pipeline: sources -> bounded buffers -> features -> model -> state.

Each source runs in its own thread and fills its own ``WindowBuffer``. One
worker thread (``step`` in a loop) takes up to ``batch`` windows, a fair share
from every buffer, computes features per sensor kind, scores them with that
kind's model in batched invokes, and turns the scores into CRDT updates
(``sensors/state.py``), written through a ``StateWriter`` (in the daemon:
handed to the event loop in groups, a bounded number awaiting their commit
while the next batch is scored). The event loop of a daemon never runs
inference: it only applies the updates. When the worker falls behind, buffers
drop their oldest windows, so what the node reports stays current.

Thresholds (``sensors/calibration.py``) are per sensor kind: a stored
calibration for the same model file is reused; otherwise a source that can
produce healthy windows (the simulator) calibrates at once, and other sources
calibrate on the first ``calibration_windows`` windows of that kind, during
which nothing is flagged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sensors.buffer import WindowBuffer
from sensors.calibration import Calibration
from sensors.features import FeatureExtractor
from sensors.model import DEFAULT_BATCH, AnomalyModel
from sensors.source import Source
from sensors.state import (
    Assign,
    MachineTracker,
    Scored,
    StateWriter,
    Update,
    local_key,
    peak_of,
)
from sensors.windowing import Block
from sync import LWWRegister

log = logging.getLogger("edgesync.sensors")
CALIBRATION_WINDOWS = 512


@dataclass
class _Scorer:
    """A sensor kind's model, feature buffers and threshold (None while calibrating)."""

    model: AnomalyModel
    extractor: FeatureExtractor
    calibration: Calibration | None = None
    pending: list[npt.NDArray[np.float32]] | None = None  # scores seen while calibrating


class Pipeline:
    def __init__(
        self,
        writer: StateWriter,
        *,
        batch: int = DEFAULT_BATCH,
        capacity: int = 8192,
        summary_every_s: float = 1.0,
        calibration_windows: int = CALIBRATION_WINDOWS,
        clock: Callable[[], float] = time.monotonic,
        load_model: Callable[[str, int], AnomalyModel] = AnomalyModel.for_kind,
    ) -> None:
        self.writer, self.batch, self.capacity = writer, batch, capacity
        self.summary_every_s, self.calibration_windows = summary_every_s, calibration_windows
        self.clock, self.load_model = clock, load_model
        self.ready = threading.Event()  # set by any buffer that receives windows
        self.sources: list[tuple[Source, WindowBuffer]] = []
        self._scorers: dict[str, _Scorer] = {}
        self._trackers: dict[str, MachineTracker] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.windows_scored = 0
        self.batches = 0
        self.failures = 0

    def add(self, source: Source) -> WindowBuffer:
        buffer = WindowBuffer(source.name, self.capacity, self.ready)
        self.sources.append((source, buffer))
        return buffer

    # ---- running ---------------------------------------------------------------------

    def start(self) -> None:
        for source, buffer in self.sources:
            thread = threading.Thread(target=source.run, args=(buffer, self._stop),
                                      name=f"source {source.name}", daemon=True)  # fmt: skip
            self._threads.append(thread)
        self._threads.append(threading.Thread(target=self._work, name="inference", daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.ready.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        self.writer.flush()

    def _work(self) -> None:
        while not self._stop.is_set():
            self.ready.wait(0.5)
            self.ready.clear()
            try:
                while not self._stop.is_set() and self.step():
                    pass
                self.writer.flush()  # caught up: what was concluded goes out now
            except Exception:  # the node stays up; the next batch tries again
                self.failures += 1
                log.exception("inference batch failed", extra={"failures": self.failures})
                self._stop.wait(1.0)

    # ---- one batch -------------------------------------------------------------------

    def step(self) -> int:
        """Score up to ``batch`` buffered windows and write what they mean; returns
        how many windows it scored (0: nothing was waiting)."""
        blocks = self._take()
        if not blocks:
            return 0
        now = self.clock()
        kind = blocks[0].kind
        if all(block.kind == kind for block in blocks):  # one kind: no grouping to do
            updates = self._score_kind(kind, blocks, now)
        else:
            by_kind: dict[str, list[Block]] = defaultdict(list)
            for block in blocks:
                by_kind[block.kind].append(block)
            updates = []
            for kind, group in by_kind.items():
                updates.extend(self._score_kind(kind, group, now))
        scored = sum(len(b) for b in blocks)
        self.windows_scored += scored
        self.batches += 1
        if now >= self._metrics_due:  # after the counts, so the metrics include this batch
            self._metrics_due = now + self.summary_every_s
            updates.append(
                (local_key("metrics"), LWWRegister, Assign(self.metrics(), self.writer.hlc))
            )
        self.writer.apply(updates)
        return scored

    _metrics_due = 0.0

    def _take(self) -> list[Block]:
        """A fair share from every buffer first, then whatever room is left."""
        if len(self.sources) == 1:
            return self.sources[0][1].take(self.batch)
        share = max(1, self.batch // max(1, len(self.sources)))
        blocks: list[Block] = []
        room = self.batch
        for _, buffer in self.sources:
            got = buffer.take(min(share, room))
            room -= sum(len(b) for b in got)
            blocks.extend(got)
        for _, buffer in self.sources:
            if room <= 0:
                break
            got = buffer.take(room)
            room -= sum(len(b) for b in got)
            blocks.extend(got)
        return blocks

    def _score_kind(self, kind: str, blocks: list[Block], now: float) -> list[Update]:
        scorer = self._scorer(kind)
        windows = (
            blocks[0].windows if len(blocks) == 1 else np.concatenate([b.windows for b in blocks])
        )
        peaks = [peak_of(b.windows) for b in blocks]  # first: the features find them in cache
        rows = scorer.extractor.compute(windows)
        scores = scorer.model.score(rows)
        threshold = self._threshold(kind, scorer, scores)
        hlc = self.writer.hlc
        if len(blocks) == 1:
            block = blocks[0]
            scored = Scored(block.windows, rows, block.starts_ms, scores, peaks[0])
            return self._tracker(block).updates(scored, threshold, now, hlc)
        updates: list[Update] = []
        at = 0
        for block, peak in zip(blocks, peaks, strict=True):
            end = at + len(block)
            scored = Scored(block.windows, rows[at:end], block.starts_ms, scores[at:end], peak)
            updates.extend(self._tracker(block).updates(scored, threshold, now, hlc))
            at = end
        return updates

    def _tracker(self, block: Block) -> MachineTracker:
        tracker = self._trackers.get(block.machine)
        if tracker is None:
            tracker = MachineTracker(block.machine, block.kind, self.summary_every_s)
            self._trackers[block.machine] = tracker
        return tracker

    # ---- models and thresholds -------------------------------------------------------

    def _scorer(self, kind: str) -> _Scorer:
        scorer = self._scorers.get(kind)
        if scorer is not None:
            return scorer
        model = self.load_model(kind, self.batch)
        window, bands = (
            int(model.card.raw["sensor"]["window"]),
            int(model.card.raw["sensor"]["bands"]),
        )
        scorer = _Scorer(model, FeatureExtractor(window, self.batch, bands))
        stored = Calibration.from_value(
            self.writer.read(local_key("calibration", kind), LWWRegister)
        )
        if stored is not None and stored.model_sha256 == model.card.sha256:
            scorer.calibration = stored
        else:
            healthy = self._healthy(kind)
            if healthy is not None:
                extractor = FeatureExtractor(window, healthy.shape[0], bands)
                scores = model.score(extractor.compute(healthy))
                self._calibrated(scorer, Calibration.from_scores(kind, scores, model.card.sha256))
            else:
                scorer.pending = []
        self._scorers[kind] = scorer
        return scorer

    def _healthy(self, kind: str) -> npt.NDArray[np.float32] | None:
        for source, _ in self.sources:
            healthy = source.healthy_windows(kind, self.calibration_windows)
            if healthy is not None:
                return healthy
        return None

    def _threshold(
        self, kind: str, scorer: _Scorer, scores: npt.NDArray[np.float32]
    ) -> float | None:
        if scorer.calibration is not None:
            return scorer.calibration.threshold
        assert scorer.pending is not None
        scorer.pending.append(scores.copy())
        if sum(s.size for s in scorer.pending) < self.calibration_windows:
            return None
        seen = np.concatenate(scorer.pending)
        self._calibrated(scorer, Calibration.from_scores(kind, seen, scorer.model.card.sha256))
        return None  # this batch was part of the calibration

    def _calibrated(self, scorer: _Scorer, calibration: Calibration) -> None:
        scorer.calibration, scorer.pending = calibration, None
        key = local_key("calibration", calibration.kind)
        self.writer.apply([(key, LWWRegister, Assign(calibration.to_value(), self.writer.hlc))])
        log.info("calibrated", extra={"kind": calibration.kind, "threshold": calibration.threshold,
                                      "windows": calibration.windows})  # fmt: skip

    # ---- metrics ---------------------------------------------------------------------

    def metrics(self) -> dict[str, object]:
        out: dict[str, object] = {
            "windows_scored": self.windows_scored,
            "batches": self.batches,
            "failures": self.failures,
            "dropped": sum(b.dropped for _, b in self.sources),
        }
        for source, buffer in self.sources:
            out[source.name] = {"buffered": len(buffer), "dropped": buffer.dropped,
                                "accepted": buffer.accepted, **source.metrics()}  # fmt: skip
        return out

    def __repr__(self) -> str:
        return f"Pipeline(sources={len(self.sources)}, scored={self.windows_scored})"
