"""The concurrent behaviour each type's docstring promises, one scenario each."""

from __future__ import annotations

import pytest

from sync import (
    AWSet,
    ClockSkewError,
    EWFlag,
    GCounter,
    HybridLogicalClock,
    LWWRegister,
    MaxRegister,
    MinRegister,
    MVRegister,
    ORMap,
    PNCounter,
    Timestamp,
)


def test_awset_concurrent_add_and_remove_add_wins() -> None:
    a, b = AWSet(), AWSet()
    b.merge(a.add("a", "x"))
    add_again = a.add("a", "x")  # concurrent with b's remove
    remove = b.remove("x")
    a.merge(remove)
    b.merge(add_again)
    assert a == b and "x" in a and a.value() == frozenset({"x"})


def test_awset_remove_only_removes_what_it_observed() -> None:
    a, b = AWSet(), AWSet()
    unseen = b.add("b", "x")
    a.merge(a.add("a", "x"))
    removal = a.remove("x")
    b.merge(removal)
    assert "x" in b  # b's own add was never observed by the remove
    a.merge(unseen)
    assert a == b and a.elements() == ["x"]


def test_awset_rejects_aliasing_elements() -> None:
    with pytest.raises(TypeError):
        AWSet().add("a", True)
    with pytest.raises(TypeError):
        AWSet().add("a", 1.0)  # type: ignore[arg-type]


def test_ewflag_enable_wins() -> None:
    a, b = EWFlag(), EWFlag()
    b.merge(a.enable("a"))
    enable = a.enable("a")
    disable = b.disable()
    a.merge(disable)
    b.merge(enable)
    assert a.value() is True and a == b


def test_mvregister_keeps_concurrent_writes_until_one_observes_them() -> None:
    a, b = MVRegister(), MVRegister()
    da, db = a.write("a", "left"), b.write("b", "right")
    a.merge(db)
    b.merge(da)
    assert a.value() == b.value() == ("left", "right")
    b.merge(a.write("a", "resolved"))
    assert b.value() == ("resolved",)


def test_lww_concurrent_writes_order_by_timestamp_then_writer() -> None:
    a, b = LWWRegister(), LWWRegister()
    da = a.set("node-a", "from a", Timestamp(10))
    db = b.set("node-b", "from b", Timestamp(10))  # equal timestamps: writer id decides
    a.merge(db)
    b.merge(da)
    assert a.value() == b.value() == "from b"
    c = LWWRegister()
    c.merge(c.set("node-c", "late", Timestamp(11)))
    a.merge(c)
    assert a.value() == "late"


def test_lww_causally_later_write_wins_whatever_its_clock_says() -> None:
    a, b = LWWRegister(), LWWRegister()
    b.merge(a.set("a", "first", Timestamp(500)))
    b.set("b", "second", Timestamp(3))  # b saw "first"; its clock is just slow
    a.merge(b)
    assert a.value() == "second"


def test_lww_reset_does_not_swallow_a_concurrent_write() -> None:
    a, b = LWWRegister(), LWWRegister()
    b.merge(a.set("a", 1, Timestamp(5)))
    concurrent = a.set("a", 2, Timestamp(6))
    reset = b.reset()
    b.merge(concurrent)
    a.merge(reset)
    assert a == b and a.value() == 2


def test_lww_values_are_frozen_on_write() -> None:
    r = LWWRegister()
    payload = {"xs": [1, 2]}
    r.set("a", payload, Timestamp(1))
    payload["xs"].append(3)
    assert tuple(r.value()["xs"]) == (1, 2)
    with pytest.raises(ValueError):
        r.set("a", float("nan"), Timestamp(2))
    with pytest.raises(ValueError):
        r.set("a", 2**63, Timestamp(2))
    r.set("a", -0.0, Timestamp(3))
    assert r.encode() == _with_value(0.0).encode()


def _with_value(v: object) -> LWWRegister:
    r = LWWRegister()
    r.set("a", {"xs": (1, 2)}, Timestamp(1))
    r.set("a", v, Timestamp(3))
    return r


def test_hlc_is_monotonic_and_follows_witnessed_time() -> None:
    now = [1000]
    hlc = HybridLogicalClock(lambda: now[0], max_ahead_ms=200)
    t1 = hlc.now()
    now[0] = 900  # the wall clock steps back
    t2 = hlc.now()
    assert t2 > t1 and t2 == Timestamp(1000, 1)
    hlc.witness(Timestamp(1050, 4))
    assert hlc.now() == Timestamp(1050, 5)


def test_hlc_refuses_timestamps_too_far_ahead() -> None:
    hlc = HybridLogicalClock(lambda: 1000, max_ahead_ms=100)
    hlc.witness(Timestamp(1100))  # at the bound: accepted
    before = hlc.last
    with pytest.raises(ClockSkewError, match=r"101 ms ahead.*limit is 100 ms"):
        hlc.witness_all([Timestamp(1050), Timestamp(1101)])
    assert hlc.last == before  # a refused batch changes nothing


