"""The write-ahead journal of an ``LMDBStorage``: commits made durable with one flush.

Why it exists: an LMDB commit flushes the disk twice (the data pages, then the meta
page that points at them) and writes one page per B-tree leaf it touched, so a
group of updates to keys spread over a large store costs a page per key. The
journal makes a commit one sequential write and one ``fdatasync`` of a single
file; the store folds the journalled batches into LMDB later, many at a time, in
one transaction (``LMDBStorage`` calls that a write-back).

Files (``journal.wal`` and ``journal-2.wal`` beside ``data.mdb``): records back
to back from offset 0, each a 20-byte header and a payload::

    magic b"ESJ1" | payload length u32 | seq u64 | crc32(seq, payload) u32 | payload

all big-endian. ``seq`` counts records over the store's life; LMDB's meta holds the
seq of the last record it absorbed (``applied``). Records go to one file at a
time. When it is full, the store writes its records back into LMDB in the
background and new records go to the other file, from offset 0, over older
records that LMDB already holds; so commits never wait for a write-back, and each
file is written in place and its size (grown in zeros, doubling) rarely changes:
a flush then has no file metadata to write.

Recovery reads each file from offset 0 and takes its *chain*: records while each
one is whole (magic, length and CRC check) and carries the seq after the one
before. A chain stops at a torn tail (a record being written when the process or
the machine died was never acknowledged) or at an older record left from before
the file was last reused (its seq does not follow). Of the two chains, the
records after ``applied`` are replayed in seq order, as far as they continue it
without a gap. A record whose CRC holds but whose payload cannot be decoded is
corruption, and opening the store fails with a message that says so; nothing is
changed. A restored older copy of ``data.mdb`` with newer journals replays
nothing unless the journals continue exactly its ``applied``.

A failed write or flush is reported and not counted: the next record takes the
same seq and offset, overwriting whatever part of the failed one reached the disk.
(If all of it did and no other record follows, recovery replays it: as with any
database whose flush failed, the outcome of that commit is unknown to the caller.)

The payload is a ``WriteBatch``, encoded with lengths and fixed-width integers
(no pickle: the journal is read back by whatever Python runs after a crash)::

    flags u8 (1 meta, 2 context, 4 log_drop_below)
    [meta: len u32, JSON]  [context: len u32, bytes]  [log_drop_below u64]
    entries: n u32, n key lengths u32, n value lengths u32 (0xFFFFFFFF: a delete),
             the keys back to back, then the values
    log_append: n u32, n seqs u64, n lengths u32, the deltas back to back
    acks, received: n u32 each, then n x (peer len u32, UTF-8, seq u64)
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any

from sync._storage import StorageError, StoreMeta, WriteBatch

__all__ = [
    "JOURNAL_FILES",
    "Journal",
    "decode_batch",
    "decode_meta",
    "encode_batch",
    "encode_meta",
    "encoded_size",
    "fsync_dir",
    "unapplied_records",
]

JOURNAL_FILES = ("journal.wal", "journal-2.wal")  # written in turn (see the docstring)
JOURNAL_FILE = JOURNAL_FILES[0]
MAGIC = b"ESJ1"
_HEADER = struct.Struct(">4sIQI")
_U8, _U32, _U64 = struct.Struct(">B"), struct.Struct(">I"), struct.Struct(">Q")
_DELETED = 0xFFFFFFFF
_FIRST_SIZE = 64 * 1024  # the file's first size; it doubles as records need
_META, _CONTEXT, _DROP = 1, 2, 4


def encode_meta(meta: StoreMeta) -> bytes:
    """Canonical JSON (sorted keys, no spaces), so a later build can read the version."""
    fields = {
        "clean_shutdown": meta.clean_shutdown,
        "epoch": meta.epoch,
        "format_version": meta.format_version,
        "node_id": meta.node_id,
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def decode_meta(raw: bytes, where: Path) -> StoreMeta:
    try:
        fields = json.loads(raw)
        return StoreMeta(
            node_id=_typed(fields, "node_id", str),
            epoch=_typed(fields, "epoch", int),
            clean_shutdown=_typed(fields, "clean_shutdown", bool),
            format_version=_typed(fields, "format_version", int),
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise StorageError(f"store at {where} has unreadable meta ({exc})") from exc


def _typed(fields: dict[str, Any], name: str, kind: type) -> Any:
    value = fields[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"meta field {name!r} is not {kind.__name__}")
    return value


def encode_batch(batch: WriteBatch) -> bytes:
    """The payload of one journal record (see the module docstring)."""
    flags = (
        (_META if batch.meta is not None else 0)
        | (_CONTEXT if batch.context is not None else 0)
        | (_DROP if batch.log_drop_below is not None else 0)
    )
    parts = [_U8.pack(flags)]
    if batch.meta is not None:
        _blob(parts, encode_meta(batch.meta))
    if batch.context is not None:
        _blob(parts, batch.context)
    if batch.log_drop_below is not None:
        parts.append(_U64.pack(max(0, min(batch.log_drop_below, (1 << 64) - 1))))
    keys, values = list(batch.entries), list(batch.entries.values())
    sizes = [_DELETED if value is None else len(value) for value in values]
    _columns(parts, "I", [len(key) for key in keys], sizes)
    # Keys, values and deltas go into the one join below as they are: each byte of a
    # relayed value is copied once here, not joined into a column first.
    parts.extend(keys)
    parts.extend(value for value in values if value is not None)
    seqs, raws = [seq for seq, _ in batch.log_append], [raw for _, raw in batch.log_append]
    _columns(parts, "Q", seqs, [len(raw) for raw in raws])
    parts.extend(raws)
    for positions in (batch.acks, batch.received):
        parts.append(_U32.pack(len(positions)))
        for peer, seq in positions.items():
            _blob(parts, peer.encode())
            parts.append(_U64.pack(seq))
    return b"".join(parts)


def encoded_size(batch: WriteBatch) -> int:
    """``len(encode_batch(batch))``, counted without encoding: a hub's frame is
    plainly too big for the journal, and encoding it to learn that copied it whole."""
    size = 1 + 4 + 4  # flags, then the two column counts
    if batch.meta is not None:
        size += 4 + len(encode_meta(batch.meta))
    if batch.context is not None:
        size += 4 + len(batch.context)
    if batch.log_drop_below is not None:
        size += 8
    size += 8 * len(batch.entries) + sum(len(key) for key in batch.entries)
    size += sum(len(value) for value in batch.entries.values() if value is not None)
    size += sum(12 + len(raw) for _, raw in batch.log_append)
    for positions in (batch.acks, batch.received):
        size += 4 + sum(4 + len(peer.encode()) + 8 for peer in positions)
    return size


def _checksum(seq: int, payload: bytes) -> int:
    """What a record's header holds: the CRC32 of its seq and payload."""
    return zlib.crc32(payload, zlib.crc32(_U64.pack(seq)))


