"""The replication protocol's messages and their canonical encoding.

A link carries, in both directions:

- ``Hello``: who the sender is (node id and epoch), how much of each actor's
  history it has seen, which lets a restarted node learn that its store was rolled
  back behind what its peers saw of it, and how far into each peer's log its store
  goes, which lets a peer resend what a restored store lost;
- ``Deltas``: a delta interval ``[start, end)`` of the sender's log, as an encoded
  ``Keyspace`` (with room for a signature);
- ``Ack``: the receiver applied (and persisted) that interval;
- ``CaughtUp``: a finished digest catch-up gave the receiver the sender's log below
  a position (see ``Hello.received``);
- ``Sources`` (answered by ``SourcesAck``): the nodes the sender now receives
  from directly, so a relaying peer need not forward it what came from them
  (``Hello.sources`` says it first; see ``sync/_propagation.py``);
- ``Probe`` (answered by ``ProbeAck``, which echoes its send time's low bits):
  the sender left deltas unacknowledged for a retransmission timeout and asks,
  in four bytes, whether the link carries messages again; the answer makes it resend at
  once what it sent before the probe and is still unacknowledged (see
  ``sync/_propagation.py``, "Stalls"). When the oldest unacknowledged interval is
  small, a plain ``Deltas`` copy of it goes just before the probe ("Data in
  probes"): no field or kind of message is added, so older builds take both.

Every message is ``u8 version | u8 kind | fields``. ``decode_message`` refuses an
oversized, truncated, malformed or unknown message with ``ProtocolError`` and
nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sync._codec import Reader, Span, Writer
from sync._errors import CodecError, ProtocolError

PROTOCOL_VERSION = 1
DEFAULT_MAX_MESSAGE = 4 * 1024 * 1024
_HELLO, _DELTAS, _ACK, _SOURCES = 1, 2, 3, 11


@dataclass(frozen=True)
class Hello:
    node_id: str
    epoch: int
    progress: dict[str, int] = field(default_factory=dict)  # actor -> events seen
    knows_you: bool = False  # False asks the receiver to answer with its own Hello
    # Per peer actor, the end of the furthest stretch of its log merged here.
    received: dict[str, int] = field(default_factory=dict)
    # The prefixes the sender pushes on this link (its policy; ``local/`` never), and
    # the nodes it receives from directly over live links (see ``Sources``).
    push: tuple[str, ...] = ("",)
    sources: tuple[str, ...] = ()


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


# ---- catch-up by digest (see sync/_catchup.py) ---------------------------------------
# Positions travel as their top 48 bits and fingerprints as their low 32: enough to
# tell keys and states apart within the small ranges where they are compared.


@dataclass(frozen=True)
class Expand:
    """Asks for the fingerprints and key counts of the 4 children of each node."""

    session: int
    level: int
    nodes: tuple[int, ...]


@dataclass(frozen=True)
class Fingerprints:
    session: int
    level: int  # of the nodes expanded; the children are one level down
    nodes: tuple[int, ...]
    root: int  # the answerer's whole-tree fingerprint, 64 bits
    fps: tuple[int, ...]  # 4 per node, 32 bits each
    counts: tuple[int, ...]  # 4 per node


@dataclass(frozen=True)
class ListItems:
    session: int
    level: int
    nodes: tuple[int, ...]


@dataclass(frozen=True)
class Items:
    session: int
    level: int
    nodes: tuple[int, ...]
    positions: tuple[int, ...]  # 48 bits, sorted
    fps: tuple[int, ...]  # 32 bits, one per position


@dataclass(frozen=True)
class Push:
    """Entries the answerer lacks or holds differently."""

    session: int
    chunk: int
    payload: bytes  # an encoded Keyspace


@dataclass(frozen=True)
class PushAck:
    session: int
    chunk: int


@dataclass(frozen=True)
class CaughtUp:
    """A finished catch-up gave the receiver the sender's log below ``next_seq``."""

    next_seq: int


@dataclass(frozen=True)
class Sources:
    """The nodes the sender receives from directly now, each pushing it all it pulls
    from the receiver: what the receiver got from them, it need not forward.

    Sent when the set changes after the Hello (which carries the first one), and
    again until answered; ``serial`` grows, so a late copy changes nothing.
    """

    serial: int
    nodes: tuple[str, ...]  # node ids, sorted
    # The sender's positions in its peers' logs (as in ``Hello.received``): what it
    # holds of a source it no longer declares, so less is sent again through us.
    received: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SourcesAck:
    serial: int


@dataclass(frozen=True)
class Probe:
    """Is this link carrying messages again? Sent once a tick while deltas of the
    sender's wait unacknowledged past a timeout."""

    # The low bits of the sender's clock (ms) when it sent it, echoed in the answer:
    # 2 bytes, and no state to match them (``sync._propagation.probe_sent_at``).
    stamp: int


@dataclass(frozen=True)
class ProbeAck:
    """The answer to a ``Probe``; never answered itself, so probes cannot echo."""

    stamp: int  # the probe's


