"""Version vectors and the compact dot context."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sync import Dot, DotContext, VersionVector

dots = st.builds(Dot, st.sampled_from(["a", "b", "c"]), st.integers(1, 12))


@given(st.lists(dots, max_size=40), st.lists(dots, max_size=40))
def test_context_is_the_set_of_its_dots_in_canonical_form(xs: list[Dot], ys: list[Dot]) -> None:
    one = DotContext()
    for d in xs:
        one.add(d)
    assert set(one.dots()) == set(xs)
    assert one.size() == len(set(xs))
    assert one == DotContext.of(reversed(xs))  # same set, same representation
    for actor, n in one.vv.items():
        assert all(Dot(actor, i) in one for i in range(1, n + 1))
    assert all(d.counter > one.vv[d.actor] + 1 for d in one.cloud)  # compact
    other = DotContext.of(ys)
    one.merge(other)
    assert set(one.dots()) == set(xs) | set(ys)
    assert one == DotContext.of(xs + ys)


def test_compaction_folds_gaps_once_they_fill() -> None:
    ctx = DotContext.of([Dot("a", 3), Dot("a", 2), Dot("b", 2)])
    assert ctx.vv == VersionVector() and len(ctx.cloud) == 3
    ctx.add(Dot("a", 1))
    assert ctx.vv == VersionVector({"a": 3}) and ctx.cloud == {Dot("b", 2)}
    assert ctx.next_dot("a") == Dot("a", 4)


def test_version_vector_order() -> None:
    x, y = VersionVector({"a": 2}), VersionVector({"a": 1, "b": 1})
    assert x.concurrent(y) and not x <= y
    x.merge(y)
    assert x == VersionVector({"a": 2, "b": 1}) and y < x
    assert repr(x) == "VersionVector({'a': 2, 'b': 1})"
