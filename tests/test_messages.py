"""Wire messages: canonical round trips, fuzzing, and how a replica refuses bad input."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync import ClockSkewError, GCounter, Keyspace, LWWRegister, Timestamp
from sync._codec import Reader, Span
from sync._errors import ProtocolError
from sync._memnet import MemoryNetwork
from sync._messages import (
    DEFAULT_MAX_MESSAGE,
    PROTOCOL_VERSION,
    Ack,
    Deltas,
    Hello,
    Message,
    Probe,
    ProbeAck,
    Sources,
    SourcesAck,
    decode_interval,
    decode_message,
    encode_message,
)
from sync._replica import Replica

U64 = 2**64 - 1

# ---- strategies -----------------------------------------------------------------------

node_ids = st.text(max_size=20)
epochs = st.integers(0, U64)
intervals = st.tuples(st.integers(1, U64), st.integers(1, U64)).map(sorted)  # 0 < start <= end
name_sets = st.frozensets(st.text(max_size=12), max_size=4).map(lambda s: tuple(sorted(s)))
counts = st.dictionaries(st.text(max_size=12), st.integers(0, U64), max_size=5)
hellos = st.builds(
    Hello,
    node_id=node_ids,
    epoch=epochs,
    progress=counts,
    knows_you=st.booleans(),
    received=counts,
    push=name_sets,
    sources=name_sets,
)
sources = st.builds(Sources, serial=st.integers(0, U64), nodes=name_sets, received=counts)
deltas = st.builds(
    lambda iv, payload, sig: Deltas(iv[0], iv[1], payload, sig),
    intervals,
    st.binary(max_size=64),
    st.binary(max_size=16),
)
acks = intervals.map(lambda iv: Ack(iv[0], iv[1]))
messages = st.one_of(
    hellos, deltas, acks, sources, st.builds(SourcesAck, st.integers(0, U64)),
    st.builds(Probe, st.integers(0, U64)), st.builds(ProbeAck, st.integers(0, U64)),
)  # fmt: skip


def try_decode(raw: bytes) -> None:
    """Decode; anything but success or ProtocolError fails the test. The replica's
    fast path for Deltas and Acks (``decode_interval``) must agree with it."""
    try:
        msg = decode_message(raw)
    except ProtocolError:
        if len(raw) > 1 and raw[1] in (2, 3):  # a Deltas or Ack, by its kind byte
            with pytest.raises(ProtocolError):
                decode_interval(raw)
        else:
            assert decode_interval(raw) is None  # left to decode_message
        return
    assert encode_message(msg) == raw  # accepted input must be canonical
    assert taken(decode_interval(raw)) == as_interval(msg)


def as_interval(msg: Message) -> tuple[int, int, bytes | None] | None:
    if isinstance(msg, Deltas):
        return msg.start, msg.end, msg.payload
    return (msg.start, msg.end, None) if isinstance(msg, Ack) else None


def taken(
    interval: tuple[int, int, Span | None] | None,
) -> tuple[int, int, bytes | None] | None:
    """``decode_interval``'s answer with its payload copied out of the message."""
    if interval is None:
        return None
    start, end, payload = interval
    return start, end, None if payload is None else payload.take()


# ---- round trips and canonicity -------------------------------------------------------


@given(messages)
def test_every_message_type_round_trips(msg: Message) -> None:
    raw = encode_message(msg)
    assert raw[0] == PROTOCOL_VERSION
    assert decode_message(raw) == msg
    assert encode_message(decode_message(raw)) == raw
    assert taken(decode_interval(raw)) == as_interval(msg)


def test_hello_progress_is_encoded_in_sorted_order() -> None:
    one = Hello("n", 1, {"b": 2, "a": 1})
    other = Hello("n", 1, {"a": 1, "b": 2})
    assert encode_message(one) == encode_message(other)


def test_epoch_bounds_round_trip() -> None:
    for epoch in (0, 1, 127, 128, U64):
        assert decode_message(encode_message(Hello("n", epoch))) == Hello("n", epoch)


# ---- fuzz -----------------------------------------------------------------------------


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_protocol_errors(raw: bytes) -> None:
    try_decode(raw)


