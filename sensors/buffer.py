"""A bounded buffer per source: when inference falls behind, the oldest windows go.

Sensor data loses value with age: an operator wants the machine's state now,
not a backlog from a minute ago. So a full buffer never blocks its source (an
MQTT client that blocks stops answering its broker's keep-alives; a simulator
or a file replay would drift from real time) and never grows without bound: it
drops its oldest windows and counts them in ``dropped``, a metric the pipeline
reports. Whole blocks are dropped at once, or cut, so dropping costs no
per-window work.
"""

from __future__ import annotations

import threading
from collections import deque

from sensors.windowing import Block


class WindowBuffer:
    def __init__(self, name: str, capacity: int, ready: threading.Event | None = None) -> None:
        """``ready`` is set whenever windows arrive (one event can serve many buffers)."""
        if capacity < 1:
            raise ValueError(f"buffer {name}: capacity must be at least one window")
        self.name, self.capacity = name, capacity
        self._blocks: deque[Block] = deque()
        self._size = 0
        self._lock = threading.Lock()
        self.accepted = 0  # windows put in
        self.dropped = 0  # windows dropped, oldest first, to make room
        self.ready = ready if ready is not None else threading.Event()

    def put(self, block: Block) -> None:
        n = len(block)
        if not n:
            return
        with self._lock:
            self.accepted += n
            if n > self.capacity:
                self.dropped += n - self.capacity
                block, n = block.tail(self.capacity), self.capacity
            self._blocks.append(block)
            self._size += n
            if self._size > self.capacity:
                self._drop_oldest()
        self.ready.set()

    def _drop_oldest(self) -> None:
        while self._size > self.capacity:
            excess = self._size - self.capacity
            oldest = self._blocks[0]
            if len(oldest) <= excess:
                self._blocks.popleft()
                self._size -= len(oldest)
                self.dropped += len(oldest)
            else:
                self._blocks[0] = oldest.tail(len(oldest) - excess)
                self._size -= excess
                self.dropped += excess

    def take(self, limit: int) -> list[Block]:
        """Up to ``limit`` windows, oldest first, as the blocks they came in."""
        taken: list[Block] = []
        with self._lock:
            room = limit
            while self._blocks and room > 0:
                block = self._blocks[0]
                if len(block) <= room:
                    taken.append(self._blocks.popleft())
                    room -= len(block)
                else:
                    taken.append(Block(block.machine, block.kind, block.windows[:room],
                                       block.starts_ms[:room]))  # fmt: skip
                    self._blocks[0] = block.tail(len(block) - room)
                    room = 0
            self._size -= limit - room
        return taken

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return (f"WindowBuffer({self.name!r}, {self._size}/{self.capacity}, "
                f"dropped={self.dropped})")  # fmt: skip
