"""The write and receive paths' shortcuts give exactly what the long way gives.

Coalesced deltas, intervals sent with their log entry's encoding, received
payloads kept as log entries, received entries stored from slices of the
payload, payloads decoded where they lie in their message, the lazily
maintained digest tree (and the hashes it computes from copies and storage keys
handed in), decoded dots and timestamps built without their named tuples'
``__new__``, the log skipped while no peer is tracked, and the encoder's
one-actor head and packed varints.
"""

# Each mutator lambda runs inside ``apply``/``update``, before the loop variable moves on.
# ruff: noqa: B023

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync import GCounter, Keyspace, LWWRegister, PNCounter, Timestamp, crdt_types
from sync._causal import Dot
from sync._codec import Writer
from sync._crdt import _collect_actors, decode, encode, encode_general, sole_actor
from sync._digest import HOLD_AT_MOST, DigestTree, fingerprint, position
from sync._errors import CodecError
from sync._kernel import DotKernel
from sync._keyspace import Key, _actors, decode_with_encodings, storage_key
from sync._memnet import introduce
from sync._messages import Deltas, decode_message, encode_message
from sync._propagation import DeltaLog
from sync._replica import Replica, decode_log_record
from sync._storage import MemoryStorage

from crdt_histories import histories


def clock() -> int:
    return 1_000


def replica(node: str, epoch: int) -> Replica:
    r = Replica.open(MemoryStorage(), node, clock, lambda: epoch)
    r.ready()
    return r


def linked() -> tuple[Replica, Replica]:
    """Two replicas that have exchanged Hellos."""
    a, b = replica("a", 1), replica("b", 2)
    introduce(a, "ab", b, "ba", rounds=3)
    return a, b


def deltas_sent(a: Replica) -> list[tuple[Deltas, bytes]]:
    """The Deltas messages ``a`` sends now, decoded and as sent."""
    found = [(decode_message(raw), raw) for _, raw in a.ready().messages]
    return [(m, raw) for m, raw in found if isinstance(m, Deltas)]


def with_another_peer(b: Replica) -> None:
    """Introduce ``b`` to a third replica, so b keeps what it receives in its log."""
    introduce(b, "bc", replica("c", 3), "cb")


def test_deltas_of_one_key_in_one_commit_coalesce_into_their_join() -> None:
    a, _ = linked()
    expected = Keyspace()
    for n in (1, 2, 3):
        expected.merge(a.update("c", PNCounter, lambda c: c.increment(a.actor, n)))
    ready = a.ready()
    assert len(ready.batch.log_append) == 1  # one entry for the whole commit
    _, payload = decode_log_record(ready.batch.log_append[0][1])
    assert Keyspace.decode(payload) == expected
    assert Keyspace.decode(payload).get("c", PNCounter).value() == 6  # type: ignore[union-attr]


def test_an_interval_of_one_entry_is_sent_with_the_entry_encoding() -> None:
    a, _ = linked()
    a.update("x", GCounter, lambda c: c.increment(a.actor, 1))
    a.update("y", LWWRegister, lambda g: g.set(a.actor, "v", a.hlc.now()))
    ((sent, _),) = deltas_sent(a)
    entry = a.log.entries[sent.start]
    assert sent.payload == entry.encoded == entry.keyspace().encode()


def test_an_interval_over_many_entries_joins_them_without_changing_the_log() -> None:
    log = DeltaLog()
    before = []
    for n in range(3):  # the same key in every entry, plus one key of its own
        d = Keyspace()
        d.merge(Keyspace().apply("k", GCounter, lambda c: c.increment(f"w{n}@1", n + 1)))
        d.merge(Keyspace().apply(f"own{n}", GCounter, lambda c: c.increment("w@1", 1)))
        log.append(d, None, len(d.encode()), d.encode())
        before.append(d.encode())
    log.track("p", 1)
    interval = log.next_interval("p", 1 << 20, lambda path: True, 0)
    assert interval is not None and (interval.start, interval.end) == (1, 4)
    joined = interval.delta.get("k", GCounter)
    assert joined is not None and joined.value() == 1 + 2 + 3
    assert [log.entries[s].keyspace().encode() for s in (1, 2, 3)] == before
    assert interval.payload() == interval.delta.encode()


def test_a_received_delta_of_new_keys_is_logged_as_received() -> None:
    a, b = linked()
    with_another_peer(b)
    for i in range(20):
        a.update(f"k/{i}", PNCounter, lambda x: x.increment(a.actor, 1))
    ((sent, raw),) = deltas_sent(a)
    b.receive("ba", raw)
    b.ready()
    entry = b.log.entries[b.log.next_seq - 1]
    assert entry.origin == a.actor
    assert entry.encoded == sent.payload == entry.keyspace().encode()


