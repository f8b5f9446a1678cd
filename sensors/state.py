"""What inference concludes, as CRDT updates, and where they live.

Key layout, per machine ``M`` (replicated to hubs and the cloud):

    machines/M/anomalies   GCounter      anomalous windows, counted by every node that saw them
    machines/M/peak        MaxRegister   the greatest absolute reading seen (vibration: g)
    machines/M/alerts      AWSet         open alerts, one per anomalous episode, named by the
                                         UTC time of its first window; removing an element
                                         (``edgesync rm``) acknowledges it everywhere
    machines/M/summary     LWWRegister   latest window statistics (see ``Summary``)

Kept on the node (``local/`` never leaves it):

    local/sensors/M/window              LWWRegister  the latest raw window, float32 bytes
    local/sensors/M/features            LWWRegister  its feature row, float32 bytes
    local/sensors/calibration/KIND      LWWRegister  the alert threshold and what it came from
    local/sensors/metrics               LWWRegister  windows scored, dropped, malformed, ...

Counters and alerts are written with every batch that holds an anomaly (they
are what operators act on); the summary and the local keys at most once per
``summary_every_s`` per machine, so a node streaming kHz data sends its hub a
few small deltas a second, not its samples. A window's flag is its score over
the threshold; an episode is a run of flagged windows, and its first window
opens the alert.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from sync import CRDT, AWSet, GCounter, HybridLogicalClock, LWWRegister, MaxRegister
from sync.adapters.aio import AsyncReplica
from sync.adapters.embedded import EmbeddedReplica

Update = tuple[str, type[CRDT], Callable[[Any, str], Any]]
LOCAL = "local/sensors"


def machine_key(machine: str, leaf: str) -> str:
    return f"machines/{machine}/{leaf}"


def local_key(*parts: str) -> str:
    return "/".join((LOCAL, *parts))


class StateWriter(Protocol):
    """Where updates go. ``apply`` may return before they are durable (but never
    with more than a bounded number of batches pending); ``flush`` waits for all."""

    def apply(self, updates: Sequence[Update]) -> None: ...

    def flush(self) -> None: ...

    def read(self, path: str, cls: type[CRDT]) -> Any: ...

    @property
    def hlc(self) -> HybridLogicalClock:
        """The replica's clock; called only inside a mutator, where the replica runs it."""
        ...


class EmbeddedWriter:
    """Updates to an ``EmbeddedReplica`` (threads; benches and embedding programs)."""

    def __init__(self, replica: EmbeddedReplica) -> None:
        self.replica = replica

    @property
    def hlc(self) -> HybridLogicalClock:
        return self.replica.replica.hlc

    def apply(self, updates: Sequence[Update]) -> None:
        """Returns once every update is durable (one commit each, or shared with
        other threads' writes)."""
        for path, cls, mutate in updates:
            self.replica.update(path, cls, mutate)

    def flush(self) -> None:
        pass  # apply already waited

    def read(self, path: str, cls: type[CRDT]) -> Any:
        found = self.replica.get(path, cls)
        return None if found is None else found.value()