Message = (
    Hello | Deltas | Ack | CaughtUp | Sources | SourcesAck | Probe | ProbeAck
    | Expand | Fingerprints | ListItems | Items | Push | PushAck
)  # fmt: skip

# Field layouts of the catch-up messages: u = uvarint, ns = sorted uvarints (delta
# coded), f4/f6 = fixed 4/6-byte big-endian lists, q = fixed 8 bytes, b = blob.
_LAYOUTS: dict[type, tuple[int, tuple[str, ...]]] = {
    Expand: (4, ("u", "u", "ns")),
    Fingerprints: (5, ("u", "u", "ns", "q", "f4", "us")),
    ListItems: (6, ("u", "u", "ns")),
    Items: (7, ("u", "u", "ns", "f6", "f4")),
    Push: (8, ("u", "u", "b")),
    PushAck: (9, ("u", "u")),
    CaughtUp: (10, ("u",)),
    SourcesAck: (12, ("u",)),
    Probe: (13, ("u",)),
    ProbeAck: (14, ("u",)),
}
_BY_KIND = {kind: cls for cls, (kind, _) in _LAYOUTS.items()}


def _encode_fields(w: Writer, msg: object) -> None:
    kind, layout = _LAYOUTS[type(msg)]
    w.u8(kind)
    for value, code in zip(astuple_shallow(msg), layout, strict=True):
        _write_field(w, code, value)


def astuple_shallow(msg: object) -> tuple[object, ...]:
    return tuple(getattr(msg, f) for f in msg.__dataclass_fields__)  # type: ignore[attr-defined]


def _write_field(w: Writer, code: str, value: object) -> None:
    if code == "u":
        w.uvarint(value)  # type: ignore[arg-type]
    elif code == "q":
        w.raw(int(value).to_bytes(8, "big"))  # type: ignore[call-overload]
    elif code == "b":
        w.blob(value)  # type: ignore[arg-type]
    else:
        items: tuple[int, ...] = value  # type: ignore[assignment]
        w.uvarint(len(items))
        if code == "ns":
            prev = 0
            for n in items:
                w.uvarint(n - prev)
                prev = n
        elif code == "us":
            for n in items:
                w.uvarint(n)
        else:
            width = 4 if code == "f4" else 6
            for n in items:
                w.raw(n.to_bytes(width, "big"))


def _read_fields(r: Reader, cls: type) -> object:
    _, layout = _LAYOUTS[cls]
    return cls(*(_read_field(r, code) for code in layout))


def _read_field(r: Reader, code: str) -> object:
    if code == "u":
        return r.uvarint()
    if code == "q":
        return int.from_bytes(_take(r, 8), "big")
    if code == "b":
        return r.blob()
    width = {"ns": 1, "us": 1, "f4": 4, "f6": 6}[code]
    n = r.count("list", width)
    if code == "ns":
        out, prev = [], 0
        for _ in range(n):
            prev += r.uvarint()
            out.append(prev)
        return tuple(out)
    if code == "us":
        return tuple(r.uvarint() for _ in range(n))
    return tuple(int.from_bytes(_take(r, width), "big") for _ in range(n))


def _take(r: Reader, n: int) -> bytes:
    if r.remaining() < n:
        raise ProtocolError(f"truncated message: {n} bytes needed")
    out = r.data[r.pos : r.pos + n]
    r.pos += n
    return bytes(out)


def encode_deltas(start: int, end: int, payload: bytes, signature: bytes = b"") -> bytes:
    """``encode_message(Deltas(...))`` without the message object: a frozen dataclass
    costs more to build than this to encode, and every interval sent is one."""
    return encode_deltas_of_pieces(start, end, [payload], signature)


def encode_deltas_of_pieces(
    start: int, end: int, pieces: list[bytes | memoryview], signature: bytes = b""
) -> bytes:
    """``encode_deltas`` of the payload ``b"".join(pieces)``, joined once here: the
    pieces of a spliced interval (``Keyspace.splice``) are copied only into the
    message."""
    size = 0
    for piece in pieces:
        size += len(piece)
    w = Writer()
    w.u8(PROTOCOL_VERSION)
    w.u8(_DELTAS)
    w.uvarint(start)
    w.uvarint(end)
    w.uvarint(size)
    head = w.getvalue()
    w = Writer()
    w.blob(signature)
    return b"".join([head, *pieces, w.getvalue()])


def encode_ack(start: int, end: int) -> bytes:
    """``encode_message(Ack(start, end))`` without the message object (as above: every
    interval received is acknowledged)."""
    w = Writer()
    w.u8(PROTOCOL_VERSION)
    w.u8(_ACK)
    w.uvarint(start)
    w.uvarint(end)
    return w.getvalue()


