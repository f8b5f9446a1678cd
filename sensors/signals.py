"""Simulated machines: what a healthy sensor reads, and the faults that change it.

Every window is rendered at once from a time vector (no per-sample Python loop),
so a continuous stream and a bag of independent labelled windows come from one
function: a stream passes consecutive start times, an evaluation set passes
scattered ones. All randomness comes from the ``numpy.random.Generator`` the
caller hands in, so a seed replays a run exactly.

Two sensor kinds, each with its own normal model:

- ``vibration``: an accelerometer at kHz rates (default 4 kHz). Shaft rotation
  (40-60 Hz) and two harmonics, a structural resonance (600-1000 Hz), white
  noise, and a few per cent of amplitude wander from window to window.
- ``temperature``: a slow process temperature (default 10 Hz) around a set point
  of 40-80 degrees, a five-minute oscillation of half a degree, sensor noise.

Anomaly kinds (``ANOMALY_KINDS``), each labelled on the windows it touches:

- ``bearing``: an outer-race fault; every pass of a ball (3-5.5 x shaft speed)
  rings a 1.2-1.8 kHz resonance (1.5-3 g) that decays in 3 ms. Its spectrum holds the
  fault frequency's harmonics. Vibration only.
- ``spike``: one to three samples far outside the signal (connector glitches).
- ``drift``: the sensor's bias walks away at a steady rate (5-10 g/s for
  vibration, 0.05-0.2 degrees/s for temperature). A window is labelled once the
  walk has run for one window's duration: ``severity`` is the walk's age in
  windows at the window's start, and 0 means one window old.
- ``stuck``: the reading freezes at one value for the whole window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float32]
Times = npt.NDArray[np.float64]

NORMAL = "normal"
ANOMALY_KINDS: dict[str, tuple[str, ...]] = {
    "vibration": ("bearing", "spike", "drift", "stuck"),
    "temperature": ("spike", "drift", "stuck"),
}
LABELS = (NORMAL, "bearing", "spike", "drift", "stuck")  # label codes are indexes here


@dataclass(frozen=True)
class SensorSpec:
    """A sensor kind's sampling: ``window`` samples at ``rate_hz``, and how many
    spectrum bands its features hold."""

    kind: str
    rate_hz: float
    window: int
    bands: int

    @property
    def window_s(self) -> float:
        return self.window / self.rate_hz

    def __post_init__(self) -> None:
        if self.kind not in ANOMALY_KINDS:
            raise ValueError(
                f"unknown sensor kind {self.kind!r}; known: {', '.join(ANOMALY_KINDS)}"
            )
        if not self.rate_hz > 0 or self.window < 8:
            raise ValueError(f"{self.kind}: rate must be > 0 and a window at least 8 samples")


DEFAULT_SPECS = {
    "vibration": SensorSpec("vibration", 4000.0, 256, 64),  # bearing faults are narrowband
    "temperature": SensorSpec("temperature", 10.0, 128, 8),  # only spikes leave a spectrum
}


@dataclass(frozen=True)
class Machine:
    """One simulated machine's healthy behaviour, drawn once from the generator."""

    kind: str
    base: tuple[float, ...]  # per-kind parameters, see ``draw_machine``

    @staticmethod
    def draw(kind: str, rng: np.random.Generator) -> Machine:
        if kind == "vibration":
            # shaft Hz, shaft amplitude, resonance Hz, resonance amplitude, noise, fault ratio
            base: tuple[float, ...] = (
                rng.uniform(40, 60), rng.uniform(0.5, 1.0), rng.uniform(600, 1000),
                rng.uniform(0.1, 0.3), rng.uniform(0.2, 0.35), rng.uniform(3.0, 5.5),
            )  # fmt: skip
        else:
            # set point, oscillation amplitude, oscillation period s, noise
            base = (rng.uniform(40, 80), rng.uniform(0.3, 0.6), rng.uniform(200, 400),
                    rng.uniform(0.03, 0.08))  # fmt: skip
        return Machine(kind, tuple(float(b) for b in base))


def render(
    spec: SensorSpec,
    machine: Machine,
    starts: Times,
    labels: npt.NDArray[np.int8],
    severity: npt.NDArray[np.float64],
    *,
    rng: np.random.Generator,
) -> Array:
    """Windows (n, spec.window) starting at ``starts`` (seconds), with ``labels``'
    anomalies injected (codes index ``LABELS``); ``severity`` as in the module doc."""
    t = starts[:, None] + np.arange(spec.window, dtype=np.float64)[None, :] / spec.rate_hz
    clean = _vibration(machine, t, rng) if spec.kind == "vibration" else _temperature(machine, t)
    x = clean + rng.standard_normal(t.shape) * machine.base[-1 if spec.kind == "temperature" else 4]
    for code, kind in enumerate(LABELS):
        rows = np.flatnonzero(labels == code)
        if code and rows.size:
            x[rows] = _INJECT[kind](spec, machine, t[rows], x[rows], severity[rows], rng=rng)
    return x.astype(np.float32)