class LoopWriter:
    """Updates to the daemon's ``AsyncReplica``, from the inference thread.

    Updates are handed to the replica's event loop in groups, at most every
    ``every_s`` while batches keep coming (and at once by ``flush``, which the
    pipeline calls whenever its buffers run dry): waking the loop costs a thread
    switch, too dear per batch at kHz rates. A group runs on the loop in order,
    one update per key (``coalesce``), as one writer (``update_all``: one task,
    one future, one commit), and joins the replica's group commit. The
    inference thread does not wait for a group's fsync before scoring on: up to
    ``in_flight`` groups may be applied in memory and not yet durable, so
    throughput follows the CPU, not the disk. Past that bound it waits for the
    oldest, so a slow disk slows inference, and the buffers (not memory) absorb
    the difference.
    """

    def __init__(
        self,
        replica: AsyncReplica,
        loop: asyncio.AbstractEventLoop,
        *,
        in_flight: int = 8,
        every_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.replica, self.loop, self.in_flight = replica, loop, in_flight
        self.every_s, self.clock = every_s, clock
        self._queued: list[Update] = []
        self._handed = float("-inf")  # when the last group went to the loop
        self._pending: deque[concurrent.futures.Future[None]] = deque()

    @property
    def hlc(self) -> HybridLogicalClock:
        return self.replica.replica.hlc

    def apply(self, updates: Sequence[Update]) -> None:
        self._queued.extend(updates)
        if self._queued and self.clock() - self._handed >= self.every_s:
            self._hand_over()
        while self._pending and (len(self._pending) > self.in_flight or self._pending[0].done()):
            self._pending.popleft().result()  # raises a failed commit's error here

    def flush(self) -> None:
        """Hand over what is queued and wait until everything handed over is durable."""
        if self._queued:
            self._hand_over()
        while self._pending:
            self._pending.popleft().result()

    def _hand_over(self) -> None:
        group, self._queued = coalesce(self._queued), []
        self._pending.append(asyncio.run_coroutine_threadsafe(self._apply(group), self.loop))
        self._handed = self.clock()

    async def _apply(self, updates: Sequence[Update]) -> None:
        await self.replica.update_all(updates)

    def read(self, path: str, cls: type[CRDT]) -> Any:
        return asyncio.run_coroutine_threadsafe(self._read(path, cls), self.loop).result()

    async def _read(self, path: str, cls: type[CRDT]) -> Any:
        found = self.replica.replica.get(path, cls)
        return None if found is None else found.value()


def coalesce(updates: Sequence[Update]) -> list[Update]:
    """One update per key: the mutators of a key run in order inside one update,
    and its delta is the join of theirs (a delta group, as the replica itself
    coalesces the deltas of one key). A group of batches then costs the event
    loop one update per key (an anomaly counter, an alert set), not one per
    batch and alert, each with its own task and durability future. Consecutive
    ``Mutation`` values of one kind fold into one before anything runs (the
    batches' increments into one increment of their sum), so the loop runs one
    mutator per counter, not one per batch, and merges no deltas for them."""
    by_key: dict[tuple[str, type[CRDT]], list[Callable[[Any, str], Any]]] = {}
    for path, cls, mutate in updates:
        mutators = by_key.get((path, cls))
        if mutators is None:
            by_key[(path, cls)] = [mutate]
            continue
        last = mutators[-1]
        if isinstance(last, Mutation) and type(mutate) is type(last):
            mutators[-1] = last.then(mutate)
        else:
            mutators.append(mutate)
    return [(path, cls, _joined(mutators)) for (path, cls), mutators in by_key.items()]


def _joined(mutators: list[Callable[[Any, str], Any]]) -> Callable[[Any, str], Any]:
    if len(mutators) == 1:
        return mutators[0]

    def mutate(crdt: Any, actor: str) -> Any:
        delta = mutators[0](crdt, actor)
        for more in mutators[1:]:
            delta.merge(more(crdt, actor))
        return delta

    return mutate


def alert_name(start_ms: int) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start_ms // 1000))
    return f"{stamp}.{start_ms % 1000:03d}Z"


def _round(x: float) -> float:
    return float(f"{x:.6g}")


class Scored(NamedTuple):
    """One machine's windows in a batch, their feature rows, their scores, and the
    greatest absolute reading among them (``peak_of``; the pipeline takes it
    before the features, which then find the windows in the CPU's cache). A
    tuple: one is made per batch, and a frozen dataclass costs ten times more."""

    windows: npt.NDArray[np.float32]
    rows: npt.NDArray[np.float32]
    starts_ms: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]
    peak: float

    def __repr__(self) -> str:
        return f"Scored(windows={self.scores.size}, peak={self.peak:.4g})"


def peak_of(windows: npt.NDArray[np.float32]) -> float:
    """The greatest absolute reading: two whole-array reductions, no temporary."""
    return max(float(_MAX(windows, axis=None)), -float(_MIN(windows, axis=None)))


_MAX, _MIN = np.maximum.reduce, np.minimum.reduce  # without ndarray.max's Python wrapper


