"""The decoder accepts exactly the canonical encodings and refuses the rest clearly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync import (
    FORMAT_VERSION,
    AWSet,
    CodecError,
    GCounter,
    LWWRegister,
    ORMap,
    PNCounter,
    Timestamp,
    crdt_types,
    decode,
)
from sync._codec import MAX_DEPTH

from crdt_histories import histories

ORMAP_TAG = ORMap.TYPE_TAG
EMPTY_CTX = bytes([0, 0, 0])  # no actors, empty version vector, empty cloud


def sample_state() -> ORMap:
    m = ORMap()
    m.apply("set", AWSet, lambda s: s.add("n1", "a"))
    m.apply("n", PNCounter, lambda c: c.increment("n2", -4))
    m.apply("r", LWWRegister, lambda r: r.set("n1", {"x": [1.5, None, b"\x01"]}, Timestamp(7, 1)))
    m.apply("inner", ORMap, lambda i: i.apply("g", GCounter, lambda g: g.increment("n3", 2)))
    m.remove("n", PNCounter)
    return m


def try_decode(raw: bytes) -> None:
    """Decode; anything but success or CodecError fails the test."""
    try:
        obj = decode(raw)
    except CodecError:
        return
    assert obj.encode() == raw  # accepted input must be canonical


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_codec_errors(raw: bytes) -> None:
    try_decode(raw)


@given(st.binary(max_size=200))
def test_random_bodies_behind_a_valid_header_raise_only_codec_errors(body: bytes) -> None:
    for cls in crdt_types():
        try_decode(bytes([FORMAT_VERSION, cls.TYPE_TAG]) + body)


@given(data=st.data())
def test_mutated_encodings_raise_only_codec_errors(data: st.DataObject) -> None:
    cls = data.draw(st.sampled_from(crdt_types()))
    h = data.draw(histories(cls, max_steps=10))
    raw = bytearray(data.draw(st.sampled_from([*h.snapshots, sample_state()])).encode())
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


def test_every_truncation_of_a_real_state_is_refused() -> None:
    raw = sample_state().encode()
    for cut in range(len(raw)):
        with pytest.raises(CodecError):
            decode(raw[:cut])


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(CodecError, match="trailing"):
        decode(sample_state().encode() + b"\x00")


def test_unknown_format_version_names_both_versions() -> None:
    raw = bytearray(sample_state().encode())
    raw[0] = 99
    with pytest.raises(CodecError, match=f"version 99.*version {FORMAT_VERSION}"):
        decode(bytes(raw))


def test_unknown_type_tag_is_refused() -> None:
    with pytest.raises(CodecError, match="unknown CRDT type tag 200"):
        decode(bytes([FORMAT_VERSION, 200]) + EMPTY_CTX)


def test_oversized_input_is_refused_before_parsing() -> None:
    raw = sample_state().encode()
    with pytest.raises(CodecError, match="exceeds"):
        decode(raw, max_size=len(raw) - 1)
    assert decode(raw, max_size=len(raw)) == sample_state()


def test_huge_counts_are_refused_without_allocating() -> None:
    huge = bytes([0xFF] * 8 + [0x7F])  # a ~2**63 count
    with pytest.raises(CodecError, match="count"):
        decode(bytes([FORMAT_VERSION, ORMAP_TAG]) + huge)


def test_deep_map_nesting_is_refused_without_recursion_error() -> None:
    level = bytes([1, 1]) + b"a" + bytes([ORMAP_TAG])  # one entry "a" holding a map
    raw = bytes([FORMAT_VERSION, ORMAP_TAG]) + EMPTY_CTX + level * (MAX_DEPTH + 5) + b"\x00"
    with pytest.raises(CodecError, match="nested"):
        decode(raw)


def test_deep_value_nesting_is_refused() -> None:
    deep: object = 1
    for _ in range(MAX_DEPTH + 2):
        deep = [deep]
    with pytest.raises(ValueError, match="nested"):
        LWWRegister().set("n", deep, Timestamp(1))


def test_non_minimal_varints_are_refused() -> None:
    good = GCounter()
    good.increment("a", 1)
    raw = good.encode()
    # The empty-cloud count 0x00 re-encoded as the two-byte varint 0x80 0x00.
    marker = raw.index(b"\x00", 2 + 1 + 1 + 1)
    bad = raw[:marker] + b"\x80\x00" + raw[marker + 1 :]
    with pytest.raises(CodecError, match="minimal"):
        decode(bad)


def test_non_canonical_contexts_and_stores_are_refused() -> None:
    s = AWSet()
    s.add("a", "x")
    raw = s.encode()
    # vv {a: 1} then an empty cloud; claim cloud dot (a, 2), which compaction would fold.
    cloud_at = raw.index(b"\x00", 2 + 1 + 1 + 1 + 2)
    bad = raw[:cloud_at] + bytes([1, 0, 2]) + raw[cloud_at + 1 :]
    with pytest.raises(CodecError, match="compact"):
        decode(bad)


def test_decode_checks_the_expected_type() -> None:
    with pytest.raises(CodecError, match="expected AWSet"):
        AWSet.decode(GCounter().encode())