@given(st.binary(max_size=100))
def test_random_bodies_behind_a_valid_header_raise_only_protocol_errors(body: bytes) -> None:
    for kind in (1, 2, 3):
        try_decode(bytes([PROTOCOL_VERSION, kind]) + body)


@given(messages, st.data())
def test_mutated_encodings_raise_only_protocol_errors(msg: Message, data: st.DataObject) -> None:
    raw = bytearray(encode_message(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.integers(0, len(raw)))
        how = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if how == "flip" and where < len(raw):
            raw[where] ^= data.draw(st.integers(1, 255))
        elif how == "insert":
            raw[where:where] = data.draw(st.binary(min_size=1, max_size=4))
        elif how == "delete":
            del raw[where : where + 1]
        else:
            del raw[where:]
    try_decode(bytes(raw))


def test_every_truncation_of_each_message_type_is_refused() -> None:
    for msg in (
        Hello("node", 7, {"a@1": 3, "b@2": 1}, True, {"p@9": 12}),
        Deltas(1, 4, b"xyz", b"s"),
        Ack(2, 9),
        Hello("node", 7, {}, False, {}, ("", "a/"), ("h1", "h2")),
        Sources(3, ("h1", "h2"), {"h1@5": 8}),
        SourcesAck(3),
        Probe(16_383),
        ProbeAck(16_383),
    ):
        raw = encode_message(msg)
        for cut in range(len(raw)):
            with pytest.raises(ProtocolError):
                decode_message(raw[:cut])
            try_decode(raw[:cut])


def test_trailing_bytes_are_refused() -> None:
    for msg in (Ack(1, 2), Deltas(1, 2, b"x")):
        for decode in (decode_message, decode_interval):
            with pytest.raises(ProtocolError, match="trailing"):
                decode(encode_message(msg) + b"\x00")


# ---- specific refusals ----------------------------------------------------------------


def test_oversized_message_is_refused() -> None:
    raw = encode_message(Deltas(1, 2, b"x" * 100))
    with pytest.raises(ProtocolError, match="exceeds"):
        decode_message(raw, max_size=len(raw) - 1)
    with pytest.raises(ProtocolError, match="exceeds"):
        decode_interval(raw, max_size=len(raw) - 1)
    assert decode_message(raw, max_size=len(raw)) == Deltas(1, 2, b"x" * 100)
    huge = encode_message(Deltas(1, 2, bytes(DEFAULT_MAX_MESSAGE)))
    with pytest.raises(ProtocolError, match="exceeds"):
        decode_message(huge)


def test_unknown_protocol_version_names_both_versions() -> None:
    raw = bytearray(encode_message(Ack(1, 2)))
    raw[0] = 99
    for decode in (decode_message, decode_interval):
        with pytest.raises(ProtocolError, match=f"version 99 .*speaks {PROTOCOL_VERSION}"):
            decode(bytes(raw))


def test_unknown_kind_is_refused() -> None:
    for kind in (0, 15, 255):
        with pytest.raises(ProtocolError, match=f"unknown message kind {kind}"):
            decode_message(bytes([PROTOCOL_VERSION, kind]))


@pytest.mark.parametrize(
    "msg", [Ack(0, 0), Ack(0, 5), Ack(5, 4), Deltas(0, 1, b""), Deltas(3, 2, b"")], ids=repr
)
def test_interval_starting_at_zero_or_after_its_end_is_refused(msg: Message) -> None:
    for decode in (decode_message, decode_interval):
        with pytest.raises(ProtocolError, match="bad interval"):
            decode(encode_message(msg))


def test_empty_interval_is_accepted() -> None:
    assert decode_message(encode_message(Ack(3, 3))) == Ack(3, 3)


def test_hello_positions_in_peer_logs_round_trip_and_must_be_sorted() -> None:
    hello = Hello("n", 1, {"a": 1}, True, {"p": 5, "q": 7})
    good = encode_message(hello)
    assert decode_message(good) == hello
    swapped = good.replace(b"\x01p\x05\x01q\x07", b"\x01q\x07\x01p\x05")
    assert swapped != good
    with pytest.raises(ProtocolError, match="received is not strictly sorted"):
        decode_message(swapped)


def test_unsorted_or_duplicate_hello_progress_is_refused() -> None:
    good = encode_message(Hello("n", 1, {"a": 1, "b": 2}))
    swapped = good.replace(b"\x01a\x01\x01b\x02", b"\x01b\x02\x01a\x01")
    duplicated = good.replace(b"\x01b\x02", b"\x01a\x02")
    for raw in (swapped, duplicated):
        assert raw != good
        with pytest.raises(ProtocolError, match="sorted"):
            decode_message(raw)


def test_sources_are_sets_sent_sorted_and_refused_unsorted() -> None:
    hello = Hello("n", 1, push=("b/", "a/", "a/"), sources=("h2", "h1"))
    assert decode_message(encode_message(hello)) == Hello(
        "n", 1, push=("a/", "b/"), sources=("h1", "h2")
    )
    good = encode_message(Sources(1, ("h1", "h2")))
    swapped = good.replace(b"\x02h1\x02h2", b"\x02h2\x02h1")
    assert swapped != good
    with pytest.raises(ProtocolError, match="sources is not strictly sorted"):
        decode_message(swapped)


def test_hello_flag_other_than_zero_or_one_is_refused() -> None:
    raw = bytearray(encode_message(Hello("n", 1, knows_you=True)))
    flag_at = 2 + 2 + 1  # version, kind, text "n", epoch 1
    assert raw[flag_at] == 1
    raw[flag_at] = 2
    with pytest.raises(ProtocolError, match="flag"):
        decode_message(bytes(raw))


# ---- a replica refuses bad input and changes nothing -----------------------------------


def write(net: MemoryNetwork, name: str, path: str) -> None:
    r = net.nodes[name].replica
    r.update(path, GCounter, lambda c: c.increment(r.actor, 1))
    net.flush(name)


def synced_pair() -> tuple[MemoryNetwork, Replica, Replica]:
    """Nodes a and b, linked and quiet, after a few writes on a reached b."""
    net = MemoryNetwork(random.Random(1))
    a, b = net.add("a"), net.add("b")
    net.link("a", "b")
    net.run()
    for i in range(3):
        write(net, "a", f"k{i}")
    net.run()
    assert b.get("k2", GCounter) is not None
    assert net.digests()["a"] == net.digests()["b"]
    assert b.ready().is_empty()
    return net, a, b


def fresh_deltas(net: MemoryNetwork, a: Replica) -> bytes:
    """A new write on a: commit it on a, but hold back the Deltas message it sends b."""
    a.update("fresh", GCounter, lambda c: c.increment(a.actor, 1))
    ready = a.ready()
    net.nodes["a"].storage.commit(ready.batch)
    [(link, raw)] = ready.messages
    assert link == "b" and isinstance(decode_message(raw), Deltas)
    return raw


Snapshot = tuple[object, ...]


def snapshot(net: MemoryNetwork, name: str) -> Snapshot:
    node = net.nodes[name]
    r, storage = node.replica, node.storage
    return (
        r.keyspace.encode(),
        r.log.next_seq,
        sorted(r.log.entries),
        {p: (s.acked, s.sent, dict(s.inflight)) for p, s in r.log.peers.items()},
        r.hlc.last,
        r.epoch,
        list(storage.entries()),
        list(storage.log()),
        storage.acks(),
        storage.meta(),
    )


def assert_unchanged(net: MemoryNetwork, name: str, before: Snapshot) -> None:
    """Same state in memory and in storage, and the driver's next round does nothing."""
    assert snapshot(net, name) == before
    assert not net.pending
    net.flush(name)
    assert not net.pending, "the bad input made the replica send something"
    assert snapshot(net, name) == before


def assert_still_converges(net: MemoryNetwork) -> None:
    write(net, "a", "after")
    net.run()
    digests = net.digests()
    assert digests["a"] == digests["b"]
    counter = net.nodes["b"].replica.get("after", GCounter)
    assert counter is not None and counter.value() == 1


def with_payload(raw: bytes, payload: bytes) -> bytes:
    msg = decode_message(raw)
    assert isinstance(msg, Deltas)
    return encode_message(Deltas(msg.start, msg.end, payload))


def type_tag_offset(encoded_keyspace: bytes) -> int:
    """Where the first entry's type tag sits: format, actor table, count, path, *tag*."""
    r = Reader(encoded_keyspace)
    r.u8()
    for _ in range(r.uvarint()):
        r.text()
    r.uvarint()
    r.text()
    return r.pos


def test_type_tag_offset_matches_the_keyspace_layout() -> None:
    payload = Keyspace().apply("path", GCounter, lambda c: c.increment("x@1", 1)).encode()
    at = type_tag_offset(payload)
    assert payload[at - len("path") : at] == b"path" and payload[at] == GCounter.TYPE_TAG


def garbage(a: Replica, b: Replica, real: bytes) -> list[bytes]:
    rng = random.Random(7)
    blobs = [rng.randbytes(rng.randrange(0, 64)) for _ in range(100)]
    header = bytes([PROTOCOL_VERSION, 2])  # a Deltas, then noise
    return blobs + [header + rng.randbytes(rng.randrange(0, 32)) for _ in range(100)]


def truncated_deltas(a: Replica, b: Replica, real: bytes) -> list[bytes]:
    return [real[:cut] for cut in range(len(real))]


def oversized(a: Replica, b: Replica, real: bytes) -> list[bytes]:
    return [with_payload(real, bytes(b.config.max_message_bytes))]


def garbage_payload(a: Replica, b: Replica, real: bytes) -> list[bytes]:
    return [with_payload(real, p) for p in (b"", b"\x00", b"\x01\xff\xff", b"garbage" * 5)]


def unknown_type_tag(a: Replica, b: Replica, real: bytes) -> list[bytes]:
    msg = decode_message(real)
    assert isinstance(msg, Deltas)
    payload = bytearray(msg.payload)
    at = type_tag_offset(msg.payload)
    assert payload[at] == GCounter.TYPE_TAG
    payload[at] = 200
    return [with_payload(real, bytes(payload))]


BadInput = Callable[[Replica, Replica, bytes], list[bytes]]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (garbage, None),
        (truncated_deltas, None),
        (oversized, "exceeds"),
        (garbage_payload, "malformed delta payload"),
        (unknown_type_tag, "unknown CRDT type tag 200"),
    ],
    ids=lambda x: getattr(x, "__name__", None),
)
def test_bad_input_is_refused_changes_nothing_and_sync_goes_on(
    make: BadInput, match: str | None
) -> None:
    net, a, b = synced_pair()
    raws = make(a, b, fresh_deltas(net, a))
    before = snapshot(net, "b")
    for raw in raws:
        with pytest.raises(ProtocolError, match=match):
            b.receive("a", raw)
        assert_unchanged(net, "b", before)
    assert_still_converges(net)


