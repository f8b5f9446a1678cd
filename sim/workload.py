"""Client writes against a replica, and reading its state back as checkable cells.

A write step (``set``, ``mv``, ``inc``, ``add``, ``rm``, ``del``, or any of them
inside ``map PATH FIELD``) becomes one mutator call on the very ``Replica`` the
daemons run; ``perform`` also records what the checkers need to know about it:
the dot it minted, the dots (and counter totals) its node had seen of the cell
before, and an LWW write's timestamp.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sim.history import Cell, DotT, Op
from sync import AWSet, LWWRegister, MVRegister, ORMap, PNCounter
from sync._counter import Counter
from sync._crdt import CRDT
from sync._keyspace import Keyspace
from sync._replica import Replica

TYPE_CLASSES: dict[str, type[CRDT]] = {
    "lww": LWWRegister, "mv": MVRegister, "counter": PNCounter, "set": AWSet, "map": ORMap,
}  # fmt: skip
TYPE_NAMES = {cls.TYPE_TAG: name for name, cls in TYPE_CLASSES.items()}
KIND_TYPE = {"set": "lww", "mv": "mv", "inc": "counter", "add": "set", "rm": "set"}


def cell_of(words: tuple[str, ...]) -> Cell:
    """The cell a write step (``OP PATH ARG`` or ``map PATH FIELD OP ARG``) acts on."""
    if words[0] == "map":
        inner = cell_of((words[3], words[2], words[4]))
        return Cell(words[1], inner.path, inner.type)
    kind, path, arg = words[0], words[1], words[2]
    return Cell(path, "", arg if kind == "del" else KIND_TYPE[kind])


def perform(replica: Replica, words: tuple[str, ...], op_id: int, now: int) -> tuple[Keyspace, Op]:
    """Apply a write step; return a copy of its delta and its record."""
    cell = cell_of(words)
    kind, arg = (words[3], words[4]) if words[0] == "map" else (words[0], words[2])
    seen, seen_totals = _seen(replica.keyspace, cell)
    mutate = _mutator(replica, kind, arg)
    if cell.field:
        field_cls = TYPE_CLASSES[cell.type]
        if kind == "del":
            delta = replica.update(cell.path, ORMap, lambda m: m.remove(cell.field, field_cls))
        else:
            delta = replica.update(
                cell.path, ORMap, lambda m: m.apply(cell.field, field_cls, mutate)
            )
    elif kind == "del":
        delta = replica.remove(cell.path, TYPE_CLASSES[cell.type])
    else:
        delta = replica.update(cell.path, TYPE_CLASSES[cell.type], mutate)
    delta = delta.copy()
    op = _record(
        replica, delta, cell=cell, kind=kind, arg=arg, op_id=op_id, now=now,
        seen=seen, seen_totals=seen_totals,
    )  # fmt: skip
    return delta, op


def _mutator(replica: Replica, kind: str, arg: str) -> Callable[[Any], Any]:
    actor = replica.actor
    if kind == "set":
        ts = replica.hlc.now()
        return lambda r: r.set(actor, arg, ts)
    if kind == "mv":
        return lambda r: r.write(actor, arg)
    if kind == "inc":
        n = int(arg)
        return lambda c: c.increment(actor, n) if n >= 0 else c.decrement(actor, -n)
    if kind == "add":
        return lambda s: s.add(actor, arg)
    if kind == "rm":
        return lambda s: s.remove(arg)
    return lambda x: x  # del is not a mutator: handled by the caller


def _child(keyspace: Keyspace, cell: Cell) -> CRDT | None:
    if not cell.field:
        return keyspace.entries.get((cell.path, TYPE_CLASSES[cell.type].TYPE_TAG))
    holder = keyspace.entries.get((cell.path, ORMap.TYPE_TAG))
    if not isinstance(holder, ORMap):
        return None
    return holder.entries.get((cell.field, TYPE_CLASSES[cell.type].TYPE_TAG))


def _seen(
    keyspace: Keyspace, cell: Cell
) -> tuple[frozenset[DotT], tuple[tuple[tuple[str, int, str], int], ...]]:
    """The dots the node has seen of the cell's key, and every counter total it holds."""
    top = keyspace.entries.get(
        (cell.path, ORMap.TYPE_TAG if cell.field else TYPE_CLASSES[cell.type].TYPE_TAG)
    )
    if top is None:
        return frozenset(), ()
    seen = frozenset((d.actor, d.counter) for d in top.ctx.dots())
    if isinstance(top, ORMap):
        counters = [
            (name, c) for (name, _), c in sorted(top.entries.items()) if isinstance(c, Counter)
        ]
    else:
        counters = [("", top)] if isinstance(top, Counter) else []
    totals = [
        ((name, direction, actor), total)
        for name, counter in counters
        for direction, tally in enumerate(counter.tallies)
        for actor, total in sorted(tally.totals.items())
    ]
    return seen, tuple(totals)


def _record(
    replica: Replica,
    delta: Keyspace,
    *,
    cell: Cell,
    kind: str,
    arg: str,
    op_id: int,
    now: int,
    seen: frozenset[DotT],
    seen_totals: tuple[tuple[tuple[str, int, str], int], ...],
) -> Op:
    fields: dict[str, Any] = {}
    if kind not in ("del", "rm"):  # removals mint no dot
        written = _child(delta, cell)
        assert written is not None and hasattr(written, "ds"), (cell, delta)
        dot = next(iter(written.ds))
        fields["dot"] = (dot.actor, dot.counter)
        if kind == "set":
            ts = written.ds[dot][0]
            fields["ts"] = (ts.wall_ms, ts.logical)
        if kind == "inc":
            n = int(arg)
            direction = 0 if n >= 0 else 1
            after = _child(replica.keyspace, cell)
            assert isinstance(after, Counter)
            fields["direction"] = direction
            fields["total"] = after.tallies[direction].totals.get(replica.actor, 0)
    value: object = int(arg) if kind == "inc" else None if kind == "del" else arg
    return Op(
        op_id, replica.node_id, now, kind, cell, replica.actor, value,
        seen=seen, seen_totals=seen_totals, **fields,
    )  # fmt: skip


def read_cells(keyspace: Keyspace) -> dict[Cell, object]:
    """Every present value, by cell: sets and MV registers as frozensets."""
    out: dict[Cell, object] = {}
    for (path, tag), child in sorted(keyspace.entries.items()):
        if isinstance(child, ORMap):
            for (name, ftag), nested in sorted(child.entries.items()):
                if nested.is_present():
                    out[Cell(path, name, TYPE_NAMES[ftag])] = _plain(nested)
        elif child.is_present():
            out[Cell(path, "", TYPE_NAMES[tag])] = _plain(child)
    return out


def _plain(child: CRDT) -> object:
    value = child.value()
    if isinstance(child, MVRegister):
        return frozenset(value)
    return value
