"""The replication stream's frames, encoded and decoded here rather than by protobuf.

``proto/edgesync/v1/replication.proto`` defines the stream's ``Frame``: a protocol
message (field 1), room for a signature (2), or a refusal's reason (3). Going
through the generated class copies each message four times besides gRPC's own
copies: into protobuf's arena when a frame is built, out of it when it is
serialized, into the arena again when one is parsed, and out when ``.message`` is
read. An edge's frames of large values are about a megabyte each, and those copies
(with the page faults of the fresh memory they land in) took 17% of the sender's
event-loop thread and 6% of the hub's (``perf`` over ``bench/gossip_bench.py``'s
large workload).

A frame that holds only a message is, in protobuf's encoding, the byte 0x0a (field
1, length-delimited), the message's length as a varint, and the message: this
module makes and reads exactly those bytes. Every other frame (a refusal, a
signature, a field a newer build added, or bytes that parse as no frame at all)
goes through the generated class, which decides what it is; so the wire format is
protobuf's, byte for byte, and a peer built either way reads the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

from sync._codec import Reader, Writer
from sync._errors import CodecError
from sync.adapters.pb import replication_pb2

MESSAGE_TAG = 0x0A  # field 1 (message), wire type 2 (length-delimited)
SERVICE, LINK = "edgesync.v1.Replication", "Link"  # the stream's service and method
METHOD = f"/{SERVICE}/{LINK}"  # its full gRPC method name


class FrameError(ValueError):
    """Bytes on the stream that are no ``Frame``."""


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded frame: a protocol ``message``, or a peer's ``refusal`` of ours."""

    message: bytes = b""
    signature: bytes = b""
    refusal: str = ""


def encode_message(message: bytes) -> bytes:
    """The frame carrying ``message``, as protobuf encodes it: one copy of it."""
    if not message:
        return b""  # proto3 leaves a default field out
    return b"".join((_header(len(message)), message))


def encode_refusal(reason: str) -> bytes:
    """The frame telling a peer why one of its frames was refused."""
    return bytes(replication_pb2.Frame(refusal=reason).SerializeToString())


def decode(raw: bytes) -> Frame:
    """The frame ``raw`` encodes; ``FrameError`` if it encodes none."""
    start = _message_start(raw)
    if start is not None:
        return Frame(raw[start:])
    try:
        frame = replication_pb2.Frame.FromString(raw)
    except DecodeError as exc:
        raise FrameError(f"not a replication frame ({len(raw)} bytes): {exc}") from None
    return Frame(frame.message, frame.signature, frame.refusal)


def _header(length: int) -> bytes:
    """Field 1's tag and ``length``: protobuf's varints are the codec's (LEB128)."""
    w = Writer()
    w.u8(MESSAGE_TAG)
    w.uvarint(length)
    return w.getvalue()


def _message_start(raw: bytes) -> int | None:
    """Where the message starts in ``raw`` if ``raw`` is a message-only frame. A
    length the codec will not read (longer than it need be, or past 64 bits) is
    left to protobuf, which decides."""
    if not raw or raw[0] != MESSAGE_TAG:
        return None
    r = Reader(raw, 1)
    try:
        length = r.uvarint()
    except CodecError:
        return None
    return r.pos if length > 0 and r.remaining() == length else None
