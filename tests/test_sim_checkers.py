"""Each simulator checker catches a deliberately broken history, and passes a sound one.

The histories are fabricated by hand: what a broken merge, a lost write or a store
that went backwards would leave behind, in the shape the simulator records.
"""

from __future__ import annotations

from sim.checkers import (
    Observation,
    check_convergence,
    check_counters,
    check_durability,
    check_monotonic,
    check_registers,
    check_sets,
)
from sim.history import Cell, History, Op

SET, COUNTER, LWW, MV = (Cell("k", "", t) for t in ("set", "counter", "lww", "mv"))
A, B, C = "a@1", "b@1", "c@1"


def op(i: int, kind: str, cell: Cell, actor: str = A, **fields: object) -> Op:
    return Op(i, actor.partition("@")[0], i * 10, kind, cell, actor, **fields)  # type: ignore[arg-type]


def test_convergence_names_the_groups_that_differ() -> None:
    assert check_convergence({"a": "d1", "b": "d1"}) == []
    (v,) = check_convergence({"a": "d1", "b": "d2", "c": "d1"})
    assert v.checker == "convergence" and "a c" in v.detail and "b" in v.detail


def test_durability_catches_a_lost_write_and_excuses_a_wiped_only_copy() -> None:
    history = History([op(1, "add", SET, value="x", dot=(A, 1))], unseen={1: ["b"]})
    (v,) = check_durability(history)
    assert "#1" in v.detail and "missing on b" in v.detail
    history.at_risk[1] = "wipe a"
    assert check_durability(history) == []


def test_set_full_catches_a_lost_add_and_a_resurrected_element() -> None:
    add_x = op(1, "add", SET, value="x", dot=(A, 1))
    add_y = op(2, "add", SET, B, value="y", dot=(B, 1))
    rm_y = op(3, "rm", SET, value="y", seen=frozenset({(B, 1)}))
    history = History([add_x, add_y, rm_y])
    assert check_sets(history, {"a": {SET: frozenset({"x"})}}) == []
    lost, resurrected = check_sets(history, {"a": {SET: frozenset({"y"})}})
    assert "lost #1" in lost.detail
    assert "holds 'y'" in resurrected.detail and "#3" in resurrected.detail
    (phantom,) = check_sets(history, {"a": {SET: frozenset({"x", "never"})}})
    assert "never added" in phantom.detail


def test_counter_lets_increments_lost_to_amnesia_count_or_not() -> None:
    """Seed 809: a wiped node's -1 and +3 had not left it, its later +3 had, carrying
    the running total 6: the +3 lost to the wipe survives in it, the -1 does not."""
    dec = op(1, "inc", COUNTER, value=-1, dot=(A, 1), direction=1, total=1)
    inc = op(2, "inc", COUNTER, value=3, dot=(A, 2), total=3)
    later = op(3, "inc", COUNTER, value=3, dot=(A, 3), total=6)
    history = History([dec, inc, later], unseen={1: ["a"], 2: ["a"]}, at_risk={1: "w", 2: "w"})
    for value in (2, 3, 5, 6):
        assert check_counters(history, {"a": {COUNTER: value}}) == []
    (v,) = check_counters(history, {"a": {COUNTER: 7}})
    assert "expected 2..6" in v.detail and "2 lost to amnesia may count" in v.detail


def test_set_full_excuses_an_element_whose_removal_went_with_a_wiped_re_add() -> None:
    """Seed 597: b adds y; a re-adds y (which takes b's dot out) and removes it, and is
    wiped before the re-add leaves it; only the remove did. b's y is back, rightly."""
    add_b = op(1, "add", SET, B, value="y", dot=(B, 1))
    re_add = op(2, "add", SET, value="y", dot=(A, 1), seen=frozenset({(B, 1)}))
    rm = op(3, "rm", SET, value="y", seen=frozenset({(B, 1), (A, 1)}))
    history = History([add_b, re_add, rm], unseen={2: ["n"]}, at_risk={2: "wipe a"})
    assert check_sets(history, {"n": {SET: frozenset({"y"})}}) == []
    history = History([add_b, re_add, rm])  # the re-add arrived: the remove covers b's y
    (v,) = check_sets(history, {"n": {SET: frozenset({"y"})}})
    assert "holds 'y'" in v.detail


def test_set_full_a_concurrent_add_survives_a_remove_that_did_not_see_it() -> None:
    add_a = op(1, "add", SET, value="x", dot=(A, 1))
    add_b = op(2, "add", SET, B, value="x", dot=(B, 1))
    rm = op(3, "rm", SET, value="x", seen=frozenset({(A, 1)}))  # saw a's add only
    history = History([add_a, add_b, rm])
    assert check_sets(history, {"n": {SET: frozenset({"x"})}}) == []
    (v,) = check_sets(history, {"n": {}})
    assert "lost #2" in v.detail


