"""A simulated source: machines streaming windows, with labelled fault episodes.

Each of ``count`` machines of one sensor kind is drawn from the seeded generator
(``sensors/signals.py``). Time runs in whole windows: in real time, every tick
renders the windows whose end has passed on the injected clock; otherwise,
``burst`` windows per machine per step, as fast as the buffer takes them. At
each window a machine starts a fault episode with probability
``anomaly_rate``; an episode has one anomaly kind, drawn uniformly among its
sensor kind's, and lasts ``episode_windows`` windows. The truth is kept
(``truth``), so a test can compare what the pipeline concluded with what
happened. The same generator state replays the same machines, episodes and
samples.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from sensors.buffer import WindowBuffer
from sensors.signals import ANOMALY_KINDS, LABELS, Machine, SensorSpec, render
from sensors.source import Source
from sensors.windowing import Block


@dataclass
class _Episode:
    label: int = 0  # index into LABELS; 0 is healthy
    left: int = 0  # windows still to come
    age: int = 0  # windows already done


@dataclass
class Truth:
    windows: int = 0
    anomalous: int = 0
    episodes: dict[str, int] = field(default_factory=dict)  # anomaly kind -> episodes started


class SimulatedSource(Source):
    def __init__(
        self,
        node: str,
        spec: SensorSpec,
        count: int,
        rng: np.random.Generator,
        *,
        anomaly_rate: float = 0.01,
        episode_windows: tuple[int, int] = (4, 16),
        realtime: bool = True,
        burst: int = 64,
        clock: Callable[[], float] = time.time,
        tick_s: float = 0.2,
    ) -> None:
        if count < 1:
            raise ValueError("a simulated source needs at least one machine")
        self.name = f"sim:{spec.kind}:{count}"
        self.spec, self.rng, self.clock = spec, rng, clock
        self.anomaly_rate, self.episode_windows = anomaly_rate, episode_windows
        self.realtime, self.burst, self.tick_s = realtime, burst, tick_s
        self.machines = {
            f"{node}-{spec.kind}-{i}": Machine.draw(spec.kind, rng) for i in range(count)
        }
        self._episodes = {name: _Episode() for name in self.machines}
        self._calibration_rng = rng.spawn(1)[0]  # calibration never shifts the stream
        self.truth = Truth()
        self._start_s: float | None = None
        self._produced = 0  # windows per machine so far

    def run(self, buffer: WindowBuffer, stop: threading.Event) -> None:
        self._start_s = self.clock()
        while not stop.is_set():
            due = self.burst
            if self.realtime:
                due = int((self.clock() - self._start_s) / self.spec.window_s) - self._produced
            if due > 0:
                for block in self.step(due):
                    buffer.put(block)
            if self.realtime:
                stop.wait(self.tick_s)

    def step(self, n: int) -> list[Block]:
        """The next ``n`` windows of every machine."""
        if self._start_s is None:
            self._start_s = self.clock()
        first = self._start_s + self._produced * self.spec.window_s
        starts = first + np.arange(n, dtype=np.float64) * self.spec.window_s
        starts_ms = np.round(starts * 1000).astype(np.int64)
        blocks = []
        for name, machine in self.machines.items():
            labels, severity = self._schedule(self._episodes[name], n)
            windows = render(self.spec, machine, starts, labels, severity, rng=self.rng)
            blocks.append(Block(name, self.spec.kind, windows, starts_ms))
        self._produced += n
        return blocks

    def _schedule(
        self, episode: _Episode, n: int
    ) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float64]]:
        """Labels and severities of the next ``n`` windows; loops per episode, not sample."""
        labels = np.zeros(n, np.int8)
        severity = np.zeros(n, np.float64)
        kinds = ANOMALY_KINDS[self.spec.kind]
        onsets = self.rng.random(n) < self.anomaly_rate
        i = 0
        while i < n:
            if episode.left == 0:
                later = np.flatnonzero(onsets[i:])
                if not later.size:
                    break
                i += int(later[0])
                kind = kinds[int(self.rng.integers(len(kinds)))]
                episode.label, episode.age = LABELS.index(kind), 0
                episode.left = int(self.rng.integers(*self.episode_windows, endpoint=True))
                self.truth.episodes[kind] = self.truth.episodes.get(kind, 0) + 1
            span = min(episode.left, n - i)
            labels[i : i + span] = episode.label
            severity[i : i + span] = episode.age + np.arange(span)
            episode.left -= span
            episode.age += span
            i += span
        self.truth.windows += n
        self.truth.anomalous += int((labels != 0).sum())
        return labels, severity

    def healthy_windows(self, kind: str, n: int) -> npt.NDArray[np.float32] | None:
        if kind != self.spec.kind:
            return None
        rng = self._calibration_rng
        names = list(self.machines)
        owner = rng.integers(0, len(names), n)
        out = np.empty((n, self.spec.window), np.float32)
        for i, name in enumerate(names):
            rows = np.flatnonzero(owner == i)
            starts = rng.uniform(0, 3600, rows.size)
            healthy = np.zeros(rows.size, np.int8)
            out[rows] = render(
                self.spec, self.machines[name], starts, healthy, np.zeros(rows.size), rng=rng
            )
        return out

    def metrics(self) -> dict[str, int]:
        return {"windows": self.truth.windows, "anomalous_windows": self.truth.anomalous}