def test_two_frames_applied_before_one_commit_are_logged_each_as_received() -> None:
    a, b = linked()
    with_another_peer(b)
    frames = []
    for frame in range(2):
        for i in range(10):
            a.update(f"k/{frame}/{i}", PNCounter, lambda x: x.increment(a.actor, 1))
        frames += deltas_sent(a)
    first = b.log.next_seq
    for _, raw in frames:  # both merged before b's next ready(): one commit for both
        b.receive("ba", raw)
    batch = b.ready().batch
    entries = [b.log.entries[seq] for seq in range(first, b.log.next_seq)]
    assert [e.encoded for e in entries] == [sent.payload for sent, _ in frames]
    assert [seq for seq, _ in batch.log_append] == [e.seq for e in entries]
    assert all(e.origin == a.actor and e.encoded == e.keyspace().encode() for e in entries)


def test_a_delta_only_its_sender_tracks_is_taken_into_the_state_and_logged_as_bytes() -> None:
    a, b = linked()  # b's log tracks a alone, which is never sent its own deltas back
    b.update("old", PNCounter, lambda x: x.increment(b.actor, 5))
    b.ready()
    a.update("old", PNCounter, lambda x: x.increment(a.actor, 1))
    frames = deltas_sent(a)  # touches a key b holds: its novel part, joined as before
    for i in range(3):
        a.update(f"new/{i}", LWWRegister, lambda g: g.set(a.actor, i, a.hlc.now()))
    frames += deltas_sent(a)  # keys all new to b: taken as decoded
    first = b.log.next_seq
    for _, raw in frames:  # both before b's next ready(): one commit
        b.receive("ba", raw)
    batch = b.ready().batch
    joined, taken = (b.log.entries[seq] for seq in range(first, b.log.next_seq))
    assert [seq for seq, _ in batch.log_append] == [joined.seq, taken.seq]  # in arrival order
    assert joined.delta is not None and taken.delta is None
    assert taken.encoded == frames[1][0].payload
    assert b.keyspace.value("new/") == {(f"new/{i}", "LWWRegister"): i for i in range(3)}
    b.update("new/0", LWWRegister, lambda g: g.set(b.actor, "changed", b.hlc.now()))
    b.ready()
    # The log's copy is the payload, whatever the state did since; a peer that turns up
    # and is sent the log gets it decoded from there.
    assert taken.keyspace() == Keyspace.decode(frames[1][0].payload)
    c = replica("c", 3)
    introduce(b, "bc", c, "cb", rounds=4)
    assert c.keyspace.digest() == b.keyspace.digest()


def test_an_empty_received_payload_logs_nothing() -> None:
    _, b = linked()
    before = b.log.next_seq
    b.receive("ba", encode_message(Deltas(1, 1, Keyspace().encode())))
    assert not b.ready().batch.log_append and b.log.next_seq == before


def test_a_received_delta_touching_known_keys_is_logged_as_its_novel_part() -> None:
    a, b = linked()
    with_another_peer(b)
    b.update("k", PNCounter, lambda x: x.increment(b.actor, 5))
    b.ready()
    a.update("k", PNCounter, lambda x: x.increment(a.actor, 1))
    ((_, raw),) = deltas_sent(a)
    b.receive("ba", raw)
    b.ready()
    entry = b.log.entries[b.log.next_seq - 1]
    assert entry.origin == a.actor and entry.encoded == entry.keyspace().encode()
    assert b.get("k", PNCounter).value() == 6  # type: ignore[union-attr]


def test_the_lazy_digest_tree_equals_one_built_from_the_final_state() -> None:
    rng = random.Random(4)
    lazy, final = DigestTree(), {}
    keys: list[Key] = [(f"p/{i}", 1 + i % 3) for i in range(300)]
    for step in range(2_000):
        key = rng.choice(keys)
        encoded = None if rng.random() < 0.2 else rng.randbytes(rng.randint(1, 20))
        lazy.set(key, encoded)
        final[key] = encoded
        if step % 450 == 0:
            lazy.root()  # hash in what is pending, in the middle of the run
    fresh = DigestTree()
    for key, encoded in sorted(final.items()):
        fresh.set(key, encoded)
    assert lazy.root() == fresh.root() and len(lazy) == len(fresh)
    assert lazy.items(0, 0) == fresh.items(0, 0)
    assert all(lazy.node(3, n) == fresh.node(3, n) for n in range(64))
    loaded = DigestTree()
    loaded.load((k, storage_key(k), e) for k, e in sorted(final.items()) if e is not None)
    # every level, node for node, with no empty node left behind by removals
    assert (lazy.fps, lazy.counts, lazy.buckets) == (loaded.fps, loaded.counts, loaded.buckets)


