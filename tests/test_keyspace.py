"""The replica's keyspace: per-key CRDTs, divisible by prefix, canonical as a whole."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync import AWSet, CodecError, GCounter, Keyspace, LWWRegister, PNCounter, Timestamp
from sync._codec import Writer
from sync._crdt import encode_body
from sync._keyspace import splice
from sync._messages import Deltas, decode_message, encode_deltas, encode_deltas_of_pieces

from crdt_histories import ACTORS, OPS

PATHS = ("a", "a/b", "a/c", "b", "local/x")
TYPES = sorted(OPS, key=lambda c: c.TYPE_TAG)


@st.composite
def keyspace_history(draw: st.DrawFn) -> tuple[list[Keyspace], list[Keyspace]]:
    replicas = [Keyspace() for _ in ACTORS]
    deltas: list[Keyspace] = []
    for _ in range(draw(st.integers(0, 30))):
        i = draw(st.integers(0, len(ACTORS) - 1))
        path = draw(st.sampled_from(PATHS))
        cls = draw(st.sampled_from(TYPES))
        choice = draw(st.integers(0, 5))
        if choice == 0:
            replicas[i].merge(replicas[draw(st.integers(0, len(ACTORS) - 1))].copy())
        elif choice == 1:
            deltas.append(replicas[i].remove(path, cls))
        else:
            op = draw(st.sampled_from(OPS[cls]))
            x = draw(st.integers(0, 11))
            mutate = lambda c, op=op, x=x, a=ACTORS[i]: op(c, a, x)  # noqa: E731
            deltas.append(replicas[i].apply(path, cls, mutate))
    return replicas, deltas


def join(*spaces: Keyspace) -> Keyspace:
    out = Keyspace()
    for s in spaces:
        out.merge(s.copy())
    return out


@given(keyspace_history(), st.integers(0, 2**32))
def test_keyspace_laws(history: tuple[list[Keyspace], list[Keyspace]], seed: int) -> None:
    replicas, deltas = history
    a, b, c = replicas
    assert join(a, b) == join(b, a)
    assert join(join(a, b), c) == join(a, join(b, c))
    assert join(a, a) == a
    shuffled = deltas + deltas[: len(deltas) // 2]
    random.Random(seed).shuffle(shuffled)
    assert join(*shuffled) == join(*replicas)
    for space in [*replicas, *deltas]:
        raw = space.encode()
        assert Keyspace.decode(raw).encode() == raw
    novel = b.novel_part(a)
    assert join(a, novel) == join(a, b)


@given(keyspace_history())
def test_prefix_digests_and_filtering_agree(history: tuple[list[Keyspace], list[Keyspace]]) -> None:
    replicas, _ = history
    for prefix in ("", "a", "a/", "local/"):

        def under(path: str, prefix: str = prefix) -> bool:
            # local/ keys never leave their node: a digest counts them only if asked to
            local_ok = not path.startswith("local/") or prefix.startswith("local")
            return path.startswith(prefix) and local_ok

        x, y = (r.filtered(under) for r in replicas[:2])
        same = x == y
        assert same == (replicas[0].digest(prefix) == replicas[1].digest(prefix))


@given(keyspace_history(), st.integers(0, 2**32))
def test_a_splice_of_log_deltas_is_the_encoding_of_their_join(
    history: tuple[list[Keyspace], list[Keyspace]], seed: int
) -> None:
    """Spliced from the parts' encodings, byte for byte what encoding their join
    gives; None when the parts share a key or differ in actor tables."""
    _, deltas = history
    parts = [d for d in deltas if d.entries]
    random.Random(seed).shuffle(parts)
    parts = parts[: random.Random(seed).randint(1, 6)]
    if not parts:
        return
    for delta in parts:
        raw, offsets = delta.encode_indexed()
        assert raw == delta.encode() and offsets.starts[-1] == len(raw)
    indexed = [(d, *d.encode_indexed()) for d in parts]
    spliced = splice(indexed)
    joined = join(*parts)
    keys = [key for d in parts for key in d.entries]
    tables = {raw[: offsets.table_end] for _, raw, offsets in indexed}
    if len(set(keys)) == len(keys) and len(tables) == 1:
        assert spliced is not None and b"".join(spliced) == joined.encode()
    else:
        assert spliced is None


@pytest.mark.parametrize("value_bytes", [0, 1023, 1024, 16 * 1024])
def test_an_edges_backlog_of_interleaved_keys_is_spliced(value_bytes: int) -> None:
    """One actor's entries on distinct keys whose orders interleave: the common case;
    with values small and large (cut through a view from 1 KiB on)."""
    parts = []
    for first in range(3):
        delta = Keyspace()
        for i in range(first, 30, 3):
            delta.merge(Keyspace().apply(f"c/{i}", GCounter, lambda c: c.increment("e1", 2)))
            content = i.to_bytes(4, "big") * (value_bytes // 4) if value_bytes else i
            value = lambda g, v=content: g.set("e1", v, Timestamp(7, 0))  # noqa: E731
            delta.merge(Keyspace().apply(f"r/{i}", LWWRegister, value))
        parts.append((delta, *delta.encode_indexed()))
    spliced = splice(parts)
    assert spliced is not None
    assert b"".join(spliced) == join(*(p[0] for p in parts)).encode()
    message = encode_deltas_of_pieces(3, 9, spliced)
    assert message == encode_deltas(3, 9, b"".join(spliced))
    assert decode_message(message) == Deltas(3, 9, join(*(p[0] for p in parts)).encode())


def test_removed_key_keeps_a_tombstone_so_stale_copies_cannot_return() -> None:
    a, b = Keyspace(), Keyspace()
    b.merge(a.apply("alerts", AWSet, lambda s: s.add("n1", "pump")))
    stale = b.copy()
    a.remove("alerts", AWSet)
    a.merge(stale)
    assert a.get("alerts", AWSet) is None and a.keys() == []
    assert ("alerts", AWSet.TYPE_TAG) in a.entries  # the tombstone


def test_same_path_two_types_are_two_keys() -> None:
    k = Keyspace()
    k.apply("x", PNCounter, lambda c: c.increment("n", 2))
    k.apply("x", LWWRegister, lambda r: r.set("n", "hi", Timestamp(1)))
    assert [c.value() for c in k.types_at("x")] == [2, "hi"]
    assert k.value() == {("x", "PNCounter"): 2, ("x", "LWWRegister"): "hi"}


def test_actor_progress_counts_events_over_all_keys() -> None:
    k = Keyspace()
    for path in ("p", "q", "q"):
        k.apply(path, GCounter, lambda c: c.increment("n@1", 1))
    assert k.actor_progress() == {"n@1": 3}


@pytest.mark.parametrize("path", ["", "x" * 1025, "bad\x00path"])
def test_bad_paths_are_refused(path: str) -> None:
    with pytest.raises(ValueError):
        Keyspace().apply(path, GCounter, lambda c: c.increment("n", 1))


def test_malformed_keyspace_bytes_are_refused() -> None:
    k = Keyspace()
    k.apply("a", GCounter, lambda c: c.increment("n", 1))
    raw = k.encode()
    for cut in range(len(raw)):
        with pytest.raises(CodecError):
            Keyspace.decode(raw[:cut])
    with pytest.raises(CodecError, match="exceeds"):
        Keyspace.decode(raw, max_size=3)


def _keyspace_bytes(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A keyspace encoding of (path, tag, body) entries as given, over actor "n"."""
    w = Writer()
    w.u8(1)  # keyspace format
    w.uvarint(1)
    w.text("n")
    w.uvarint(len(entries))
    for path, tag, body in entries:
        w.text(path)
        w.u8(tag)
        w.raw(body)
    return w.getvalue()