def test_counter_catches_a_merge_that_double_counts_and_one_that_loses_a_reset() -> None:
    inc1 = op(1, "inc", COUNTER, value=3, dot=(A, 1), total=3)
    inc2 = op(2, "inc", COUNTER, B, value=-2, dot=(B, 1), direction=1, total=2)
    reset = op(3, "del", COUNTER, B, seen_totals=((("", 0, A), 3),))  # saw inc1 only
    inc3 = op(4, "inc", COUNTER, value=5, dot=(A, 2), total=8)
    history = History([inc1, inc2, reset, inc3])
    assert check_counters(history, {"a": {COUNTER: 3}}) == []  # -2 + 5
    (double,) = check_counters(history, {"a": {COUNTER: 8}})  # an increment merged twice
    assert "value 8, expected 3" in double.detail
    (no_reset,) = check_counters(history, {"a": {COUNTER: 6}})  # the reset was dropped
    assert (
        "value 6, expected 3" in no_reset.detail and "1 cancelled by 1 removes" in no_reset.detail
    )


def test_registers_catch_a_causally_overwritten_value_and_a_wrong_winner() -> None:
    first = op(1, "set", LWW, value="old", dot=(A, 1), ts=(100, 0))
    later = op(2, "set", LWW, B, value="new", dot=(B, 1), ts=(50, 0), seen=frozenset({(A, 1)}))
    history = History([first, later])
    # A causally later write wins even with a smaller timestamp (a slow clock).
    assert check_registers(history, {"a": {LWW: "new"}}) == []
    (v,) = check_registers(history, {"a": {LWW: "old"}})
    assert "replaced or removed by a causally later operation: #1 by #2" in v.detail
    concurrent = History([first, op(2, "set", LWW, B, value="b", dot=(B, 1), ts=(50, 0))])
    assert check_registers(concurrent, {"a": {LWW: "old"}}) == []
    (wrong,) = check_registers(concurrent, {"a": {LWW: "b"}})
    assert "expected 'old'" in wrong.detail


def test_registers_mv_keeps_exactly_the_concurrent_writes() -> None:
    w1 = op(1, "mv", MV, value="p", dot=(A, 1))
    w2 = op(2, "mv", MV, B, value="q", dot=(B, 1))
    history = History([w1, w2])
    assert check_registers(history, {"a": {MV: frozenset({"p", "q"})}}) == []
    (v,) = check_registers(history, {"a": {MV: frozenset({"p"})}})
    assert "expected frozenset" in v.detail


def test_registers_a_removed_key_must_read_empty() -> None:
    w = op(1, "set", LWW, value="v", dot=(A, 1), ts=(1, 0))
    gone = op(2, "del", Cell("k", "", "lww"), B, seen=frozenset({(A, 1)}))
    history = History([w, gone])
    assert check_registers(history, {"a": {}}) == []
    (v,) = check_registers(history, {"a": {LWW: "v"}})
    assert "expected None" in v.detail


def test_registers_excuse_a_value_whose_removal_went_with_a_wiped_store() -> None:
    """Seed 669 (sim/scenarios/lost-remove-then-remove-again.scenario): b removes the
    key twice and is wiped before either leaves it. The second removal took out
    nothing (the first had), yet its ``seen`` holds the write's dot: it must not count
    as covering a write that only the lost first removal took out."""
    w = op(1, "set", LWW, value="v", dot=(A, 1), ts=(1, 0))
    first = op(2, "del", LWW, B, seen=frozenset({(A, 1)}))
    again = op(3, "del", LWW, B, seen=frozenset({(A, 1)}))
    history = History([w, first, again], unseen={2: ["n"]}, at_risk={2: "wipe b", 3: "wipe b"})
    assert check_registers(history, {"n": {LWW: "v"}}) == []
    history = History([w, first, again])  # the first removal arrived: the key is empty
    (v,) = check_registers(history, {"n": {LWW: "v"}})
    assert "expected None" in v.detail


