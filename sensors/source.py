"""What the pipeline needs from a source of windows.

A source runs in a thread of its own (``run``), cuts what it reads into windows
(``sensors/windowing.py``) and puts them into the bounded buffer the pipeline
gave it, until ``stop`` is set. It never waits for inference: the buffer drops
the oldest windows when inference falls behind (``sensors/buffer.py``).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod

import numpy as np
import numpy.typing as npt

from sensors.buffer import WindowBuffer


class Source(ABC):
    name: str

    @abstractmethod
    def run(self, buffer: WindowBuffer, stop: threading.Event) -> None:
        """Read, window and buffer until ``stop`` is set (or the input ends)."""

    def healthy_windows(self, kind: str, n: int) -> npt.NDArray[np.float32] | None:
        """``n`` windows known to be healthy, for calibration, if the source can tell;
        otherwise the pipeline calibrates on the first windows it receives."""
        return None

    def metrics(self) -> dict[str, int]:
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