def test_keyspace_keys_and_dot_stores_out_of_order_are_refused() -> None:
    counter = GCounter()
    counter.increment("n", 1)
    w = Writer()
    encode_body(w, {"n": 0}, counter)
    body, tag = w.getvalue(), GCounter.TYPE_TAG
    in_order = [("a", tag, body), ("a/b", tag, body), ("b", tag, body)]
    assert Keyspace.decode(_keyspace_bytes(in_order)).keys() == [
        ("a", GCounter), ("a/b", GCounter), ("b", GCounter)
    ]  # fmt: skip
    register = LWWRegister()
    register.set("n", 1, Timestamp(5, 0))
    w = Writer()
    encode_body(w, {"n": 0}, register)
    two_types = [("a", tag, body), ("a", LWWRegister.TYPE_TAG, w.getvalue())]
    assert len(Keyspace.decode(_keyspace_bytes(two_types)).entries) == 2
    for entries in (in_order[::-1], [in_order[1], in_order[0]], in_order[:1] * 2, two_types[::-1]):
        with pytest.raises(CodecError, match="keyspace keys are not strictly sorted"):
            Keyspace.decode(_keyspace_bytes(entries))

    def register_body(*dots: int) -> bytes:
        """An LWWRegister body over actor 0: context 1..3, then the dots given."""
        w = Writer()
        w.counters({"n": 0}, [("n", 3)])
        w.uvarint(0)  # no dot cloud
        w.uvarint(len(dots))
        for n in dots:
            w.uvarint(0)
            w.uvarint(n)
            w.svarint(5)  # wall_ms
            w.uvarint(n)  # logical
            w.value(n)
        return w.getvalue()

    good = Keyspace.decode(_keyspace_bytes([("r", LWWRegister.TYPE_TAG, register_body(1, 3))]))
    kept = good.entries[("r", LWWRegister.TYPE_TAG)]
    assert sorted(d.counter for d in kept._store_dots()) == [1, 3]
    for dots in ((3, 1), (2, 2)):
        raw = _keyspace_bytes([("r", LWWRegister.TYPE_TAG, register_body(*dots))])
        with pytest.raises(CodecError, match="dot store entries are not strictly sorted"):
            Keyspace.decode(raw)


