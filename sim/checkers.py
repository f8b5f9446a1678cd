"""Jepsen-style checkers over a recorded history and the final values.

Each checker reads plain data (``sim.history``) and returns ``Violation``s that
say what was expected, what was found, where, and which operations matter, so a
failing seed can be debugged from its report alone. An operation no final replica
has seen is *lost*: the durability checker reports it (unless a wipe or rollback
destroyed its only copy), and the value checkers leave it out, so one lost write
is reported once.

- convergence: every replica in scope has the same digest;
- durability: no acknowledged operation is lost;
- set-full: an acknowledged add is present unless a causally later remove (one
  whose ``seen`` holds the add's dot) covers it; a present element has an add no
  remove covers;
- counter: the value is the sum of acknowledged increments, less those a key
  removal saw (the removal saw the actor's running total);
- registers: an LWW register holds the greatest (timestamp, writer, value) of the
  writes no later write or removal saw (one whose actor had taken the write out
  already, by an operation since lost, does not count), and is empty when there
  are none; an MV register holds exactly those writes' values;
- monotonic reads: no replica's seen events (per key, per actor) ever decrease
  between two observations of the same incarnation of its store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sim.history import Cell, History, Op
from sync._values import value_order_key

Finals = Mapping[str, Mapping[Cell, object]]  # node -> cell -> value


@dataclass(frozen=True)
class Violation:
    checker: str
    detail: str

    def __str__(self) -> str:
        return f"{self.checker}: {self.detail}"


class Observation:
    """What a checker saw a replica hold: per key, per actor, events seen.

    ``until``: the same reading was seen again, last at this time (the simulator
    notes it when it next reads the node, or at the check). A plain class with
    slots, not a named tuple, so noting it sets one attribute where a tuple is
    built again: the simulator makes one per changed node per simulated second."""

    __slots__ = ("at", "incarnation", "node", "progress", "until")

    def __init__(
        self,
        at: int,
        node: str,
        incarnation: int,
        progress: Mapping[str, Mapping[str, int]],
        until: int | None = None,
    ) -> None:
        self.at = at
        self.node = node
        self.incarnation = incarnation
        self.progress = progress
        self.until = until

    @property
    def last_at(self) -> int:
        return self.at if self.until is None else self.until

    def _fields(self) -> tuple[object, ...]:
        return (self.at, self.node, self.incarnation, self.progress, self.until)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Observation) and self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # (until is noted later: not a key)

    def __repr__(self) -> str:
        return (
            f"Observation(at={self.at}, node={self.node!r}, incarnation={self.incarnation}, "
            f"{len(self.progress)} keys, until={self.until})"
        )


def check_convergence(digests: Mapping[str, str]) -> list[Violation]:
    groups: dict[str, list[str]] = {}
    for node, digest in sorted(digests.items()):
        groups.setdefault(digest, []).append(node)
    if len(groups) <= 1:
        return []
    shown = "; ".join(f"{d[:12]}: {' '.join(n)}" for d, n in sorted(groups.items()))
    return [
        Violation("convergence", f"{len(groups)} different states after the quiet period: {shown}")
    ]


def check_durability(history: History) -> list[Violation]:
    out = []
    for op in history.ops:
        missing = history.unseen.get(op.id)
        if missing and op.id not in history.at_risk:
            out.append(
                Violation(
                    "durability", f"acknowledged {op.text()} is missing on {' '.join(missing)}"
                )
            )
    return out


def _cover(op: Op, others: list[Op], lost: Sequence[Op] = ()) -> Op | None:
    """A later operation that saw ``op`` and replaced or removed it, if any."""
    assert op.dot is not None
    for later in others:
        saw = later.id != op.id and op.dot in later.seen
        if saw and _replaces(later, op) and not _taken_by_lost(op, later, lost):
            return later
    return None


def _taken_by_lost(op: Op, later: Op, lost: Sequence[Op]) -> bool:
    """A lost operation by ``later``'s actor, before it, had already taken ``op`` out there.

    A removal or a write takes out only the dots its replica *holds*: its delta's
    context is those dots (and its own), not every dot the replica has seen. Once an
    operation ``gone`` of the same actor replaced ``op`` (a removal, a register write
    that saw it, or adding the element again, which re-mints it), ``op``'s dot stays
    in that replica's context and never comes back to its store, so ``later`` names
    only what came after, even though its ``seen`` holds ``op``'s dot. If ``gone`` was
    lost (its node wiped or rolled back before it left), nothing removes ``op`` any
    more: not a lost removal, but the loss. The rule hides no lost removal: it only
    stops counting ``later``, whose delta never named ``op``'s dot, and if ``gone``'s
    removal of ``op`` did reach the final state (``gone`` lost only in part), ``op``
    is absent where it is now expected, which is reported, not excused.

    Seed 669 is a removal lost before a second one; seeds 20548, 28892 and 30317 a
    register write lost before a removal (one interval refused for clock skew or
    dropped, the next one taken, then the store lost): the value it overwrote rightly
    stays, and wins if it ranks above the writes concurrent with it.

    The same actor, not just the same node: a node that lost its store takes a new
    epoch, and may then learn ``op`` again and remove it for real.
    """
    return any(
        gone.actor == later.actor and op.id < gone.id < later.id and op.dot in gone.seen
        and _replaces(gone, op)
        for gone in lost
    )  # fmt: skip


def _replaces(later: Op, op: Op) -> bool:
    if later.kind == "del":
        return True
    if op.kind == "add":  # adding an element again re-mints it: the old dot goes
        return later.kind in ("add", "rm") and later.value == op.value
    return later.kind == op.kind  # a register write replaces what it saw


def check_sets(history: History, finals: Finals) -> list[Violation]:
    out = []
    for cell in history.cells():
        if cell.type != "set":
            continue
        for node, cells in sorted(finals.items()):
            ops = [op for op in history.on(cell) if not history.lost(op, node)]
            lost = [op for op in history.on(cell) if history.lost(op, node)]
            adds = [op for op in ops if op.kind == "add"]
            live = {op.value for op in adds if _cover(op, ops, lost) is None}
            raw = cells.get(cell, frozenset())
            present = raw if isinstance(raw, frozenset) else frozenset()
            for op in adds:
                if op.value not in present and _cover(op, ops, lost) is None:
                    out.append(
                        Violation(
                            "set-full", f"{cell} on {node}: lost {op.text()}; no remove saw it"
                        )
                    )
            for element in sorted(present - live, key=repr):
                covers = [
                    f"#{c.id}" for a in adds if a.value == element if (c := _cover(a, ops, lost))
                ]
                why = f"every add was removed ({', '.join(covers)})" if covers else "never added"
                out.append(Violation("set-full", f"{cell} on {node}: holds {element!r}, {why}"))
    return out


def check_counters(history: History, finals: Finals) -> list[Violation]:
    """The value is the sum of the acknowledged increments not cancelled by a remove.

    An increment whose only copies were lost to amnesia may or may not count: a later
    increment by the same actor carries its running total, so it can survive through
    that one. So may one whose only cancelling remove was lost. Each such increment
    widens the range the value may fall in.
    """
    out = []
    for cell in history.cells():
        if cell.type != "counter":
            continue
        for node, cells in sorted(finals.items()):
            risky = history.at_risk
            ops = [op for op in history.on(cell) if op.id in risky or not history.lost(op, node)]
            incs = [op for op in ops if op.kind == "inc"]
            void = _void_removes(history.on(cell), cell)
            dels = [op for op in ops if op.kind == "del" and op.id not in void]
            sure, maybe, kept = 0, [], 0
            for inc in incs:
                cancels = [
                    d for d in dels if d.saw_total(cell, inc.direction, inc.actor) >= inc.total
                ]
                if any(not history.lost(d, node) for d in cancels):
                    continue  # a remove that is there cancelled it
                kept += 1
                amount = int(inc.value)  # type: ignore[call-overload]
                if cancels or history.lost(inc, node):  # only a remove lost to amnesia, or
                    maybe.append(amount)  # the increment itself was: it may count or not
                else:
                    sure += amount
            low, high = sure + sum(min(v, 0) for v in maybe), sure + sum(max(v, 0) for v in maybe)
            value = cells.get(cell, 0)
            if not low <= value <= high:
                expected = f"{low}" if low == high else f"{low}..{high}"
                out.append(Violation("counter", (
                    f"{cell} on {node}: value {value}, expected {expected} = the sum of "
                    f"{kept} of {len(incs)} acknowledged increments "
                    f"({len(incs) - kept} cancelled by {len(dels)} removes, "
                    f"{len(maybe)} lost to amnesia may count)"
                )))  # fmt: skip
    return out


def _void_removes(ops: list[Op], cell: Cell) -> set[int]:
    """The removes of a counter that took nothing out: made by an actor whose last
    remove of it saw the same totals. That one reset the counter there to nothing
    (the key holds nothing, and removing it again makes an empty delta), so if it
    was lost (its node wiped before it left), the increments it saw may count: the
    later remove, though it saw them too, cancels none of them (simulator seed 9598
    under ``rollback-hub``). An actor that saw more in between removes that again.
    """
    void: set[int] = set()
    last: dict[str, list[tuple[tuple[str, int, str], int]]] = {}
    for op in ops:
        if op.kind != "del":
            continue
        totals = [(key, n) for key, n in op.seen_totals if key[0] == cell.field]
        if last.get(op.actor) == totals:
            void.add(op.id)
        last[op.actor] = totals
    return void


def _rank(op: Op) -> tuple[int, int, str, bytes]:
    assert op.ts is not None
    return (op.ts[0], op.ts[1], op.actor, value_order_key(op.value))


def check_registers(history: History, finals: Finals) -> list[Violation]:
    out = []
    for cell in history.cells():
        if cell.type not in ("lww", "mv"):
            continue
        for node, cells in sorted(finals.items()):
            ops = [op for op in history.on(cell) if not history.lost(op, node)]
            lost = [op for op in history.on(cell) if history.lost(op, node)]
            writes = [op for op in ops if op.kind in ("set", "mv")]
            frontier = [w for w in writes if _cover(w, ops, lost) is None]
            expected: object
            if cell.type == "lww":
                expected = max(frontier, key=_rank).value if frontier else None
            else:
                expected = frozenset(w.value for w in frontier) if frontier else None
            value = cells.get(cell)
            if value == expected:
                continue
            stale = [
                f"#{w.id} by #{c.id}"
                for w in writes
                if _holds(value, w.value) and (c := _cover(w, ops, lost)) is not None
            ]
            why = (
                f"replaced or removed by a causally later operation: {', '.join(stale)}"
                if stale
                else "not the winner"
            )
            latest = ", ".join(w.text() for w in frontier) or "none (removed)"
            out.append(Violation("register", (
                f"{cell} on {node}: holds {value!r}, expected {expected!r} ({why}); "
                f"writes no later write saw: {latest}"
            )))  # fmt: skip
    return out


def _holds(value: object, written: object) -> bool:
    return written in value if isinstance(value, frozenset) else value == written


def check_monotonic(observations: list[Observation]) -> list[Violation]:
    out = []
    last: dict[tuple[str, int], Observation] = {}
    for obs in observations:
        before = last.get((obs.node, obs.incarnation))
        last[(obs.node, obs.incarnation)] = obs
        if before is None or before.progress is obs.progress:  # the same reading again
            continue
        for key, actors in sorted(before.progress.items()):
            now = obs.progress.get(key, {})
            for actor, n in sorted(actors.items()):
                if now.get(actor, 0) < n:
                    out.append(Violation("monotonic", (
                        f"{obs.node} held {n} events of {actor} on {key} at {before.last_at} ms, "
                        f"only {now.get(actor, 0)} at {obs.at} ms"
                    )))  # fmt: skip
    return out


def check_all(
    history: History,
    finals: Finals,
    digests: Mapping[str, str],
    observations: list[Observation],
) -> list[Violation]:
    return [
        *check_convergence(digests),
        *check_durability(history),
        *check_sets(history, finals),
        *check_counters(history, finals),
        *check_registers(history, finals),
        *check_monotonic(observations),
    ]