def _vibration(m: Machine, t: Times, rng: np.random.Generator) -> Times:
    shaft, amp, res, res_amp, _, _ = m.base
    wander = 1.0 + 0.05 * rng.standard_normal((t.shape[0], 1))
    w = 2 * np.pi * shaft * t
    rotation = amp * (np.sin(w) + 0.4 * np.sin(2 * w + 0.3) + 0.2 * np.sin(3 * w + 1.1))
    return wander * rotation + res_amp * np.sin(2 * np.pi * res * t)


def _temperature(m: Machine, t: Times) -> Times:
    setpoint, osc, period, _ = m.base
    return setpoint + osc * np.sin(2 * np.pi * t / period)


def _bearing(
    spec: SensorSpec, m: Machine, t: Times, x: Times, sev: Times, *, rng: np.random.Generator
) -> Times:
    n = t.shape[0]
    fault_hz = m.base[0] * m.base[5]
    ring_hz = rng.uniform(1200, 1800, (n, 1))
    amplitude = rng.uniform(1.5, 3.0, (n, 1))
    since_ball = np.mod(t, 1.0 / fault_hz)  # time since the last ball passed the defect
    return x + amplitude * np.exp(-since_ball / 0.003) * np.sin(2 * np.pi * ring_hz * since_ball)


def _spike(
    spec: SensorSpec, m: Machine, t: Times, x: Times, sev: Times, *, rng: np.random.Generator
) -> Times:
    n, w = x.shape
    scale = (4.0, 10.0) if spec.kind == "vibration" else (2.0, 8.0)
    count = np.asarray(rng.integers(1, 4, n))
    where = rng.integers(0, w, (n, 3))
    height = rng.uniform(*scale, (n, 3)) * rng.choice([-1.0, 1.0], (n, 3))
    used = np.arange(3)[None, :] < count[:, None]
    rows = np.repeat(np.arange(n)[:, None], 3, axis=1)
    x[rows[used], where[used]] += height[used]
    return x


def _drift(
    spec: SensorSpec, m: Machine, t: Times, x: Times, sev: Times, *, rng: np.random.Generator
) -> Times:
    n = t.shape[0]
    rate = (
        rng.uniform(5.0, 10.0, (n, 1))
        if spec.kind == "vibration"
        else rng.uniform(0.05, 0.2, (n, 1))
    )
    rate *= rng.choice([-1.0, 1.0], (n, 1))
    age = (sev[:, None] + 1.0) * spec.window_s + (t - t[:, :1])  # seconds since the walk began
    return x + rate * age


def _stuck(
    spec: SensorSpec, m: Machine, t: Times, x: Times, sev: Times, *, rng: np.random.Generator
) -> Times:
    frozen = x[np.arange(x.shape[0]), rng.integers(0, x.shape[1], x.shape[0])]
    return np.repeat(frozen[:, None], x.shape[1], axis=1)


_INJECT = {"bearing": _bearing, "spike": _spike, "drift": _drift, "stuck": _stuck}


@dataclass(frozen=True)
class LabelledSet:
    """Independent windows with their label codes (index ``LABELS``)."""

    windows: Array
    labels: npt.NDArray[np.int8]

    def __repr__(self) -> str:
        counts = {LABELS[c]: int((self.labels == c).sum()) for c in np.unique(self.labels)}
        return f"LabelledSet({self.windows.shape}, {counts})"


def labelled_windows(
    spec: SensorSpec,
    rng: np.random.Generator,
    n_normal: int,
    n_per_anomaly: int,
    machines: int | Sequence[Machine] = 8,
) -> LabelledSet:
    """``n_normal`` healthy windows and ``n_per_anomaly`` of each anomaly kind of the
    sensor's kind, spread over an hour of time and ``machines`` (a count of new
    machines to draw, or the machines themselves)."""
    if isinstance(machines, int):
        machines = [Machine.draw(spec.kind, rng) for _ in range(machines)]
    kinds = ANOMALY_KINDS[spec.kind]
    labels = np.concatenate(
        [np.zeros(n_normal, np.int8)]
        + [np.full(n_per_anomaly, LABELS.index(k), np.int8) for k in kinds]
    )
    owners = rng.integers(0, len(machines), labels.size)
    starts = rng.uniform(0, 3600, labels.size)
    severity = rng.integers(0, 10, labels.size).astype(np.float64)
    out = np.empty((labels.size, spec.window), np.float32)
    for i, machine in enumerate(machines):
        rows = np.flatnonzero(owners == i)
        out[rows] = render(spec, machine, starts[rows], labels[rows], severity[rows], rng=rng)
    return LabelledSet(out, labels)