def test_own_part_keeps_a_nodes_updates_and_removals_and_claims_nothing_else() -> None:
    from sync import AWSet, PNCounter
    from sync._keyspace import own_part

    s = AWSet()
    s.add("e1@1", "mine")
    s.add("e2@1", "theirs")
    s.add("e2@1", "removed")
    s.remove("removed")
    own = own_part(s, "e1")
    assert own.value() == {"mine"}
    peer = AWSet()
    peer.merge(s.copy())
    peer.merge(own)  # the part never reads as a removal of what it left out
    assert peer.value() == {"mine", "theirs"}
    c = PNCounter()
    c.increment("e1@1", 2)
    c.increment("e2@1", 5)
    assert own_part(c, "e1").value() == 2


@given(keyspace_history(), keyspace_history(), st.integers(0, 2))
def test_actor_progress_kept_up_to_date_equals_counting_afresh(
    first: tuple[list[Keyspace], list[Keyspace]],
    then: tuple[list[Keyspace], list[Keyspace]],
    counted_from: int,
) -> None:
    """Once asked for, progress is kept by the mutators; it must equal a recount."""
    space = join(*first[0])
    space.actor_progress()  # from here on the mutators keep it
    replicas, deltas = then
    for i, delta in enumerate(deltas):
        if i % 2:
            space.absorb(delta.copy())
        else:
            space.merge(delta)
    space.merge(replicas[counted_from])
    for path in PATHS:
        space.remove(path, GCounter)
        space.apply(path, PNCounter, lambda c: c.increment("z@1", 1))
    assert space.actor_progress() == space.copy().actor_progress()  # a copy counts afresh
