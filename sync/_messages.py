"""The replication protocol's messages and their canonical encoding.

A link carries, in both directions:

- ``Hello``: who the sender is (node id and epoch) and how much of each actor's
  history it has seen, which lets a restarted node learn that its store was rolled
  back behind what its peers saw of it;
- ``Deltas``: a delta interval ``[start, end)`` of the sender's log, as an encoded
  ``Keyspace`` (with room for a signature);
- ``Ack``: the receiver applied (and persisted) that interval.

Every message is ``u8 version | u8 kind | fields``. ``decode_message`` refuses an
oversized, truncated, malformed or unknown message with ``ProtocolError`` and
nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sync._codec import CodecError, Reader, Writer

PROTOCOL_VERSION = 1
DEFAULT_MAX_MESSAGE = 4 * 1024 * 1024
_HELLO, _DELTAS, _ACK = 1, 2, 3


class ProtocolError(CodecError):
    """A peer sent something this build cannot accept."""


@dataclass(frozen=True)
class Hello:
    node_id: str
    epoch: int
    progress: dict[str, int] = field(default_factory=dict)  # actor -> events seen
    knows_you: bool = False  # False asks the receiver to answer with its own Hello


@dataclass(frozen=True)
class Deltas:
    start: int
    end: int
    payload: bytes  # an encoded Keyspace
    signature: bytes = b""  # reserved for end-to-end signed deltas

    def __repr__(self) -> str:
        return f"Deltas([{self.start}, {self.end}), {len(self.payload)} bytes)"


@dataclass(frozen=True)
class Ack:
    start: int
    end: int


Message = Hello | Deltas | Ack


def encode_message(msg: Message) -> bytes:
    w = Writer()
    w.u8(PROTOCOL_VERSION)
    if isinstance(msg, Hello):
        w.u8(_HELLO)
        w.text(msg.node_id)
        w.uvarint(msg.epoch)
        w.u8(1 if msg.knows_you else 0)
        w.uvarint(len(msg.progress))
        for actor in sorted(msg.progress):
            w.text(actor)
            w.uvarint(msg.progress[actor])
    elif isinstance(msg, Deltas):
        w.u8(_DELTAS)
        w.uvarint(msg.start)
        w.uvarint(msg.end)
        w.blob(msg.payload)
        w.blob(msg.signature)
    else:
        w.u8(_ACK)
        w.uvarint(msg.start)
        w.uvarint(msg.end)
    return w.getvalue()


def decode_message(data: bytes, max_size: int = DEFAULT_MAX_MESSAGE) -> Message:
    if len(data) > max_size:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the {max_size}-byte limit")
    try:
        r = Reader(bytes(data))
        version = r.u8()
        if version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"protocol version {version} is not supported; this build speaks {PROTOCOL_VERSION}"
            )
        msg = _decode_kind(r)
        r.expect_end()
    except ProtocolError:
        raise
    except CodecError as exc:
        raise ProtocolError(f"malformed message: {exc}") from None
    return msg


def _decode_kind(r: Reader) -> Message:
    kind = r.u8()
    if kind == _HELLO:
        node_id, epoch, knows_you = r.text(), r.uvarint(), r.u8()
        if knows_you > 1:
            raise ProtocolError("malformed hello flag")
        progress: dict[str, int] = {}
        prev = None
        for _ in range(r.count("progress", 2)):
            actor = r.text()
            if prev is not None and actor <= prev:
                raise ProtocolError("hello progress is not strictly sorted")
            progress[actor] = r.uvarint()
            prev = actor
        return Hello(node_id, epoch, progress, bool(knows_you))
    if kind in (_DELTAS, _ACK):
        start, end = r.uvarint(), r.uvarint()
        if not 0 < start <= end:
            raise ProtocolError(f"bad interval [{start}, {end})")
        if kind == _ACK:
            return Ack(start, end)
        return Deltas(start, end, r.blob(), r.blob())
    raise ProtocolError(f"unknown message kind {kind}")
