"""The history a run records: every acknowledged client operation, as plain data.

Checkers read only this (and the final values), never a replica, so a test can
fabricate a violating history by hand. Causality is recorded the way the CRDTs
define it: an operation carries the dot it minted and the dots its node had seen
of the cell before it (``seen``); operation B is causally after A on a cell exactly
when A's dot is in B's ``seen``. A counter removal records, per (field, direction,
actor), the running total it saw: it cancels precisely the increments whose total
is at most that.

A cell is (path, field, type): ``field`` is "" for a top-level key, else the name
inside the map at ``path``. Types: lww, mv, counter, set, map.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

DotT = tuple[str, int]  # (actor, counter), as sync.Dot


class Cell(NamedTuple):
    path: str
    field: str
    type: str

    def __str__(self) -> str:
        inner = f"/{self.field}" if self.field else ""
        return f"{self.path}{inner}:{self.type}"


@dataclass(frozen=True)
class Op:
    id: int
    node: str
    at: int  # virtual time, ms
    kind: str  # set, mv, inc, add, rm, del
    cell: Cell
    actor: str  # node@epoch that made it
    value: object = None  # the value written, the element, or the (signed) amount
    dot: DotT | None = None  # the dot this operation minted (none for removals)
    ts: tuple[int, int] | None = None  # an LWW write's hybrid timestamp
    direction: int = 0  # counters: 0 increments, 1 decrements
    total: int = 0  # counters: the actor's running total in ``direction`` after this op
    seen: frozenset[DotT] = frozenset()
    seen_totals: tuple[tuple[tuple[str, int, str], int], ...] = ()  # ((field, dir, actor), total)

    def covers(self, cell: Cell) -> bool:
        """A removal (del) covers its own cell, or every field of a map it removed."""
        if self.kind != "del":
            return False
        if self.cell == cell:
            return True
        return self.cell.type == "map" and cell.path == self.cell.path and cell.field != ""

    def saw_total(self, cell: Cell, direction: int, actor: str) -> int:
        return dict(self.seen_totals).get((cell.field, direction, actor), 0)

    def text(self) -> str:
        return f"#{self.id} {self.node} {self.kind} {self.cell} {self.value!r} at {self.at} ms"


@dataclass
class History:
    ops: list[Op] = field(default_factory=list)
    # Operations whose only copies were lost to a wipe or rollback (with the event):
    # not required to survive, but allowed to.
    at_risk: dict[int, str] = field(default_factory=dict)
    # Operation id -> final replicas whose state has not seen it.
    unseen: dict[int, list[str]] = field(default_factory=dict)

    def lost(self, op: Op, node: str) -> bool:
        """Not seen by ``node``'s final state: its effects must not be expected there
        (the durability checker reports the loss, once)."""
        return node in self.unseen.get(op.id, ())

    def on(self, cell: Cell) -> list[Op]:
        return [op for op in self.ops if op.cell == cell or op.covers(cell)]

    def cells(self) -> list[Cell]:
        return sorted({op.cell for op in self.ops if op.cell.type != "map"})