def test_a_tree_that_encodes_large_values_again_equals_one_that_held_them() -> None:
    """Encodings of HOLD_AT_MOST bytes or more are not held until the flush but taken
    from the state then: the same fingerprints, for keys set, replaced by small or
    large encodings, removed, and set again between flushes."""
    rng = random.Random(5)
    state: dict[Key, bytes | None] = {}
    held, again = DigestTree(), DigestTree(state.get)
    keys: list[Key] = [(f"p/{i}", 1) for i in range(200)]
    for step in range(3_000):
        key = rng.choice(keys)
        size = rng.choice([0, 5, HOLD_AT_MOST - 1, HOLD_AT_MOST, 3 * HOLD_AT_MOST])
        encoded = None if size == 0 else rng.randbytes(size)
        state[key] = encoded
        held.set(key, encoded)
        again.set(key, encoded)
        if step % 700 == 0:
            assert again.root() == held.root()  # a flush in the middle of the run
    assert again._pending_bytes < held._pending_bytes  # what it holds until the flush
    assert again.root() == held.root() and len(again) == len(held)
    assert again.buckets == held.buckets


def test_updates_made_while_no_peer_is_tracked_are_skipped_then_caught_up() -> None:
    a, b = replica("a", 1), replica("b", 2)
    for i in range(10):
        a.update(f"k/{i}", PNCounter, lambda x: x.increment(a.actor, 1))
    ready = a.ready()
    assert not ready.batch.log_append and len(ready.batch.entries) == 10
    assert a.log.complete_from == a.log.next_seq  # a peer arriving now needs a catch-up
    introduce(a, "ab", b, "ba", rounds=30)
    assert a.keyspace.digest() == b.keyspace.digest()
    assert b.get("k/9", PNCounter).value() == 1  # type: ignore[union-attr]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_entry_encodings_cut_from_a_payload_are_the_entries_own(data: st.DataObject) -> None:
    """A single-actor payload's entries are stored from slices of it: byte for byte
    what encoding each value gives. With more actors, nothing is cut."""
    cls = data.draw(st.sampled_from(crdt_types()))
    history = data.draw(histories(cls, max_steps=12))
    values = [v for v in [*history.deltas, *history.snapshots] if not v.is_bottom()]
    by_actors: dict[frozenset[str], Keyspace] = {}
    for n, value in enumerate(values):
        actors = frozenset(_actors(value))
        by_actors.setdefault(actors, Keyspace()).entries[(f"k/{n}", cls.TYPE_TAG)] = value
    for actors, ks in by_actors.items():
        decoded, encodings = decode_with_encodings(ks.encode())
        assert decoded == ks
        if len(actors) == 1:
            assert encodings == {key: v.encode() for key, v in ks.entries.items()}
        else:
            assert encodings is None


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_a_payload_decoded_where_it_lies_in_its_message_is_the_payload_copied_out(
    data: st.DataObject,
) -> None:
    """A received payload is decoded inside its message (``Span``), not copied out
    first: the values, the entries' encodings and each refusal (its offsets too) are
    what decoding the payload alone gives, and nothing past its end is read."""
    cls = data.draw(st.sampled_from(crdt_types()))
    history = data.draw(histories(cls, max_steps=8))
    ks = Keyspace()
    for n, value in enumerate(v for v in history.snapshots if not v.is_bottom()):
        ks.entries[(f"k/{n}", cls.TYPE_TAG)] = value
    payload = ks.encode()
    before, after = data.draw(st.binary(max_size=8)), data.draw(st.binary(min_size=1, max_size=8))
    message = before + payload + after
    for size in (len(payload), *data.draw(st.lists(st.integers(0, len(payload) - 1)))):
        alone = _decoded_or_refusal(payload[:size], 0, -1)
        assert _decoded_or_refusal(message, len(before), len(before) + size) == alone


def _decoded_or_refusal(raw: bytes, first: int, last: int) -> object:
    try:
        ks, encodings = decode_with_encodings(raw, first=first, last=last)
    except CodecError as exc:
        return str(exc)
    return ks.encode(), encodings


