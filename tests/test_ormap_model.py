"""Three replicas of an ORMap against a model of what each replica should read.

The model knows nothing of dots. It records every operation, which operations
each replica has heard of, and which earlier operations each one cancels (an add
cancels the observed adds of its element, a write the observed writes, a key
removal everything observed under the key). A replica's expected value is
computed from the operations it has heard of and not seen cancelled; counters
follow their own rule (an actor's running total minus the total a removal saw).

Replicas exchange both full states (causal) and single deltas, delivered out of
order and more than once, which opens gaps in the dot context that compaction
must later close.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sync import CRDT, AWSet, LWWRegister, MVRegister, ORMap, PNCounter, Timestamp, decode
from sync._values import value_order_key

ACTORS = ("r0", "r1", "r2")
KINDS: dict[str, type[CRDT]] = {
    "set": AWSet,
    "counter": PNCounter,
    "lww": LWWRegister,
    "mv": MVRegister,
}
NAMES = ("x", "y")
replica_ix = st.integers(0, len(ACTORS) - 1)
key_st = st.tuples(st.sampled_from(NAMES), st.sampled_from(sorted(KINDS)))


@dataclass(frozen=True)
class Op:
    id: int
    actor: str
    key: tuple[str, str]
    kind: str  # add | rm | inc | write | del
    arg: Any = None
    ts: Timestamp | None = None
    cancels: frozenset[int] = frozenset()
    # counters: this increment's direction and running total for its actor
    direction: int = 0
    total: int = 0
    # counter removals: (actor, direction) -> running total observed
    bases: tuple[tuple[tuple[str, int], int], ...] = ()


@dataclass
class Model:
    ops: dict[int, Op] = field(default_factory=dict)
    heard: list[set[int]] = field(default_factory=lambda: [set() for _ in ACTORS])

    def alive(self, heard: set[int]) -> list[Op]:
        """Heard-of updates (not removals) that nothing heard-of has cancelled."""
        cancelled = set().union(*(self.ops[i].cancels for i in heard))
        return [
            self.ops[i]
            for i in sorted(heard)
            if i not in cancelled and self.ops[i].kind in ("add", "inc", "write")
        ]

    def view(self, heard: set[int]) -> dict[tuple[str, str], Any]:
        live = self.alive(heard)
        out: dict[tuple[str, str], Any] = {}
        for key in sorted({op.key for op in live}):
            here = [op for op in live if op.key == key]
            out[(key[0], KINDS[key[1]].__name__)] = self._value(key, here, heard)
        return out

    def _value(self, key: tuple[str, str], live: list[Op], heard: set[int]) -> Any:
        kind = key[1]
        if kind == "set":
            return frozenset(op.arg for op in live)
        if kind == "mv":
            distinct = {value_order_key(op.arg): op.arg for op in live}
            return tuple(distinct[k] for k in sorted(distinct))
        if kind == "lww":
            win = max(live, key=lambda op: (op.ts, op.actor, value_order_key(op.arg)))
            return win.arg
        return self.counter_value(key, heard)

    def counter_value(self, key: tuple[str, str], heard: set[int]) -> int:
        mine = [self.ops[i] for i in heard if self.ops[i].key == key]
        totals: dict[tuple[str, int], int] = {}
        bases: dict[tuple[str, int], int] = {}
        for op in mine:
            if op.kind == "inc":
                slot = (op.actor, op.direction)
                totals[slot] = max(totals.get(slot, 0), op.total)
            for slot, base in op.bases:
                bases[slot] = max(bases.get(slot, 0), base)
        value = 0
        for (actor, direction), total in totals.items():
            amount = max(0, total - bases.get((actor, direction), 0))
            value += amount if direction == 0 else -amount
        return value


class ORMapReplicas(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.replicas = [ORMap() for _ in ACTORS]
        self.model = Model()
        self.outbox: list[tuple[int, bytes]] = []  # (op id, encoded delta)
        self.clock = 0

    # ---- helpers -------------------------------------------------------------

    def _record(self, i: int, delta: ORMap, **fields: Any) -> None:
        op = Op(id=len(self.model.ops), actor=ACTORS[i], **fields)
        self.model.ops[op.id] = op
        self.model.heard[i].add(op.id)
        self.outbox.append((op.id, delta.encode()))

    def _alive_here(self, i: int, key: tuple[str, str]) -> list[Op]:
        return [op for op in self.model.alive(self.model.heard[i]) if op.key == key]

    # ---- updates ---------------------------------------------------------------

    @rule(i=replica_ix, name=st.sampled_from(NAMES), e=st.integers(0, 3))
    def add(self, i: int, name: str, e: int) -> None:
        key = (name, "set")
        cancels = frozenset(op.id for op in self._alive_here(i, key) if op.arg == e)
        delta = self.replicas[i].apply(name, AWSet, lambda s: s.add(ACTORS[i], e))
        self._record(i, delta, key=key, kind="add", arg=e, cancels=cancels)

    @rule(i=replica_ix, name=st.sampled_from(NAMES), e=st.integers(0, 3))
    def remove_element(self, i: int, name: str, e: int) -> None:
        key = (name, "set")
        cancels = frozenset(op.id for op in self._alive_here(i, key) if op.arg == e)
        delta = self.replicas[i].apply(name, AWSet, lambda s: s.remove(e))
        self._record(i, delta, key=key, kind="rm", arg=e, cancels=cancels)

    @rule(i=replica_ix, name=st.sampled_from(NAMES), n=st.integers(-3, 5))
    def increment(self, i: int, name: str, n: int) -> None:
        key = (name, "counter")
        direction = 0 if n >= 0 else 1
        previous = [
            self.model.ops[j]
            for j in self.model.heard[i]
            if self.model.ops[j].key == key
            and self.model.ops[j].kind == "inc"
            and self.model.ops[j].actor == ACTORS[i]
            and self.model.ops[j].direction == direction
        ]
        total = max((op.total for op in previous), default=0) + abs(n)
        cancels = frozenset(op.id for op in self._alive_here(i, key))
        delta = self.replicas[i].apply(name, PNCounter, lambda c: c.increment(ACTORS[i], n))
        self._record(
            i, delta, key=key, kind="inc", direction=direction, total=total, cancels=cancels
        )

    @rule(i=replica_ix, name=st.sampled_from(NAMES), v=st.integers(0, 3), tick=st.integers(0, 2))
    def write_lww(self, i: int, name: str, v: int, tick: int) -> None:
        self.clock += tick  # tick 0 gives equal timestamps across replicas
        ts = Timestamp(self.clock, 0)
        key = (name, "lww")
        cancels = frozenset(op.id for op in self._alive_here(i, key))
        delta = self.replicas[i].apply(name, LWWRegister, lambda r: r.set(ACTORS[i], v, ts))
        self._record(i, delta, key=key, kind="write", arg=v, ts=ts, cancels=cancels)

    @rule(i=replica_ix, name=st.sampled_from(NAMES), v=st.integers(0, 3))
    def write_mv(self, i: int, name: str, v: int) -> None:
        key = (name, "mv")
        cancels = frozenset(op.id for op in self._alive_here(i, key))
        delta = self.replicas[i].apply(name, MVRegister, lambda r: r.write(ACTORS[i], v))
        self._record(i, delta, key=key, kind="write", arg=v, cancels=cancels)

    @rule(i=replica_ix, key=key_st)
    def remove_key(self, i: int, key: tuple[str, str]) -> None:
        cancels = frozenset(op.id for op in self._alive_here(i, key))
        bases: dict[tuple[str, int], int] = {}
        for j in self.model.heard[i]:
            op = self.model.ops[j]
            if op.key == key and op.kind == "inc":
                slot = (op.actor, op.direction)
                bases[slot] = max(bases.get(slot, 0), op.total)
        delta = self.replicas[i].remove(key[0], KINDS[key[1]])
        self._record(i, delta, key=key, kind="del", cancels=cancels, bases=tuple(bases.items()))

    # ---- communication -----------------------------------------------------------

    @rule(i=replica_ix, j=replica_ix)
    def merge_full_state(self, i: int, j: int) -> None:
        self.replicas[i].merge(decode(self.replicas[j].encode()))  # type: ignore[arg-type]
        self.model.heard[i] |= self.model.heard[j]

    @precondition(lambda self: self.outbox)
    @rule(i=replica_ix, pick=st.integers(0, 10**6))
    def deliver_one_delta(self, i: int, pick: int) -> None:
        op_id, raw = self.outbox[pick % len(self.outbox)]
        self.replicas[i].merge(decode(raw))  # type: ignore[arg-type]
        self.model.heard[i].add(op_id)

    @rule()
    def sync_everyone(self) -> None:
        everything = set(self.model.ops)
        total = ORMap()
        for r in self.replicas:
            total.merge(r.copy())
        for i, r in enumerate(self.replicas):
            r.merge(total.copy())
            self.model.heard[i] = set(everything)
        assert len({r.digest() for r in self.replicas}) == 1
        for r in self.replicas:  # every actor's dots are now contiguous: no gaps left
            assert not r.ctx.cloud, r.ctx

    # ---- invariants ------------------------------------------------------------------

    @invariant()
    def each_replica_reads_what_the_model_expects(self) -> None:
        for i, r in enumerate(self.replicas):
            assert r.value() == self.model.view(self.model.heard[i]), ACTORS[i]

    @invariant()
    def contexts_stay_compact(self) -> None:
        for r in self.replicas:
            vv = r.ctx.vv
            assert all(d.counter > vv[d.actor] + 1 for d in r.ctx.cloud)


ORMapReplicas.TestCase.settings = ORMapReplicas.TestCase.settings.__class__(
    ORMapReplicas.TestCase.settings, stateful_step_count=60
)
TestORMapReplicas = ORMapReplicas.TestCase
