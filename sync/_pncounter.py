"""PNCounter: a counter that goes up and down, resettable inside a map.

Semantics (Shapiro et al., INRIA RR-7506, 2011, PN-Counter): two grow-only tallies,
increments and decrements, each a per-actor running total joined by maximum; the
value is their difference. ``reset()`` records observed totals of both as bases,
exactly as for ``GCounter``: a reset cancels what it saw and nothing else, and a
concurrent increment or decrement survives it.
"""

from __future__ import annotations

from typing import Final, Self

from sync._causal import DotContext
from sync._counter import Counter

_UP: Final = 0  # (Final: compiled, constants, not module lookups)
_DOWN: Final = 1


class PNCounter(Counter):
    TYPE_TAG = 2

    def _directions(self) -> int:
        return 2

    def _blank(self, ctx: DotContext) -> Self:
        return PNCounter(ctx)  # type: ignore[return-value]  # (Self is PNCounter: a leaf)

    def increment(self, actor: str, n: int = 1) -> PNCounter:
        """Add ``n`` (negative ``n`` decrements); return the delta."""
        if isinstance(n, bool) or not isinstance(n, int):
            raise ValueError(f"increment must be an int, not {n!r}")
        return self._bump(actor, _UP, n) if n >= 0 else self._bump(actor, _DOWN, -n)

    def decrement(self, actor: str, n: int = 1) -> PNCounter:
        return self.increment(actor, -n)

    def value(self) -> int:
        return self.tallies[_UP].value() - self.tallies[_DOWN].value()

    def __repr__(self) -> str:
        return f"PNCounter({self.value()})"
