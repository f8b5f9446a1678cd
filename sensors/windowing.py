"""Cutting a stream of sample chunks into fixed windows, without a per-sample loop.

A source hands over chunks of any length (an MQTT message, a file block, a
simulated burst); ``Windower.push`` joins the chunk to what was left over from
the previous one, reshapes every whole window out of it in one step, and keeps
the remainder. Each window carries the time of its first sample, derived from
the chunk's start time and the sample rate, so windows keep their place in time
however the stream was chunked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Block:
    """Consecutive windows of one machine: ``windows[i]`` starts at ``starts_ms[i]``."""

    machine: str
    kind: str
    windows: npt.NDArray[np.float32]  # (n, window)
    starts_ms: npt.NDArray[np.int64]  # (n,)

    def __len__(self) -> int:
        return int(self.windows.shape[0])

    def tail(self, n: int) -> Block:
        """The last ``n`` windows."""
        return Block(self.machine, self.kind, self.windows[-n:], self.starts_ms[-n:])

    def __repr__(self) -> str:
        return f"Block({self.machine!r}, {self.kind!r}, windows={len(self)})"


class Windower:
    """Fixed windows of ``window`` samples from chunks of one machine's stream."""

    def __init__(self, machine: str, kind: str, window: int, rate_hz: float) -> None:
        if window < 1 or rate_hz <= 0:
            raise ValueError("a window needs at least one sample and a positive rate")
        self.machine, self.kind, self.window, self.rate_hz = machine, kind, window, rate_hz
        self._rest = np.empty(0, np.float32)
        self._rest_start_s = 0.0
        self._offsets_s = np.empty(0)  # window i's start after the chunk's, for i < size

    def push(self, samples: npt.ArrayLike, start_s: float) -> Block | None:
        """Add a chunk whose first sample was taken at ``start_s`` (seconds since the
        epoch); returns the whole windows now available, or None."""
        chunk = np.asarray(samples, dtype=np.float32).reshape(-1)
        if chunk.size and not self._rest.size and not chunk.size % self.window:  # no rest
            return self._block(chunk, start_s, chunk.size // self.window)
        if self._rest.size:
            joined = np.concatenate([self._rest, chunk])
            first_s = self._rest_start_s
        else:
            joined, first_s = chunk, start_s
        whole = joined.size // self.window
        used = whole * self.window
        self._rest = joined[used:].copy()
        self._rest_start_s = first_s + used / self.rate_hz
        if whole == 0:
            return None
        return self._block(joined[:used], first_s, whole)

    def _block(self, samples: npt.NDArray[np.float32], first_s: float, whole: int) -> Block:
        if self._offsets_s.size < whole:  # kept: chunks of a source are mostly alike
            self._offsets_s = np.arange(whole, dtype=np.float64) * (self.window / self.rate_hz)
        starts_ms = np.rint((first_s + self._offsets_s[:whole]) * 1000).astype(np.int64)
        return Block(self.machine, self.kind, samples.reshape(whole, self.window), starts_ms)

    def __repr__(self) -> str:
        return f"Windower({self.machine!r}, window={self.window}, pending={self._rest.size})"
