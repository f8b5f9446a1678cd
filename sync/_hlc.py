"""Hybrid logical clock (Kulkarni, Demirbas et al., "Logical Physical Clocks",
OPODIS 2014).

A timestamp is ``(wall_ms, logical)``: close to physical time, yet it never runs
backwards and always exceeds every timestamp the node has witnessed, so a write
made after seeing another gets a larger timestamp even when the wall clocks
disagree. The physical clock is a parameter: the core never reads the wall clock.

A timestamp too far ahead of the local physical clock is refused by ``witness``
with ``ClockSkewError``: accepting it would drag this clock (and the winner of every
later last-writer-wins race) into the future of a peer with a broken clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final, NamedTuple

from sync._errors import ClockSkewError

DEFAULT_MAX_AHEAD_MS = 60_000


class Timestamp(NamedTuple):
    wall_ms: int
    logical: int = 0

    def __repr__(self) -> str:
        return f"Timestamp({self.wall_ms}, {self.logical})"


# Built as the named tuple's ``__new__`` builds it, without running that Python-level
# function, which was most of what ``now()`` cost compiled.
_new_tuple: Final = tuple.__new__  # (Final: compiled, a static, not a module lookup)


def new_timestamp(wall_ms: int, logical: int) -> Timestamp:
    """``Timestamp(wall_ms, logical)``, built fast (see above): one per local event
    stamped or register write decoded."""
    return _new_tuple(Timestamp, (wall_ms, logical))


class HybridLogicalClock:
    def __init__(self, clock: Callable[[], int], max_ahead_ms: int = DEFAULT_MAX_AHEAD_MS) -> None:
        """``clock`` returns physical time in milliseconds; ``max_ahead_ms`` bounds skew."""
        if max_ahead_ms < 0:
            raise ValueError("max_ahead_ms must be >= 0")
        self._clock = clock
        self.max_ahead_ms = max_ahead_ms
        self.last = Timestamp(0, 0)

    def now(self) -> Timestamp:
        """A timestamp for a local event, greater than every one issued or witnessed."""
        physical = self._clock()
        last = self.last
        if physical > last.wall_ms:
            self.last = new_timestamp(physical, 0)
        else:
            self.last = new_timestamp(last.wall_ms, last.logical + 1)
        return self.last

    def witness(self, ts: Timestamp) -> None:
        """Advance past a remote timestamp, or refuse it if it is too far ahead."""
        physical = self._clock()
        if ts.wall_ms > physical + self.max_ahead_ms:
            raise ClockSkewError(
                f"timestamp {ts.wall_ms} ms is {ts.wall_ms - physical} ms ahead of the local "
                f"clock; the limit is {self.max_ahead_ms} ms"
            )
        self.last = max(self.last, ts)

    def witness_all(self, stamps: Iterable[Timestamp]) -> None:
        """Check every timestamp first, then advance: a refused batch changes nothing."""
        stamps = list(stamps)
        if not stamps:
            return
        newest = max(stamps)
        self.witness(newest)

    def __repr__(self) -> str:
        return f"HybridLogicalClock(last={self.last!r}, max_ahead_ms={self.max_ahead_ms})"