def test_far_future_timestamp_raises_clock_skew_and_changes_nothing() -> None:
    net, a, b = synced_pair()
    real = fresh_deltas(net, a)
    future = Keyspace().apply(
        "reg", LWWRegister, lambda r: r.set(a.actor, "x", Timestamp(net.now + 10**9, 0))
    )
    before = snapshot(net, "b")
    with pytest.raises(ClockSkewError) as info:
        b.receive("a", with_payload(real, future.encode()))
    assert type(info.value) is ClockSkewError and not isinstance(info.value, ProtocolError)
    assert_unchanged(net, "b", before)
    assert_still_converges(net)


def test_message_on_an_unknown_link_is_refused_and_changes_nothing() -> None:
    net, a, b = synced_pair()
    real = fresh_deltas(net, a)
    before = snapshot(net, "b")
    with pytest.raises(ProtocolError, match="unknown link 'c'"):
        b.receive("c", real)
    assert_unchanged(net, "b", before)
    assert_still_converges(net)


def test_ack_beyond_the_log_changes_nothing_and_sync_goes_on() -> None:
    net, a, b = synced_pair()
    before = snapshot(net, "b")
    with contextlib.suppress(ProtocolError):  # refusing it is as good as ignoring it
        b.receive("a", encode_message(Ack(1, b.log.next_seq + 1_000)))
    assert_unchanged(net, "b", before)
    write(net, "b", "from-b")
    net.run()
    assert a.get("from-b", GCounter) is not None