def test_a_received_delta_of_new_keys_is_stored_as_encoding_its_values_gives() -> None:
    a, b = linked()
    b.update("mine", PNCounter, lambda x: x.increment(b.actor, 1))
    b.ready()
    for i in range(10):
        a.update(f"c/{i}", PNCounter, lambda x: x.increment(a.actor, i + 1))
        a.update(f"r/{i}", LWWRegister, lambda g: g.set(a.actor, {"i": i}, a.hlc.now()))
    # Values of 1 KiB and more are cut out another way (through a view): the same bytes.
    for size in (1_000, 1_024, 20_000):
        a.update(f"b/{size}", LWWRegister, lambda g: g.set(a.actor, bytes(size), a.hlc.now()))
    ((_, raw),) = deltas_sent(a)
    b.receive("ba", raw)
    b.update("c/3", PNCounter, lambda x: x.increment(b.actor, 1))  # a later local change
    stored = b.ready().batch.entries
    assert len(stored) == 23
    for key, child in b.keyspace.entries.items():
        if key[0] != "mine":
            assert stored[storage_key(key)] == child.encode()
    assert b.get("c/3", PNCounter).value() == 5  # type: ignore[union-attr]


def test_storage_keys_and_tree_hashes_are_what_the_protocol_defines() -> None:
    """Peers must agree on them: computed here the plain way, from their definitions."""
    for key in [("a", 0), ("c/1", 2), ("é/x", 3), ("z" * 500, 255)]:
        stored = key[0].encode("utf-8") + b"\x00" + bytes([key[1]])
        assert storage_key(key) == stored
        assert position(key) == int.from_bytes(hashlib.sha256(stored).digest()[:8], "big")
        for encoded in [b"", b"\x01\x02", bytes(range(200))]:
            plain = hashlib.blake2b(stored + encoded, digest_size=8).digest()
            assert fingerprint(key, encoded) == int.from_bytes(plain, "big")
    for tag in (-1, 256):
        with pytest.raises(ValueError):
            storage_key(("a", tag))
    handed, computed = DigestTree(), DigestTree()
    for i in range(100):
        key = (f"k/{i % 70}", 1 + i % 3)
        latest = None if i % 9 == 0 else bytes([i])
        handed.set(key, latest, storage_key(key))
        computed.set(key, latest)
    assert (handed.root(), handed.buckets) == (computed.root(), computed.buckets)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_decoded_dots_and_timestamps_are_their_named_tuples(data: st.DataObject) -> None:
    cls = data.draw(st.sampled_from(crdt_types()))
    history = data.draw(histories(cls, max_steps=12))
    for value in [*history.deltas, *history.snapshots]:
        back = decode(value.encode())
        assert back.encode() == value.encode()
        dots = [*back._store_dots(), *back.ctx.cloud]
        assert all(type(d) is Dot and d == Dot(d.actor, d.counter) for d in dots)
        if isinstance(back, DotKernel):
            assert set(back.ds) == set(value._store_dots())
        if isinstance(back, LWWRegister) and isinstance(value, LWWRegister):
            assert all(type(ts) is Timestamp for ts in back.timestamps())
            assert back.winner() == value.winner()
        # What a receiver witnesses: the greatest timestamp, found without iterators.
        assert back.newest_timestamp() == max(back.timestamps(), default=None)
        ks = Keyspace()
        ks.entries[("k", cls.TYPE_TAG)] = back
        assert ks.newest_timestamp() == max(ks.timestamps(), default=None)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_one_actor_encodings_are_what_the_general_encoder_writes(data: st.DataObject) -> None:
    """A state naming one actor is encoded with a cached head and index: the same bytes
    as collecting and sorting its actors, for every type."""
    cls = data.draw(st.sampled_from(crdt_types()))
    history = data.draw(histories(cls, max_steps=12))
    for value in [*history.deltas, *history.snapshots, *history.replicas]:
        sole = sole_actor(value)
        if sole is not None:
            assert _collect_actors(value) == [sole]
        else:  # several actors, none, or one with dots out of order
            assert len(_collect_actors(value)) != 1 or value.ctx.cloud
        assert encode(value) == encode_general(value)


def _plain_uvarint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


@given(st.integers(0, 2**64 - 1) | st.integers(0, 2**21))
def test_varints_are_the_plain_loops_bytes(n: int) -> None:
    w = Writer()
    w.uvarint(n)
    assert w.getvalue() == _plain_uvarint(n)


def test_one_actor_states_with_long_varints_encode_as_the_general_encoder() -> None:
    """Counters and timestamps past one varint byte, and actors past index 0x7F."""
    counter, register = PNCounter(), LWWRegister()
    for i in range(300):
        counter.increment("a", 1_000)
        counter.decrement("a", 3)
        register.set("a", -i, Timestamp(1_700_000_000_000 + i, i))
    for value in (counter, register):
        assert sole_actor(value) == "a"
        assert encode(value) == encode_general(value)
        assert decode(encode(value)) == value
    many = PNCounter()
    for i in range(200):
        many.increment(f"a{i:03}", i + 1)
    assert sole_actor(many) is None
    assert decode(encode(many)) == many
