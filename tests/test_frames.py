"""The replication stream's frames (sync/adapters/frames.py) against protobuf's own
encoding of ``Frame``: the same bytes out, the same frame (or the same refusal) in."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from hypothesis import given
from hypothesis import strategies as st

from sync.adapters import frames
from sync.adapters.pb import replication_pb2


@given(st.binary(max_size=70_000))
def test_a_message_frame_is_protobufs_encoding_and_decodes_back(message: bytes) -> None:
    raw = frames.encode_message(message)
    assert raw == replication_pb2.Frame(message=message).SerializeToString()
    assert frames.decode(raw) == frames.Frame(message)


@given(st.binary(max_size=300), st.binary(max_size=300), st.text(max_size=100))
def test_any_frame_protobuf_encodes_decodes_as_protobuf_reads_it(
    message: bytes, signature: bytes, refusal: str
) -> None:
    raw = replication_pb2.Frame(
        message=message, signature=signature, refusal=refusal
    ).SerializeToString()
    assert frames.decode(raw) == frames.Frame(message, signature, refusal)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_as_protobuf_decodes_them_or_are_refused(raw: bytes) -> None:
    try:
        expected = replication_pb2.Frame.FromString(raw)
    except DecodeError:
        with pytest.raises(frames.FrameError, match="not a replication frame"):
            frames.decode(raw)
        return
    assert frames.decode(raw) == frames.Frame(
        expected.message, expected.signature, expected.refusal
    )


def test_a_refusal_frame_carries_its_reason_and_no_message() -> None:
    frame = frames.decode(frames.encode_refusal("your clock runs 1 h ahead"))
    assert frame == frames.Frame(refusal="your clock runs 1 h ahead")


@pytest.mark.parametrize(
    "raw",
    [
        b"\x0a\x05abc",  # a message shorter than its length says
        b"\x0a\x02abc",  # bytes after the message that make no field
        b"\x0a\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",  # a length varint over 10 bytes
        b"\xff\xff\xff",
    ],
)
def test_bytes_that_are_no_frame_are_refused(raw: bytes) -> None:
    with pytest.raises(frames.FrameError, match="not a replication frame"):
        frames.decode(raw)


def test_the_stream_is_the_method_the_proto_declares() -> None:
    service = replication_pb2.DESCRIPTOR.services_by_name["Replication"]
    link = service.methods_by_name["Link"]
    assert f"/{service.full_name}/{link.name}" == frames.METHOD
    assert link.client_streaming and link.server_streaming