@dataclass
class MachineTracker:
    """What the pipeline remembers about one machine between batches."""

    machine: str
    kind: str
    summary_every_s: float = 1.0
    in_episode: bool = False
    peak_written: float = float("-inf")
    summary_due: float = 0.0
    windows: int = 0
    anomalous: int = 0
    peak_seen: float = float("-inf")  # the greatest unrounded peak so far

    def updates(
        self, batch: Scored, threshold: float | None, now: float, hlc: HybridLogicalClock
    ) -> list[Update]:
        """The updates one batch of this machine's windows calls for. ``threshold``
        None: still calibrating, nothing is flagged."""
        scores = batch.scores
        self.windows += scores.size
        out: list[Update] = []
        if threshold is None:
            self.in_episode = False
        else:
            # The flagged windows' indices: few, so their episodes are found in Python.
            flagged = (scores > threshold).nonzero()[0].tolist()
            if flagged:  # most batches hold no anomaly: nothing more to do
                self._anomalies(flagged, batch.starts_ms, out)
                self.in_episode = flagged[-1] == scores.size - 1
            else:
                self.in_episode = False
        if batch.peak > self.peak_seen:  # else its rounding cannot exceed what was written
            self.peak_seen = batch.peak
            peak = _round(batch.peak)
            if peak > self.peak_written:
                self.peak_written = peak
                out.append((machine_key(self.machine, "peak"), MaxRegister, Raise(peak)))
        if now >= self.summary_due:
            self.summary_due = now + self.summary_every_s
            out.extend(self._summary(batch, threshold, hlc))
        return out

    def _anomalies(
        self, flagged: list[int], starts_ms: npt.NDArray[np.int64], out: list[Update]
    ) -> None:
        """Count the flagged windows; open an alert for each episode that starts here
        (a flagged window after an unflagged one, or the batch's first window when
        the last batch did not end in an episode)."""
        self.anomalous += len(flagged)
        out.append((machine_key(self.machine, "anomalies"), GCounter, Increment(len(flagged))))
        previous = -1 if self.in_episode else -2  # the flagged window before the first
        openings = []
        for i in flagged:
            if i != previous + 1:
                openings.append(alert_name(int(starts_ms[i])))
            previous = i
        if openings:
            out.append((machine_key(self.machine, "alerts"), AWSet, Add(openings)))

    def _summary(
        self, batch: Scored, threshold: float | None, hlc: HybridLogicalClock
    ) -> list[Update]:
        last = batch.windows[-1]
        summary = {
            "kind": self.kind,
            "window_start_ms": int(batch.starts_ms[-1]),
            "mean": _round(float(last.mean())),
            "std": _round(float(last.std())),
            "rms": _round(float(np.sqrt(np.mean(last.astype(np.float64) ** 2)))),
            "peak": _round(float(np.abs(last).max())),
            "score": _round(float(batch.scores[-1])),
            "batch_max_score": _round(float(batch.scores.max())),
            "threshold": None if threshold is None else _round(threshold),
            "windows": self.windows,
            "anomalous": self.anomalous,
        }
        raw, feats = last.astype("<f4").tobytes(), batch.rows[-1].astype("<f4").tobytes()
        return [
            (machine_key(self.machine, "summary"), LWWRegister, Assign(summary, hlc)),
            (local_key(self.machine, "window"), LWWRegister, Assign(raw, hlc)),
            (local_key(self.machine, "features"), LWWRegister, Assign(feats, hlc)),
        ]


class Mutation:
    """A mutator that can fold a later one of its kind into itself (``then``), so a
    group's updates of a key become one mutator without running any of them; the
    folded mutator leaves the state the mutators one by one leave."""

    __slots__ = ()

    def __call__(self, crdt: Any, actor: str) -> Any:
        raise NotImplementedError

    def then(self, later: Any) -> Mutation:
        raise NotImplementedError


class Increment(Mutation):
    """``GCounter.increment`` by ``n``; increments fold into their sum."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, counter: Any, actor: str) -> Any:
        return counter.increment(actor, self.n)

    def then(self, later: Increment) -> Increment:
        return Increment(self.n + later.n)

    def __repr__(self) -> str:
        return f"Increment({self.n})"


class Raise(Mutation):
    """``MaxRegister.set``; raises fold into the greatest."""

    __slots__ = ("x",)

    def __init__(self, x: float) -> None:
        self.x = x

    def __call__(self, register: Any, actor: str) -> Any:
        return register.set(actor, self.x)

    def then(self, later: Raise) -> Raise:
        return later if later.x > self.x else self

    def __repr__(self) -> str:
        return f"Raise({self.x})"


class Add(Mutation):
    """``AWSet.add`` of each element in turn; adds fold into one list."""

    __slots__ = ("elements",)

    def __init__(self, elements: list[str]) -> None:
        self.elements = elements

    def __call__(self, awset: Any, actor: str) -> Any:
        first, *more = self.elements
        delta = awset.add(actor, first)
        for element in more:
            delta.merge(awset.add(actor, element))
        return delta

    def then(self, later: Add) -> Add:
        return Add(self.elements + later.elements)

    def __repr__(self) -> str:
        return f"Add({self.elements!r})"


class Assign(Mutation):
    """An LWW write, stamped by the replica's clock when the replica applies it; of
    a group's writes only the last is applied (it would overwrite the others)."""

    __slots__ = ("hlc", "value")

    def __init__(self, value: object, hlc: HybridLogicalClock) -> None:
        self.value, self.hlc = value, hlc

    def __call__(self, register: Any, actor: str) -> Any:
        return register.set(actor, self.value, self.hlc.now())

    def then(self, later: Assign) -> Assign:
        return later

    def __repr__(self) -> str:
        return f"Assign({self.value!r})"
