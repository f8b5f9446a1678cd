"""Random valid histories for every CRDT type, shared by the generic law tests.

A history runs on three replicas, each with its own actor: random mutations
(recording each delta) and random merges between replicas. Timestamps are drawn
from a tiny range so equal timestamps are common, and a writer's own timestamps
may repeat, covering the register tie-breaks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from sync import (
    CRDT,
    AWSet,
    EWFlag,
    GCounter,
    LWWRegister,
    MaxRegister,
    MinRegister,
    MVRegister,
    ORMap,
    PNCounter,
    Timestamp,
    crdt_types,
)

ACTORS = ("r0", "r1", "r2")
Mutator = Callable[[Any, str, int], Any]


def _ts(x: int) -> Timestamp:
    return Timestamp(x % 3, (x // 3) % 2)


def _number(x: int) -> int | float:
    return x % 7 if x % 2 else float(x % 5) - 2.5


OPS: dict[type[CRDT], list[Mutator]] = {
    GCounter: [lambda c, a, x: c.increment(a, x % 4), lambda c, a, x: c.reset()],
    PNCounter: [
        lambda c, a, x: c.increment(a, x % 4),
        lambda c, a, x: c.decrement(a, x % 3),
        lambda c, a, x: c.reset(),
    ],
    LWWRegister: [
        lambda r, a, x: r.set(a, x % 3, _ts(x)),
        lambda r, a, x: r.set(a, [x % 2, {"k": x % 3}], _ts(x // 2)),
        lambda r, a, x: r.reset(),
    ],
    MVRegister: [lambda r, a, x: r.write(a, x % 3), lambda r, a, x: r.reset()],
    AWSet: [
        lambda s, a, x: s.add(a, ["e", 1, b"\x00"][x % 3]),
        lambda s, a, x: s.remove(["e", 1, b"\x00"][x % 3]),
        lambda s, a, x: s.reset(),
    ],
    EWFlag: [lambda f, a, x: f.enable(a), lambda f, a, x: f.disable()],
    MaxRegister: [lambda r, a, x: r.set(a, _number(x)), lambda r, a, x: r.reset()],
    MinRegister: [lambda r, a, x: r.set(a, _number(x)), lambda r, a, x: r.reset()],
}


def _leaf_update(cls: type[CRDT], op: Mutator) -> Mutator:
    return lambda m, a, x: m.apply("k" + str(x % 2), cls, lambda c: op(c, a, x // 2))


def _leaf_removal(cls: type[CRDT]) -> Mutator:
    return lambda m, a, x: m.remove("k" + str(x % 2), cls)


def _nested_ops() -> list[Mutator]:
    """ORMap mutations: any leaf op under a few names, removes, and a nested map."""
    leaf_types = list(OPS)
    ops: list[Mutator] = []
    for cls in leaf_types:
        ops.extend(_leaf_update(cls, op) for op in OPS[cls])
        ops.append(_leaf_removal(cls))
    ops.append(
        lambda m, a, x: m.apply(
            "inner", ORMap, lambda inner: inner.apply("s", AWSet, lambda s: s.add(a, x % 3))
        )
    )
    ops.append(
        lambda m, a, x: m.apply(
            "inner", ORMap, lambda inner: inner.apply("c", PNCounter, lambda c: c.increment(a, 1))
        )
    )
    ops.append(lambda m, a, x: m.apply("inner", ORMap, lambda inner: inner.remove("s", AWSet)))
    ops.append(lambda m, a, x: m.remove("inner", ORMap))
    return ops


OPS[ORMap] = _nested_ops()
assert set(OPS) == set(crdt_types()), "every registered type needs ops in the law tests"


@dataclass
class History:
    cls: type[CRDT]
    replicas: list[CRDT]
    deltas: list[CRDT] = field(default_factory=list)
    snapshots: list[CRDT] = field(default_factory=list)
    steps: list[tuple[CRDT, CRDT, CRDT]] = field(default_factory=list)  # before, delta, after


@st.composite
def histories(draw: st.DrawFn, cls: type[CRDT], max_steps: int = 25) -> History:
    replicas = [cls() for _ in ACTORS]
    history = History(cls, replicas)
    ops = OPS[cls]
    for _ in range(draw(st.integers(0, max_steps))):
        i = draw(st.integers(0, len(ACTORS) - 1))
        if draw(st.integers(0, 3)) == 0:
            j = draw(st.integers(0, len(ACTORS) - 1))
            replicas[i].merge(replicas[j].copy())
        else:
            op = ops[draw(st.integers(0, len(ops) - 1))]
            before = replicas[i].copy()
            delta = op(replicas[i], ACTORS[i], draw(st.integers(0, 11)))
            history.deltas.append(delta)
            history.steps.append((before, delta, replicas[i].copy()))
        history.snapshots.append(replicas[i].copy())
    return history