def test_registers_excuse_a_value_whose_overwrite_went_with_a_wiped_store() -> None:
    """Seed 30317 (sim/scenarios/lost-overwrite-then-remove.scenario): b overwrites
    a's value, then removes the key; the hub refuses the overwrite (its timestamp is
    too far ahead) and takes the removal, and b is wiped. The removal's ``seen`` holds
    a's dot, but b held only its own write then, so it took out only that: a's value
    stays, and beats a write concurrent with it that ranks lower (c's, on a slow
    clock). A write c makes after seeing a's value still replaces it."""
    saw_a, saw_b = frozenset({(A, 1)}), frozenset({(B, 1)})
    w = op(1, "set", LWW, value="a.1", dot=(A, 1), ts=(23_781, 0))
    overwrite = op(2, "set", LWW, B, value="b.2", dot=(B, 1), ts=(166_096, 0), seen=saw_a)
    remove = op(3, "del", LWW, B, seen=frozenset({(A, 1), (B, 1)}))
    slow = op(4, "set", LWW, C, value="c.4", dot=(C, 1), ts=(9_799, 2), seen=saw_b)
    unseen, at_risk = {2: ["n"]}, {2: "wipe b"}
    history = History([w, overwrite, remove, slow], at_risk, unseen)
    assert check_registers(history, {"n": {LWW: "a.1"}}) == []
    (v,) = check_registers(history, {"n": {LWW: "c.4"}})
    assert "expected 'a.1'" in v.detail
    history = History([w, overwrite, remove, slow])  # the overwrite arrived: a's value went
    (v,) = check_registers(history, {"n": {LWW: "a.1"}})
    assert "expected 'c.4'" in v.detail and "#1 by #2" in v.detail
    saw = op(4, "set", LWW, C, value="c.4", dot=(C, 1), ts=(9_799, 2), seen=saw_a)
    history = History([w, overwrite, remove, saw], at_risk, unseen)
    assert check_registers(history, {"n": {LWW: "c.4"}}) == []
    mv_w = op(1, "mv", MV, value="p", dot=(A, 1))
    mv_over = op(2, "mv", MV, B, value="q", dot=(B, 1), seen=saw_a)
    mv_del = op(3, "del", MV, B, seen=frozenset({(A, 1), (B, 1)}))
    history = History([mv_w, mv_over, mv_del], at_risk, unseen)
    assert check_registers(history, {"n": {MV: frozenset({"p"})}}) == []


def test_a_counter_removal_that_took_out_nothing_cancels_nothing() -> None:
    """Seed 9598 under rollback-hub: b removes the counter twice and is wiped before
    the first removal leaves it. The second saw the same totals, but the first had
    reset the counter there, so it removed nothing: a's increment may count."""
    inc = op(1, "inc", COUNTER, value=4, dot=(A, 1), total=4)
    first = op(2, "del", COUNTER, B, seen_totals=((("", 0, A), 4),))
    again = op(3, "del", COUNTER, B, seen_totals=((("", 0, A), 4),))
    history = History([inc, first, again], unseen={2: ["n"]}, at_risk={2: "wipe b"})
    for value in (0, 4):
        assert check_counters(history, {"n": {COUNTER: value}}) == []
    more = op(3, "del", COUNTER, B, seen_totals=((("", 0, A), 4), (("", 0, B), 1)))
    history = History([inc, first, more], unseen={2: ["n"]}, at_risk={2: "wipe b"})
    (v,) = check_counters(history, {"n": {COUNTER: 4}})  # it saw more: it reset again
    assert "expected 0" in v.detail


def test_monotonic_reads_catch_a_replica_that_forgot_what_it_held() -> None:
    seen = [
        Observation(10, "e1", 0, {"k:3": {A: 2}}),
        Observation(20, "e1", 0, {"k:3": {A: 3, B: 1}}),
        Observation(30, "e1", 0, {"k:3": {A: 1, B: 1}}),  # went backwards: a broken store
    ]
    (v,) = check_monotonic(seen)
    assert "held 3 events of a@1" in v.detail and "only 1 at 30 ms" in v.detail
    wiped = [*seen[:2], Observation(30, "e1", 1, {})]  # a new incarnation starts over
    assert check_monotonic(wiped) == []
    held = Observation(20, "e1", 0, seen[1].progress, until=25)  # one reading, seen twice
    (v,) = check_monotonic([held, seen[2]])
    assert "held 3 events of a@1 on k:3 at 25 ms, only 1 at 30 ms" in v.detail


def test_a_map_removal_covers_every_field_it_saw() -> None:
    field = Cell("m", "n", "counter")
    inc = op(1, "inc", field, value=4, dot=(A, 1), total=4)
    gone = op(2, "del", Cell("m", "", "map"), B, seen_totals=((("n", 0, A), 4),))
    history = History([inc, gone])
    assert check_counters(history, {"a": {}}) == []
    (v,) = check_counters(history, {"a": {field: 4}})
    assert "expected 0" in v.detail