def test_lww_delta_timestamps_are_what_a_replica_witnesses() -> None:
    m = ORMap()
    delta = m.apply("k", LWWRegister, lambda r: r.set("a", 1, Timestamp(10**9)))
    hlc = HybridLogicalClock(lambda: 0, max_ahead_ms=1000)
    with pytest.raises(ClockSkewError):
        hlc.witness_all(delta.timestamps())


def test_max_and_min_registers() -> None:
    hi, lo = MaxRegister(), MinRegister()
    hi.set("a", 3)
    assert hi.set("a", 2).is_bottom()  # no change, nothing to send
    hi.set("a", 7.5)
    lo.set("a", 3)
    lo.set("a", -1)
    assert (hi.value(), lo.value()) == (7.5, -1)
    other = MaxRegister()
    other.merge(other.set("b", 9))
    hi.merge(other)
    assert hi.value() == 9


def test_max_register_int_float_tie_breaks_the_same_everywhere() -> None:
    a, b = MaxRegister(), MaxRegister()
    da, db = a.set("a", 1), b.set("b", 1.0)
    a.merge(db)
    b.merge(da)
    assert a.value() == b.value() and isinstance(a.value(), float)


def test_gcounter_refuses_decrements() -> None:
    with pytest.raises(ValueError, match="only grows"):
        GCounter().increment("a", -1)


@pytest.mark.parametrize("cls", [GCounter, PNCounter])
def test_counter_reset_cancels_exactly_what_it_observed(cls: type[GCounter]) -> None:
    a, b = cls(), cls()
    b.merge(a.increment("a", 5))
    concurrent = a.increment("a", 2)
    reset = b.reset()
    a.merge(reset)
    b.merge(concurrent)
    assert a == b and a.value() == 2
    a.merge(a.increment("a", 1))
    assert a.value() == 3


def test_pncounter_counts_down() -> None:
    c = PNCounter()
    c.increment("a", 4)
    c.decrement("b", 6)
    assert c.value() == -2


def test_ormap_key_identity_is_name_and_type() -> None:
    a, b = ORMap(), ORMap()
    da = a.apply("x", AWSet, lambda s: s.add("a", "e"))
    db = b.apply("x", PNCounter, lambda c: c.increment("b", 3))
    a.merge(db)
    b.merge(da)
    assert a == b
    assert a.value() == {("x", "AWSet"): frozenset({"e"}), ("x", "PNCounter"): 3}
    assert [(n, t.__name__) for n, t in a.keys()] == [("x", "PNCounter"), ("x", "AWSet")]


def test_ormap_removed_key_does_not_come_back_from_stale_state() -> None:
    a, b = ORMap(), ORMap()
    b.merge(a.apply("k", AWSet, lambda s: s.add("a", "e")))
    stale = b.copy()
    a.remove("k", AWSet)
    a.merge(stale)
    assert a.get("k", AWSet) is None
    b.merge(a)
    assert b.get("k", AWSet) is None and a == b


def test_ormap_update_wins_over_concurrent_remove_keeping_only_the_unseen() -> None:
    a, b = ORMap(), ORMap()
    b.merge(a.apply("k", AWSet, lambda s: s.add("a", "old")))
    b.merge(a.apply("n", PNCounter, lambda c: c.increment("a", 10)))
    d1 = b.apply("k", AWSet, lambda s: s.add("b", "new"))
    d2 = b.apply("n", PNCounter, lambda c: c.increment("b", 1))
    r1, r2 = a.remove("k", AWSet), a.remove("n", PNCounter)
    for d in (d1, d2):
        a.merge(d)
    for r in (r1, r2):
        b.merge(r)
    assert a == b
    assert a.value() == {("k", "AWSet"): frozenset({"new"}), ("n", "PNCounter"): 1}


def test_ormap_nested_maps_reset_recursively() -> None:
    m = ORMap()
    m.apply("dev", ORMap, lambda d: d.apply("hits", GCounter, lambda c: c.increment("a", 4)))
    delta = m.remove("dev", ORMap)
    assert m.get("dev", ORMap) is None
    other = ORMap()
    other.merge(delta)
    assert other.value() == {}
    m.apply("dev", ORMap, lambda d: d.apply("hits", GCounter, lambda c: c.increment("a", 1)))
    inner = m.get("dev", ORMap)
    assert inner is not None and inner.value() == {("hits", "GCounter"): 1}


def test_reprs_show_values() -> None:
    m = ORMap()
    m.apply("s", AWSet, lambda s: s.add("a", "x"))
    assert repr(m) == "ORMap({'s': AWSet(['x'])})"
    assert repr(PNCounter()) == "PNCounter(0)"


def test_a_counter_reset_that_missed_a_total_keeps_the_key_present() -> None:
    """Found by the simulator: deltas out of causal order let a reset cancel the newest
    presence dot without the total it stands for; the uncancelled total keeps the key."""
    from sync import PNCounter

    a, b = PNCounter(), PNCounter()
    b.merge(a.decrement("a", 2))
    later_total = a.decrement("a", 2)
    b.merge(a.increment("a", 0))  # a newer dot, carrying no decrement total
    a.merge(b.reset())  # b saw a total of 2, not 4
    b.merge(later_total)
    assert a == b and a.value() == -2
    assert a.is_present() and b.is_present()
