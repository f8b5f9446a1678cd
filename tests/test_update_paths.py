"""The local update path's and the join's shortcuts give exactly what the long way gives.

A store of one dot replaced without copying it, a dot minted in one step, a new
key's value made through its type's blank, event counts kept by what a join adds,
the unseen part of a context found above the other's vector, removals found from
either side, contexts compacted without building dots, and integers checked
against the machine-sized bounds first.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync import (
    CRDT,
    EWFlag,
    Keyspace,
    LWWRegister,
    MVRegister,
    PNCounter,
    Timestamp,
    crdt_types,
)
from sync._causal import Dot, DotContext
from sync._kernel import DotKernel
from sync._keyspace import _events_per_actor, _new_value
from sync._values import check_int

from crdt_histories import ACTORS, histories

# Types whose mutators replace every observed dot, with a payload of each.
REPLACING: dict[type[DotKernel], Any] = {
    LWWRegister: (Timestamp(5, 0), "v"),
    PNCounter: None,
    MVRegister: 7,
    EWFlag: None,
}


def replace_all_the_long_way(x: DotKernel, actor: str, payload: Any) -> DotKernel:
    """``_replace_all`` as the kernel's building blocks spell it, step by step."""
    delta = x._delta()
    x._remove(list(x.ds), delta)
    dot = x.ctx.next_dot(actor)
    x._put(dot, payload)
    x.ctx.add(dot)
    delta._put(dot, payload)
    delta.ctx.add(dot)
    return delta


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_replacing_every_dot_gives_the_long_ways_value_and_delta(data: st.DataObject) -> None:
    cls = data.draw(st.sampled_from(sorted(REPLACING, key=lambda c: c.TYPE_TAG)))
    history = data.draw(histories(cls, max_steps=12))
    for actor, state in zip(ACTORS, history.replicas, strict=True):
        assert isinstance(state, DotKernel)
        quick, slow = state.copy(), state.copy()
        delta = quick._replace_all(actor, REPLACING[cls])
        assert delta == replace_all_the_long_way(slow, actor, REPLACING[cls])
        assert quick == slow
        assert quick.ctx == slow.ctx and delta.ctx == delta.copy().ctx


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_minting_a_dot_is_taking_the_next_one_and_adding_it(data: st.DataObject) -> None:
    cls = data.draw(st.sampled_from(crdt_types()))
    history = data.draw(histories(cls, max_steps=12))
    for actor, state in zip(ACTORS, history.replicas, strict=True):
        minted, added = state.ctx.copy(), state.ctx.copy()
        expected = added.next_dot(actor)
        added.add(expected)
        dot = minted.mint(actor)
        assert dot == expected and type(dot) is Dot
        assert minted == added


def test_a_new_keys_value_is_an_empty_value_of_its_type() -> None:
    for cls in crdt_types():
        fresh = _new_value(cls, cls.TYPE_TAG)
        assert type(fresh) is cls and fresh == cls() and fresh.is_bottom()


def all_events(ks: Keyspace) -> dict[str, int]:
    """Events per actor counted from scratch, over every key."""
    totals: dict[str, int] = {}
    for child in ks.entries.values():
        for actor, n in _events_per_actor(child.ctx).items():
            totals[actor] = totals.get(actor, 0) + n
    return {actor: n for actor, n in sorted(totals.items()) if n}


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_events_counted_while_joining_are_the_events_joined(data: st.DataObject) -> None:
    """Deltas joined in any order (so states with dot clouds as well as plain ones),
    by merge and by absorb, into a keyspace that keeps its event counts."""
    cls = data.draw(st.sampled_from(crdt_types()))
    history = data.draw(histories(cls, max_steps=15))
    values: list[CRDT] = data.draw(st.permutations([*history.deltas, *history.snapshots]))
    ks = Keyspace()
    ks.actor_progress()  # counted from here on
    for n, value in enumerate(values):
        incoming = Keyspace()
        incoming.entries[(f"k{n % 2}", cls.TYPE_TAG)] = value.copy()
        if n % 3:
            ks.merge(incoming)
        else:
            ks.absorb(incoming)
        assert ks.actor_progress() == all_events(ks)


def dot_sets(max_size: int = 8) -> st.SearchStrategy[set[Dot]]:
    return st.sets(
        st.builds(Dot, st.sampled_from(["a", "b"]), st.integers(1, 6)), max_size=max_size
    )


def compact(ctx: DotContext) -> bool:
    """No cloud dot covered by the vector, none the next one it expects."""
    return all(d.counter > ctx.vv[d.actor] + 1 for d in ctx.cloud)


@settings(max_examples=50, deadline=None)
@given(dot_sets(), dot_sets())
def test_contexts_hold_their_dots_compactly_through_merges(
    mine: set[Dot], theirs: set[Dot]
) -> None:
    ctx = DotContext.of(mine)
    assert set(ctx.dots()) == mine and compact(ctx) and ctx.size() == len(mine)
    ctx.merge(DotContext.of(theirs))
    assert set(ctx.dots()) == mine | theirs and compact(ctx)


@settings(max_examples=50, deadline=None)
@given(dot_sets(), dot_sets(), dot_sets(max_size=2))
def test_the_unseen_part_of_a_context_is_every_dot_the_other_lacks(
    mine: set[Dot], theirs: set[Dot], already: set[Dot]
) -> None:
    out = DotContext.of(already)
    DotContext.of(mine).add_unseen(DotContext.of(theirs), out)
    assert out == DotContext.of(already | (mine - theirs))


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_removals_found_from_either_side_are_the_same(data: st.DataObject) -> None:
    cls = data.draw(st.sampled_from([c for c in crdt_types() if issubclass(c, DotKernel)]))
    history = data.draw(histories(cls, max_steps=12))
    values = [*history.deltas, *history.snapshots]
    for x in values:
        for known in values[:6]:
            assert isinstance(x, DotKernel) and isinstance(known, DotKernel)
            by_context = {d for d in x.ctx.dots() if d in known.ds and d not in x.ds}
            by_store = {d for d in known.ds if d in x.ctx and d not in x.ds}
            assert by_context == by_store == set(x._removed_from(known))


@pytest.mark.parametrize(
    "n", [0, 1, -1, 2**62 - 1, -(2**62) + 1, 2**62, -(2**62), 2**63 - 1, -(2**63)]
)
def test_integers_in_64_bits_pass_whichever_bound_decides(n: int) -> None:
    assert check_int(n) == n


@pytest.mark.parametrize("n", [2**63, -(2**63) - 1, 2**100, -(2**100)])
def test_integers_outside_64_bits_are_refused(n: int) -> None:
    with pytest.raises(ValueError, match="64-bit"):
        check_int(n)