def _columns(parts: list[bytes], first: str, firsts: list[int], sizes: list[int]) -> None:
    """A count, then two columns of integers: one struct call each, not one per row."""
    count = len(sizes)
    parts.append(_U32.pack(count))
    parts.append(struct.pack(f">{count}{first}{count}I", *firsts, *sizes))


def _blob(parts: list[bytes], data: bytes) -> None:
    parts.append(_U32.pack(len(data)))
    parts.append(data)


class _Reader:
    """Reads a payload front to back; running past its end raises ``ValueError``."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, size: int) -> bytes:
        end = self.at + size
        if end > len(self.data):
            raise ValueError(f"payload ends at byte {len(self.data)}, needed {end}")
        chunk, self.at = self.data[self.at : end], end
        return chunk

    def u8(self) -> int:
        value: int = _U8.unpack(self.take(1))[0]
        return value

    def u32(self) -> int:
        value: int = _U32.unpack(self.take(4))[0]
        return value

    def u64(self) -> int:
        value: int = _U64.unpack(self.take(8))[0]
        return value

    def columns(self, first: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """What ``_columns`` wrote: two columns of one count of integers."""
        count = self.u32()
        layout = struct.Struct(f">{count}{first}{count}I")
        values: tuple[int, ...] = layout.unpack(self.take(layout.size))
        return values[:count], values[count:]

    def blob(self) -> bytes:
        return self.take(self.u32())


def decode_batch(payload: bytes, where: Path) -> WriteBatch:
    """The inverse of ``encode_batch``; raises ``ValueError`` on a malformed payload."""
    read = _Reader(payload)
    flags = read.u8()
    batch = WriteBatch()
    if flags & _META:
        batch.meta = decode_meta(read.blob(), where)
    if flags & _CONTEXT:
        batch.context = read.blob()
    if flags & _DROP:
        batch.log_drop_below = read.u64()
    key_sizes, sizes = read.columns("I")
    keys = [read.take(size) for size in key_sizes]
    for key, size in zip(keys, sizes, strict=True):
        batch.entries[key] = None if size == _DELETED else read.take(size)
    seqs, sizes = read.columns("Q")
    batch.log_append = [(seq, read.take(size)) for seq, size in zip(seqs, sizes, strict=True)]
    for positions in (batch.acks, batch.received):
        for _ in range(read.u32()):
            peer = read.blob().decode()
            positions[peer] = read.u64()
    if read.at != len(payload):
        raise ValueError(f"{len(payload) - read.at} bytes left over after the batch")
    return batch


class Journal:
    """The journal file: append a record durably, read back the unapplied ones."""

    def __init__(self, directory: Path, name: str = JOURNAL_FILE) -> None:
        self.path = directory / name
        self.offset = 0  # where the next record goes
        self.records = 0  # records written since the file was last restarted
        self._fd: int | None = None
        try:
            created = not self.path.exists()
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self.size = os.fstat(self._fd).st_size
            if created:  # the file's name must survive a power loss, as its records do
                fsync_dir(directory)
        except OSError as exc:
            self.close()
            raise StorageError(f"cannot open journal {self.path}: {exc}") from exc

    def chain(self) -> list[tuple[int, bytes]]:
        """``(seq, payload)`` of each whole record from offset 0 while each seq
        follows the one before (see the module docstring)."""
        data = self._read_all()
        records: list[tuple[int, bytes]] = []
        offset = 0
        while offset + _HEADER.size <= len(data):
            magic, size, seq, crc = _HEADER.unpack_from(data, offset)
            start, end = offset + _HEADER.size, offset + _HEADER.size + size
            if magic != MAGIC or end > len(data) or (records and seq != records[-1][0] + 1):
                break
            payload = data[start:end]
            if _checksum(seq, payload) != crc:
                break
            records.append((seq, payload))
            offset = end
        return records

    def _read_all(self) -> bytes:
        try:
            with open(self.path, "rb") as file:
                return file.read()
        except OSError as exc:
            raise StorageError(f"cannot read journal {self.path}: {exc}") from exc

    def fits(self, payload: bytes, size: int) -> bool:
        """Whether a record of ``payload`` fits in the first ``size`` bytes after
        the records already written: the journal's bound, which the file grows to."""
        return self.offset + _HEADER.size + len(payload) <= size

    def append(self, seq: int, payload: bytes) -> None:
        """Write one record and flush it; when this returns it survives a crash."""
        assert self._fd is not None, "journal closed"
        header = _HEADER.pack(MAGIC, len(payload), seq, _checksum(seq, payload))
        size = len(header) + len(payload)
        try:
            self._reserve(self.offset + size)
            # Header and payload in one write, without joining them into a copy first.
            written = os.pwritev(self._fd, [header, payload], self.offset)
            if written != size:
                raise OSError(f"short write: {written} of {size} bytes")
            os.fdatasync(self._fd)
        except OSError as exc:
            raise StorageError(
                f"cannot write journal {self.path}, the batch was not committed: {exc}"
            ) from exc
        self.offset += size
        self.records += 1

    def _reserve(self, end: int) -> None:
        """Make the file at least ``end`` bytes long, in zeros, at least doubling it:
        a record then overwrites blocks that exist, and its flush writes no file
        metadata. (Zeros, not fallocate: ext4 marks fallocated blocks unwritten, and
        the first write to each would cost a metadata commit all the same.)"""
        if end <= self.size:
            return
        assert self._fd is not None
        size = max(end, 2 * self.size, _FIRST_SIZE)
        os.pwrite(self._fd, bytes(size - self.size), self.size)
        os.fsync(self._fd)
        self.size = size

    def restart(self) -> None:
        """Every record is in LMDB now: the next one goes to offset 0."""
        self.offset = self.records = 0

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r}, offset={self.offset}, records={self.records})"


def unapplied_records(
    chains: list[list[tuple[int, bytes]]], applied: int
) -> list[tuple[int, bytes]]:
    """The records of ``chains`` that continue ``applied`` without a gap, in order."""
    by_seq = {seq: payload for chain in chains for seq, payload in chain if seq > applied}
    records: list[tuple[int, bytes]] = []
    while (seq := applied + len(records) + 1) in by_seq:
        records.append((seq, by_seq[seq]))
    return records


def fsync_dir(directory: Path) -> None:
    """Make the names of files created in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