def decode_interval(
    data: bytes, max_size: int = DEFAULT_MAX_MESSAGE
) -> tuple[int, int, Span | None] | None:
    """A ``Deltas`` as ``(start, end, payload)``, an ``Ack`` as ``(start, end, None)``,
    refused as ``decode_message`` would refuse it; None for any other kind of message.

    ``decode_message`` without the message object, as ``encode_deltas`` encodes one:
    compiled, a frozen dataclass is built by an interpreted ``__init__`` that sets
    each field through ``object.__setattr__``, and most messages received are these.
    The payload is left where it lies in ``data`` (a ``Span``), to be decoded there.
    """
    if len(data) < 2 or (data[1] != _DELTAS and data[1] != _ACK):
        return None
    r = _reader(data, max_size)
    try:
        _read_version(r)
        kind = r.u8()
        start, end = _read_interval(r)
        payload = None
        if kind == _DELTAS:
            payload = r.blob_span()
            r.blob_span()  # the signature, reserved: checked for form, used by nobody yet
        r.expect_end()
    except ProtocolError:
        raise
    except CodecError as exc:
        raise ProtocolError(f"malformed message: {exc}") from None
    return start, end, payload


def encode_message(msg: Message) -> bytes:
    if isinstance(msg, Deltas):
        return encode_deltas(msg.start, msg.end, msg.payload, msg.signature)
    if isinstance(msg, Ack):
        return encode_ack(msg.start, msg.end)
    w = Writer()
    w.u8(PROTOCOL_VERSION)
    if isinstance(msg, Hello):
        w.u8(_HELLO)
        w.text(msg.node_id)
        w.uvarint(msg.epoch)
        w.u8(1 if msg.knows_you else 0)
        _write_counts(w, msg.progress)
        _write_counts(w, msg.received)
        _write_texts(w, msg.push)
        _write_texts(w, msg.sources)
    elif isinstance(msg, Sources):
        w.u8(_SOURCES)
        w.uvarint(msg.serial)
        _write_texts(w, msg.nodes)
        _write_counts(w, msg.received)
    else:
        _encode_fields(w, msg)
    return w.getvalue()


def decode_message(data: bytes, max_size: int = DEFAULT_MAX_MESSAGE) -> Message:
    r = _reader(data, max_size)
    try:
        _read_version(r)
        msg = _decode_kind(r)
        r.expect_end()
    except ProtocolError:
        raise
    except CodecError as exc:
        raise ProtocolError(f"malformed message: {exc}") from None
    return msg


def _reader(data: bytes, max_size: int) -> Reader:
    """A reader of a message, unless it is oversized."""
    if len(data) > max_size:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the {max_size}-byte limit")
    return Reader(bytes(data))


def _read_version(r: Reader) -> None:
    version = r.u8()
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {version} is not supported; this build speaks {PROTOCOL_VERSION}"
        )


def _decode_kind(r: Reader) -> Message:
    kind = r.u8()
    if kind == _HELLO:
        node_id, epoch, knows_you = r.text(), r.uvarint(), r.u8()
        if knows_you > 1:
            raise ProtocolError("malformed hello flag")
        progress, received = _read_counts(r, "hello progress"), _read_counts(r, "hello received")
        push, sources = _read_texts(r, "hello push"), _read_texts(r, "hello sources")
        return Hello(node_id, epoch, progress, bool(knows_you), received, push, sources)
    if kind == _SOURCES:
        serial, nodes = r.uvarint(), _read_texts(r, "sources")
        return Sources(serial, nodes, _read_counts(r, "sources received"))
    if kind in (_DELTAS, _ACK):
        start, end = _read_interval(r)
        if kind == _ACK:
            return Ack(start, end)
        return Deltas(start, end, r.blob(), r.blob())
    cls = _BY_KIND.get(kind)
    if cls is None:
        raise ProtocolError(f"unknown message kind {kind}")
    return _read_fields(r, cls)  # type: ignore[return-value]


def _read_interval(r: Reader) -> tuple[int, int]:
    start, end = r.uvarint(), r.uvarint()
    if not 0 < start <= end:
        raise ProtocolError(f"bad interval [{start}, {end})")
    return start, end


def _read_counts(r: Reader, what: str) -> dict[str, int]:
    """A map of actor to count, refused unless its actors are strictly sorted."""
    counts: dict[str, int] = {}
    prev = None
    for _ in range(r.count(what, 2)):
        actor = r.text()
        if prev is not None and actor <= prev:
            raise ProtocolError(f"{what} is not strictly sorted")
        counts[actor] = r.uvarint()
        prev = actor
    return counts


def _write_counts(w: Writer, counts: dict[str, int]) -> None:
    w.uvarint(len(counts))
    for actor in sorted(counts):
        w.text(actor)
        w.uvarint(counts[actor])


def _write_texts(w: Writer, texts: tuple[str, ...]) -> None:
    """Strings in sorted order, once each: a set, canonically."""
    items = sorted(set(texts))
    w.uvarint(len(items))
    for text in items:
        w.text(text)


def _read_texts(r: Reader, what: str) -> tuple[str, ...]:
    out: list[str] = []
    for _ in range(r.count(what, 1)):
        text = r.text()
        if out and text <= out[-1]:
            raise ProtocolError(f"{what} is not strictly sorted")
        out.append(text)
    return tuple(out)
