"""GCounter: grow-only counter, resettable inside a map.

Semantics (Shapiro et al., INRIA RR-7506, 2011, G-Counter; the reset problem and
why it matters for counters embedded in maps: Baquero, Almeida, Cunha, Ferreira,
"The problem with embedded CRDT counters and a solution", PaPoC 2016):

- each actor keeps its own running total; ``increment`` raises only the caller's,
  so totals join by maximum and the value is the sum;
- ``reset()`` (what ``ORMap.remove`` does to a counter key) records the totals it
  observed as bases; the value counts only increments no reset observed. A reset
  racing an increment keeps exactly the concurrent increment: nothing observed
  comes back, nothing unobserved is lost;
- garbage: a reset counter keeps one total and one base per actor that ever
  incremented it (bounded by the number of actors), so that an increment after a
  remove cannot be mistaken for an old one.
"""

from __future__ import annotations

from typing import Self

from sync._causal import DotContext
from sync._counter import Counter


class GCounter(Counter):
    TYPE_TAG = 1

    def _blank(self, ctx: DotContext) -> Self:
        return GCounter(ctx)  # type: ignore[return-value]  # (Self is GCounter: a leaf)

    def increment(self, actor: str, n: int = 1) -> GCounter:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"a GCounter only grows: increment must be an int >= 0, not {n!r}")
        return self._bump(actor, 0, n)

    def value(self) -> int:
        return self.tallies[0].value()

    def __repr__(self) -> str:
        return f"GCounter({self.value()})"
