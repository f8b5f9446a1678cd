"""Replaying a recording: one machine's samples from a CSV or NPY file.

- NPY: a one-dimensional array of samples (any float or int dtype), read through
  a memory map, so a long recording is not loaded whole.
- CSV: one sample per line, or several comma-separated columns with a header
  line, of which the column ``value`` (else the last) holds the samples. Blank
  lines are skipped; a line that is not a number is an error naming the line.

``realtime=True`` paces chunks by the recording's sample rate; ``False`` replays
as fast as the pipeline takes windows (it waits while the buffer is more than
half full, so a replay loses nothing). Timestamps start at ``start_s``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sensors.buffer import WindowBuffer
from sensors.source import Source
from sensors.windowing import Block, Windower


class RecordingError(ValueError):
    """A recording that cannot be read; the message names the file and the problem."""


def load_recording(path: Path) -> npt.NDArray[np.float32]:
    if path.suffix == ".npy":
        try:
            data = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise RecordingError(f"{path}: {exc}") from None
        if data.ndim != 1 or data.dtype.kind not in "fiu":
            raise RecordingError(
                f"{path}: need a 1-D numeric array, found {data.dtype} {data.shape}"
            )
        return data  # type: ignore[no-any-return]
    if path.suffix == ".csv":
        return _load_csv(path)
    raise RecordingError(f"{path}: recordings are .csv or .npy")


def _load_csv(path: Path) -> npt.NDArray[np.float32]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordingError(f"{path}: {exc}") from None
    column, first = -1, 0
    if lines and not _is_number(lines[0].split(",")[-1]):
        header = [h.strip() for h in lines[0].split(",")]
        column = header.index("value") if "value" in header else len(header) - 1
        first = 1
    values = []
    for number, line in enumerate(lines[first:], start=first + 1):
        if not line.strip():
            continue
        cells = line.split(",")
        try:
            values.append(float(cells[column]))
        except (ValueError, IndexError):
            raise RecordingError(f"{path}:{number}: not a sample: {line[:60]!r}") from None
    return np.asarray(values, dtype=np.float32)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class ReplaySource(Source):
    def __init__(
        self,
        path: Path,
        machine: str,
        kind: str,
        rate_hz: float,
        window: int,
        *,
        realtime: bool = False,
        chunk: int = 4096,
        start_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = f"file:{path}"
        self.samples = load_recording(path)
        self.windower = Windower(machine, kind, window, rate_hz)
        self.realtime, self.chunk, self.clock = realtime, chunk, clock
        self.start_s = clock() if start_s is None else start_s
        self.replayed = 0  # samples handed to the windower
        self.done = threading.Event()

    def blocks(self) -> Iterator[Block]:
        """Every window of the recording, chunk by chunk, with no pacing."""
        rate = self.windower.rate_hz
        samples = np.asarray(self.samples)  # a plain view of the map: np.memmap slices cost more
        for at in range(0, samples.shape[0], self.chunk):
            piece = np.asarray(samples[at : at + self.chunk], dtype=np.float32)
            self.replayed += piece.size
            block = self.windower.push(piece, self.start_s + at / rate)
            if block is not None:
                yield block

    def run(self, buffer: WindowBuffer, stop: threading.Event) -> None:
        began = self.clock()
        for block in self.blocks():
            if stop.is_set():
                break
            if self.realtime:
                due = began + (self.replayed / self.windower.rate_hz)
                stop.wait(max(0.0, due - self.clock()))
            else:
                while len(buffer) > buffer.capacity // 2 and not stop.is_set():
                    stop.wait(0.002)
            buffer.put(block)
        self.done.set()

    def metrics(self) -> dict[str, int]:
        return {"samples_replayed": self.replayed}
