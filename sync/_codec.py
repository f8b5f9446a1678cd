"""Byte-level canonical encoding: varints, strings, JSON-like values.

Every encoder here has exactly one output for a given input, and every decoder
accepts exactly those outputs: integers are minimal varints, dict keys are sorted,
floats are IEEE 754 big-endian with ``-0.0`` folded to ``0.0`` before they get here.
Decoders check each length and count against the bytes that remain before they
allocate anything, and nested values against a depth limit, so hostile input
costs at most its own size in memory and time.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Final

from sync._errors import CodecError

FORMAT_VERSION: Final = 1
MAX_DEPTH: Final = 32
DEFAULT_MAX_SIZE: Final = 64 * 1024 * 1024
INT_BITS: Final = 64  # plain integers in values and counters fit a signed 64-bit word
_SMALL: Final = 1 << 61  # within a compiled core's unboxed integers

_DOUBLE = struct.Struct(">d")

# Value tags. Order matters only in that it is fixed forever within a format version.
# (Final: compiled, a constant; a plain global is a module-dict lookup per use.)
V_NONE: Final = 0
V_FALSE: Final = 1
V_TRUE: Final = 2
V_INT: Final = 3
V_FLOAT: Final = 4
V_STR: Final = 5
V_BYTES: Final = 6
V_LIST: Final = 7
V_DICT: Final = 8


# Every one-byte string, made once: most of what an encoder writes is single bytes.
_BYTES: Final = [bytes((i,)) for i in range(256)]

# The count 1 and a first actor index below 0x80, as one part: one-row vectors,
# tallies and dot stores dominate, and ``getvalue`` pays for every part it joins.
_ONE_ROW: Final = [bytes((1, i)) for i in range(0x80)]


class Writer:
    """Canonical bytes, built as a list of parts joined once by ``getvalue``.

    Not a ``bytearray``: a compiled core has no primitive for its methods, so each
    ``append`` of a byte was a method call by name (about 430 instructions, counted
    with cachegrind), where a list append of a ready-made one-byte string is a few
    dozen; and a blob joins the parts as it is, with no copy until the end.
    """

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def u8(self, n: int) -> None:
        if not 0 <= n < 256:
            raise ValueError(f"byte must be in range(0, 256), not {n}")
        self.parts.append(_BYTES[n])

    def raw(self, data: bytes) -> None:
        """Bytes as they are, with no length before them."""
        self.parts.append(data)

    def uvarint(self, n: int) -> None:
        if 0 <= n < 0x80:
            self.parts.append(_BYTES[n])
        else:
            self.parts.append(_long_uvarint(n))

    def svarint(self, n: int) -> None:
        self.uvarint((n << 1) if n >= 0 else ((-n << 1) - 1))

    def counters(self, index: dict[str, int], counts: Iterable[tuple[str, int]]) -> None:
        """(actor index, count) pairs sorted by actor: vectors and tallies."""
        if not counts:  # empty tallies and clouds dominate: one byte, nothing to sort
            self.parts.append(_BYTES[0])
            return
        rows = sorted(counts)  # actor order is index order: the table is sorted
        self.uvarint(len(rows))
        for actor, n in rows:
            self.uvarint(index[actor])
            self.uvarint(n)

    def counter_dict(self, index: dict[str, int], counts: dict[str, int]) -> None:
        """``counters`` of a dict. Vectors and tallies of one actor dominate, and one
        row needs no sorted list of pairs."""
        if len(counts) != 1:
            self.counters(index, counts.items())
            return
        for actor, n in counts.items():
            self.one_row(index[actor])
            self.uvarint(n)

    def blob(self, data: bytes) -> None:
        self.uvarint(len(data))
        self.parts.append(bytes(data))  # a bytearray or memoryview would change under us

    def one_row(self, ix: int) -> None:
        """The count 1, then actor index ``ix``: the head of a one-row collection."""
        if ix < 0x80:
            self.parts.append(_ONE_ROW[ix])
        else:
            self.parts.append(_BYTES[1])
            self.uvarint(ix)

    def text(self, s: str) -> None:
        self.blob(s.encode("utf-8"))

    def float64(self, x: float) -> None:
        self.parts.append(_DOUBLE.pack(x))

    def value(self, v: object, depth: int = 0) -> None:
        if depth > MAX_DEPTH:
            raise ValueError(f"value nested deeper than {MAX_DEPTH} levels")
        if v is None:
            self.u8(V_NONE)
        elif v is True:
            self.u8(V_TRUE)
        elif v is False:
            self.u8(V_FALSE)
        elif isinstance(v, int):
            self.u8(V_INT)
            self.svarint(v)
        elif isinstance(v, float):
            self.u8(V_FLOAT)
            self.float64(v)
        elif isinstance(v, str):
            self.u8(V_STR)
            self.text(v)
        elif isinstance(v, bytes):
            self.u8(V_BYTES)
            self.blob(v)
        elif isinstance(v, tuple | list):
            self.u8(V_LIST)
            self.uvarint(len(v))
            for item in v:
                self.value(item, depth + 1)
        elif isinstance(v, Mapping):
            self.u8(V_DICT)
            self.uvarint(len(v))
            for key in sorted(v):
                self.text(key)
                self.value(v[key], depth + 1)
        else:
            raise TypeError(f"cannot encode a value of type {type(v).__name__}")

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


def _long_uvarint(n: int) -> bytes:
    """The varint of ``n`` >= 0x80 (a negative ``n`` raises ``ValueError``).

    Its bytes are gathered in one integer, first byte lowest, and converted once: a
    compiled core has no primitive for ``bytearray.append``, so appending byte by
    byte cost 3,700 instructions for a timestamp's six bytes, this 1,000 (callgrind).
    """
    if n < 0:
        raise ValueError(f"varints are unsigned, not {n}")
    packed = shift = 0
    while n > 0x7F:
        packed |= ((n & 0x7F) | 0x80) << shift
        n >>= 7
        shift += 8
    packed |= n << shift
    return packed.to_bytes((shift >> 3) + 1, "little")


class Span:
    """``data[first:last]``, not copied out: a payload inside a received message.

    A hub decodes a frame's payload where it lies (``Reader(data, first, last)``);
    slicing it out first copied every value once more before the decoder copied
    each out again for the state. ``take`` copies it out only for what keeps it
    (a log entry).
    """

    __slots__ = ("data", "first", "last")

    def __init__(self, data: bytes, first: int = 0, last: int = -1) -> None:
        self.data = data
        self.first = first
        self.last = len(data) if last < 0 else last

    def take(self) -> bytes:
        """The bytes themselves, copied out once (``data`` itself if that is all)."""
        if self.first != 0 or self.last != len(self.data):
            self.data, self.first = self.data[self.first : self.last], 0
            self.last = len(self.data)
        return self.data

    def __repr__(self) -> str:
        return f"Span({self.last - self.first} bytes at {self.first})"


class Reader:
    """Reads ``data[pos:end]`` (``end`` -1: to the end of ``data``) as if that were
    all of it: offsets in its errors count from ``pos`` (kept as ``base``)."""

    __slots__ = ("base", "data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int = -1) -> None:
        self.data = data
        self.base = self.pos = pos
        self.end = len(data) if end < 0 else end

    def remaining(self) -> int:
        return self.end - self.pos

    def u8(self) -> int:
        if self.pos >= self.end:
            raise CodecError(f"truncated input: expected a byte at offset {self.pos - self.base}")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def uvarint(self) -> int:
        pos = self.pos
        if pos < self.end:
            b = self.data[pos]
            if b < 0x80:  # one-byte varints dominate: take them without the loop
                self.pos = pos + 1
                return b
        return self._long_uvarint()

    def _long_uvarint(self) -> int:
        start = pos = self.pos
        data, end = self.data, self.end
        result = shift = 0
        while True:
            if pos >= end:
                raise CodecError(f"truncated input: expected a byte at offset {pos - self.base}")
            b = data[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift >= 70:
                raise CodecError(f"varint at offset {start - self.base} is longer than 10 bytes")
        if b == 0 and pos - start > 1:
            raise CodecError(f"varint at offset {start - self.base} is not minimal")
        if result >> INT_BITS:
            raise CodecError(f"varint at offset {start - self.base} exceeds {INT_BITS} bits")
        self.pos = pos
        return result

    def empty(self) -> bool:
        """Take a count of 0 if one comes next: empty tallies and clouds dominate, and
        this is their whole decoding."""
        pos = self.pos
        if pos < self.end and self.data[pos] == 0:
            self.pos = pos + 1
            return True
        return False

    def svarint(self) -> int:
        z = self.uvarint()
        return (z >> 1) if not z & 1 else -((z + 1) >> 1)

    def count(self, what: str, min_item_size: int = 1) -> int:
        """A collection length, refused when the remaining bytes cannot hold it."""
        n = self.uvarint()
        if n * min_item_size > self.end - self.pos:
            raise CodecError(f"{what} count {n} exceeds the {self.remaining()} bytes left")
        return n

    def blob(self) -> bytes:
        first = self._step_over_blob()
        return self.data[first : self.pos]  # a slice of bytes is a new bytes

    def blob_span(self) -> Span:
        """``blob()`` where it lies, stepped over rather than copied out."""
        first = self._step_over_blob()
        return Span(self.data, first, self.pos)

    def _step_over_blob(self) -> int:
        """Read a blob's length and step over its bytes; where they start."""
        n = self.uvarint()
        if n > self.remaining():
            raise CodecError(f"truncated input: {n}-byte string with {self.remaining()} bytes left")
        first = self.pos
        self.pos = first + n
        return first

    def text(self) -> str:
        raw = self.blob()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CodecError(f"invalid UTF-8 in string: {exc.reason}") from None

    def float64(self) -> float:
        if self.remaining() < 8:
            raise CodecError("truncated input: float needs 8 bytes")
        (x,) = _DOUBLE.unpack_from(self.data, self.pos)
        self.pos += 8
        if not math.isfinite(x):
            raise CodecError("non-finite float in input")
        if x == 0.0 and math.copysign(1.0, x) < 0:
            raise CodecError("negative zero is not canonical")
        return float(x)

    def value(self, depth: int = 0) -> object:
        if depth > MAX_DEPTH:
            raise CodecError(f"value nested deeper than {MAX_DEPTH} levels")
        tag = self.u8()
        if tag == V_NONE:
            return None
        if tag == V_TRUE:
            return True
        if tag == V_FALSE:
            return False
        if tag == V_INT:
            return self.int64()
        if tag == V_FLOAT:
            return self.float64()
        if tag == V_STR:
            return self.text()
        if tag == V_BYTES:
            return self.blob()
        if tag == V_LIST:
            n = self.count("list")
            return tuple(self.value(depth + 1) for _ in range(n))
        if tag == V_DICT:
            n = self.count("dict", 2)
            out: dict[str, object] = {}
            prev: str | None = None
            for _ in range(n):
                key = self.text()
                if prev is not None and key <= prev:
                    raise CodecError("dict keys are not strictly sorted")
                out[key] = self.value(depth + 1)
                prev = key
            return MappingProxyType(out)
        raise CodecError(f"unknown value tag {tag}")

    def int64(self) -> int:
        n = self.svarint()
        if -_SMALL <= n < _SMALL:  # compiled, a native comparison (2**63 is boxed)
            return n
        if not -(1 << (INT_BITS - 1)) <= n < (1 << (INT_BITS - 1)):
            raise CodecError(f"integer {n} does not fit in {INT_BITS} bits")
        return n

    def expect_end(self) -> None:
        if self.pos != self.end:
            raise CodecError(f"{self.end - self.pos} trailing bytes after the encoding")


def encode_value(v: object) -> bytes:
    w = Writer()
    w.value(v)
    return w.getvalue()
