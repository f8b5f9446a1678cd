"""Lattice and delta laws, one generic property test per law, run against every type."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync import CRDT, Counter, DotKernel, ORMap, crdt_types, decode

from crdt_histories import History, histories

TYPES = crdt_types()
type_param = pytest.mark.parametrize("cls", TYPES, ids=lambda c: c.__name__)


def joined(*states: CRDT) -> CRDT:
    out = type(states[0])()
    for s in states:
        out.merge(s.copy())
    return out


def semantic(x: CRDT) -> Any:
    """A structural view of a state, independent of the encoder (and of dict order)."""
    return (frozenset(x.ctx.dots()), _store_view(x))


def _store_view(x: CRDT) -> Any:
    if isinstance(x, ORMap):
        return frozenset((k, _store_view(c)) for k, c in x.entries.items())
    view: list[Any] = []
    if isinstance(x, DotKernel):
        view.append(frozenset((d, repr(p)) for d, p in x.ds.items()))
    if isinstance(x, Counter):
        view.append(
            tuple((frozenset(t.totals.items()), frozenset(t.bases.items())) for t in x.tallies)
        )
    return tuple(view)


def some_states(h: History, data: st.DataObject, n: int) -> list[CRDT]:
    pool = h.snapshots + h.deltas + [type(h.replicas[0])()]
    return [data.draw(st.sampled_from(pool)).copy() for _ in range(n)]


@type_param
@given(data=st.data())
def test_merge_is_commutative(cls: type[CRDT], data: st.DataObject) -> None:
    h = data.draw(histories(cls))
    a, b = some_states(h, data, 2)
    ab, ba = joined(a, b), joined(b, a)
    assert semantic(ab) == semantic(ba)
    assert ab == ba
    assert ab.encode() == ba.encode() and ab.digest() == ba.digest()


@type_param
@given(data=st.data())
def test_merge_is_associative(cls: type[CRDT], data: st.DataObject) -> None:
    h = data.draw(histories(cls))
    a, b, c = some_states(h, data, 3)
    left = joined(joined(a, b), c)
    right = joined(a, joined(b, c))
    assert left == right


@type_param
@given(data=st.data())
def test_merge_is_idempotent(cls: type[CRDT], data: st.DataObject) -> None:
    h = data.draw(histories(cls))
    (a,) = some_states(h, data, 1)
    twice = a.copy()
    twice.merge(a.copy())
    assert twice == a
    twice.merge(twice)
    assert twice == a


@type_param
@given(data=st.data())
def test_mutation_equals_joining_its_delta(cls: type[CRDT], data: st.DataObject) -> None:
    h = data.draw(histories(cls))
    for before, delta, after in h.steps:
        rejoined = before.copy()
        rejoined.merge(delta.copy())
        assert rejoined == after


@type_param
@given(data=st.data(), seed=st.integers(0, 2**32))
def test_deltas_in_any_order_with_duplicates_equal_full_states(
    cls: type[CRDT], data: st.DataObject, seed: int
) -> None:
    h = data.draw(histories(cls))
    rng = random.Random(seed)
    shuffled = h.deltas + rng.sample(h.deltas, k=len(h.deltas) // 2)  # duplicates
    rng.shuffle(shuffled)  # no causal order at all
    from_deltas = cls()
    for delta in shuffled:
        from_deltas.merge(delta.copy())
    assert from_deltas == joined(*h.replicas)


@type_param
@given(data=st.data())
def test_encoding_round_trips_and_is_canonical(cls: type[CRDT], data: st.DataObject) -> None:
    h = data.draw(histories(cls))
    for state in h.snapshots + h.deltas:
        raw = state.encode()
        back = decode(raw)
        assert type(back) is cls
        assert semantic(back) == semantic(state)
        assert back.encode() == raw
        assert back.value() == state.value()


@type_param
@given(data=st.data())
def test_equal_states_encode_equally(cls: type[CRDT], data: st.DataObject) -> None:
    h = data.draw(histories(cls))
    a, b = some_states(h, data, 2)
    if semantic(a) == semantic(b):
        assert a.encode() == b.encode()
    # Two routes to one state, built in different orders, must meet byte for byte.
    x, y = joined(a, b, *h.deltas), joined(*reversed(h.deltas), b, a)
    assert semantic(x) == semantic(y)
    assert x.encode() == y.encode() and x.digest() == y.digest()


@type_param
@given(data=st.data())
def test_join_decomposition_rejoins_to_the_original(cls: type[CRDT], data: st.DataObject) -> None:
    h = data.draw(histories(cls))
    (a,) = some_states(h, data, 1)
    parts = a.decompose()
    assert all(type(p) is cls and not p.is_bottom() for p in parts)
    assert len({p.encode() for p in parts}) == len(parts)
    assert joined(cls(), *parts) == a
    for p in parts:  # each part is irreducible: it has no smaller decomposition
        assert len(p.decompose()) == 1


@type_param
def test_every_type_has_a_repr_naming_it(cls: type[CRDT]) -> None:
    assert repr(cls()).startswith(cls.__name__)


@type_param
@given(data=st.data())
def test_novel_part_keeps_exactly_what_the_receiver_lacks(
    cls: type[CRDT], data: st.DataObject
) -> None:
    h = data.draw(histories(cls))
    known, incoming = some_states(h, data, 2)
    novel = incoming.novel_part(known)
    assert joined(known, novel) == joined(known, incoming)
    assert joined(novel, incoming) == incoming  # nothing invented
    if joined(known, incoming) == known:
        assert novel.is_bottom()
    assert (
        joined(known, incoming).is_bottom()
        or incoming.novel_part(joined(known, incoming)).is_bottom()
    )
