"""LWWRegister: last-writer-wins register on a hybrid logical clock.

Semantics (Shapiro et al., INRIA RR-7506, 2011, LWW-Register; clock after
Kulkarni et al., OPODIS 2014):

- ``set(v, ts)`` drops every write it observed and stores ``(ts, v)`` under a fresh
  dot. A write that observed another therefore replaces it *whatever the
  timestamps say*: causality decides first, so a node whose clock runs slow cannot
  lose its own later writes.
- Concurrent writes are both kept until a later write observes them; the reader
  sees the one with the greatest ``(wall_ms, logical)``, then the greater writer
  id (the dot's actor), then the greater canonical value bytes. The order is total,
  so every replica picks the same winner, even for equal timestamps from one node.
- ``reset()`` clears the writes observed; a concurrent write survives it. Keeping
  concurrent losers (at most one per concurrent writer) is what makes that exact:
  pruning them at merge time would break associativity.
- Timestamps come from a ``HybridLogicalClock`` the caller owns; the replica checks
  received deltas with ``HybridLogicalClock.witness``, which refuses timestamps too
  far in the future.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Self

from sync._causal import Dot, DotContext
from sync._codec import Reader, Writer
from sync._hlc import Timestamp, new_timestamp
from sync._kernel import DotKernel
from sync._values import check_int, freeze_value, value_order_key

_Write = tuple[Timestamp, object]


def _rank(item: tuple[Dot, _Write]) -> tuple[int, int, str, bytes]:
    dot, (ts, value) = item
    return (ts.wall_ms, ts.logical, dot.actor, value_order_key(value))


class LWWRegister(DotKernel):
    ds: dict[Dot, _Write]
    TYPE_TAG = 3

    def _blank(self, ctx: DotContext) -> Self:
        return LWWRegister(ctx)  # type: ignore[return-value]  # (Self is LWWRegister: a leaf)

    def set(self, actor: str, value: object, ts: Timestamp) -> LWWRegister:
        if not isinstance(ts, Timestamp):
            raise TypeError("ts must be a sync.Timestamp from a HybridLogicalClock")
        check_int(ts.wall_ms, "timestamp")
        check_int(ts.logical, "logical clock")
        return self._replace_all(actor, (ts, freeze_value(value)))

    def winner(self) -> tuple[Dot, Timestamp, object] | None:
        if not self.ds:
            return None
        dot, (ts, value) = max(self.ds.items(), key=_rank)
        return dot, ts, value

    def value(self) -> Any:
        win = self.winner()
        return None if win is None else win[2]

    def timestamp(self) -> Timestamp | None:
        win = self.winner()
        return None if win is None else win[1]

    def timestamps(self) -> Iterator[Timestamp]:
        return (ts for ts, _ in self.ds.values())

    def newest_timestamp(self) -> Timestamp | None:
        newest: Timestamp | None = None
        for ts, _ in self.ds.values():
            if newest is None or ts > newest:
                newest = ts
        return newest

    def _encode_payload(self, w: Writer, payload: _Write) -> None:
        ts, value = payload
        w.svarint(ts.wall_ms)
        w.uvarint(ts.logical)
        w.value(value)

    def _decode_payload(self, r: Reader) -> _Write:
        wall = r.int64()
        logical = r.uvarint()
        return (new_timestamp(wall, logical), r.value())

    def __repr__(self) -> str:
        win = self.winner()
        if win is None:
            return "LWWRegister(None)"
        dot, ts, value = win
        return f"LWWRegister({value!r}, ts={ts!r}, by={dot.actor!r})"
