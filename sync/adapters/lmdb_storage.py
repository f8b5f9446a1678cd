"""``LMDBStorage``: the durable ``Storage``, one LMDB environment in a directory.

On-disk layout (``path`` is a directory)::

    data.mdb, lock.mdb   the LMDB environment (LMDB's own files)
    edgesync.lock        our advisory lock: flock(LOCK_EX) held while open, holds the pid

One environment with five named sub-databases, so a ``WriteBatch`` touching any
of them commits in a single LMDB write transaction (atomic, fsynced on commit):

    meta     b"meta"    -> canonical JSON of StoreMeta (sorted keys, no spaces)
             b"context" -> the encoded root context, as given
    entries  key bytes  -> value bytes, as given (LMDB sorts keys bytewise, so a
                           prefix is a contiguous range; keys are 1..511 bytes)
    log      seq as big-endian unsigned 8 bytes -> encoded delta (big-endian so
                           byte order is numeric order and a drop is a prefix)
    acks     peer id UTF-8 -> seq as big-endian unsigned 8 bytes
    received peer id UTF-8 -> seq as big-endian unsigned 8 bytes (a store written
                           before this sub-database existed gets it, empty, at open)

Meta is JSON rather than a struct so a future build can read ``format_version``
from a store whose other fields changed, and refuse it with a clear message.

Durability: ``sync=True, metasync=True``, no ``writemap`` (with ``writemap`` a
stray write through the map could corrupt the file, and LMDB's ENOSPC handling
is weaker), no ``map_async``. A commit returns only after LMDB's fsync.

Growth: the map starts at ``initial_map_size``. When a batch hits
``MapFullError`` the transaction is aborted (nothing applied), the map grows by
``growth_factor`` up to ``max_map_size`` and the whole batch is retried; at the
ceiling the commit raises ``StoreFullError`` and the store stays readable (and
writable for batches that fit, e.g. ones that trim the log). The data file only
grows as pages are used, so a large map costs address space, not disk.

Stale readers: a process killed inside a read transaction leaves its slot in
``lock.mdb``, pinning old pages so they are never reused. ``reader_check()`` at
open clears slots of dead pids (``stale_readers_cleared``). LMDB itself resets the
reader table when the first process opens the environment, so the count is only
nonzero when another process (a backup or inspection tool) kept it open.

Threading: growing the map requires that no transaction is live in this process,
so reads never keep a transaction open across a ``yield`` (scans materialize in
chunks) and one ``LMDBStorage`` must be used from one thread at a time.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import lmdb

from sync._storage import (
    STORE_FORMAT,
    IncompatibleStoreError,
    Storage,
    StorageError,
    StoreFullError,
    StoreMeta,
    WriteBatch,
)

__all__ = ["LMDBStorage"]

log = logging.getLogger(__name__)

MiB = 1 << 20
GiB = 1 << 30
LOCK_FILE = "edgesync.lock"
SCAN_CHUNK = 10_000  # rows read per read transaction while scanning
_PAGE = 4096
_SEQ = struct.Struct(">Q")
_META_KEY = b"meta"
_CONTEXT_KEY = b"context"
_DB_NAMES = (b"meta", b"entries", b"log", b"acks", b"received")


def _encode_seq(seq: int) -> bytes:
    if not 0 <= seq < 1 << 64:
        raise StorageError(f"sequence number {seq} is outside 0..2**64-1")
    return _SEQ.pack(seq)


def _encode_meta(meta: StoreMeta) -> bytes:
    fields = {
        "clean_shutdown": meta.clean_shutdown,
        "epoch": meta.epoch,
        "format_version": meta.format_version,
        "node_id": meta.node_id,
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def _decode_meta(raw: bytes, where: Path) -> StoreMeta:
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


def _check_format(raw: bytes | None, where: Path) -> None:
    """Refuse a store of another format before decoding anything else in it."""
    if raw is None:
        return
    try:
        version = json.loads(raw)["format_version"]
    except (ValueError, TypeError, KeyError) as exc:
        raise StorageError(f"store at {where} has unreadable meta ({exc})") from exc
    if version != STORE_FORMAT:
        raise IncompatibleStoreError(
            f"store at {where} was written in store format {version}; "
            f"this build reads format {STORE_FORMAT}"
        )


def _round_up(size: float) -> int:
    return -(-int(size) // _PAGE) * _PAGE


class _DirLock:
    """An exclusive flock on ``<dir>/edgesync.lock`` holding the owner's pid."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_FILE
        try:
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot open lock file {self.path}: {exc}") from exc
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = self._holder()
            self.release()
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StorageError(f"cannot lock store {directory}: {exc}") from exc
            who = f"pid {holder}" if holder else "pid unknown"
            raise StorageError(f"store {directory} is in use by another process ({who})") from None
        with contextlib.suppress(OSError):  # the pid is a courtesy: a full disk must not
            os.ftruncate(self._fd, 0)  # stop the store from opening
            os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def _holder(self) -> str:
        assert self._fd is not None
        return os.pread(self._fd, 32, 0).decode(errors="replace").strip()

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor releases the flock


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LMDBStorage(Storage):
    """The durable store: one LMDB environment in the directory ``path``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        initial_map_size: int = 64 * MiB,
        max_map_size: int = 8 * GiB,
        growth_factor: float = 2,
    ) -> None:
        if not 0 < initial_map_size <= max_map_size or growth_factor <= 1:
            raise ValueError(
                "need 0 < initial_map_size <= max_map_size and growth_factor > 1, got "
                f"{initial_map_size}, {max_map_size}, {growth_factor}"
            )
        self.path = Path(path)
        self.max_map_size = max_map_size
        self.growth_factor = growth_factor
        self.stale_readers_cleared = 0  # reader slots of dead processes cleared at open
        self._env: lmdb.Environment | None = None
        self._make_dir()
        self._lock = _DirLock(self.path)
        # Held by a snapshot read for its whole transaction (it may run in another
        # thread), and by what LMDB allows only with no transaction open in this
        # process: growing the map, closing the environment.
        self._no_txn_open = threading.Lock()
        try:
            self._open(_round_up(initial_map_size))
        except BaseException:
            self.close()
            raise

    def _make_dir(self) -> None:
        if self.path.is_dir():
            return
        try:
            self.path.mkdir(parents=True)
            _fsync_dir(self.path.parent)
        except OSError as exc:
            raise StorageError(f"cannot create store directory {self.path}: {exc}") from exc

    def _open(self, map_size: int) -> None:
        try:
            self._env = lmdb.open(
                str(self.path),
                map_size=map_size,
                max_dbs=len(_DB_NAMES),
                sync=True,
                metasync=True,
                readahead=False,
                mode=0o600,
            )
            self.stale_readers_cleared = self._env.reader_check()
            # One write txn: if the format check raises, it aborts and a foreign
            # store is left exactly as it was (no sub-databases created in it).
            with self._env.begin(write=True) as txn:
                dbs = [self._env.open_db(name, txn=txn) for name in _DB_NAMES]
                self._meta_db, self._entries_db, self._log_db, self._acks_db = dbs[:4]
                self._received_db = dbs[4]
                _check_format(txn.get(_META_KEY, db=self._meta_db), self.path)
        except lmdb.Error as exc:
            raise StorageError(f"cannot open store at {self.path}: {exc}") from exc
        _fsync_dir(self.path)  # make the newly created data.mdb's name durable
        if self.stale_readers_cleared:
            log.warning(
                "store %s: cleared %d stale reader slot(s) left by dead processes",
                self.path,
                self.stale_readers_cleared,
            )

    # -- reads -------------------------------------------------------------

    def _live_env(self) -> lmdb.Environment:
        if self._env is None:
            raise StorageError(f"store at {self.path} is closed")
        return self._env

    @contextlib.contextmanager
    def _read(self) -> Iterator[lmdb.Transaction[bytes]]:
        try:
            with self._live_env().begin() as txn:
                yield txn
        except lmdb.Error as exc:
            raise StorageError(f"cannot read store at {self.path}: {exc}") from exc

    def _get(self, db: lmdb._Database, key: bytes) -> bytes | None:
        with self._read() as txn:
            value: bytes | None = txn.get(key, db=db)
        return value

    def meta(self) -> StoreMeta | None:
        raw = self._get(self._meta_db, _META_KEY)
        return None if raw is None else _decode_meta(raw, self.path)

    def context(self) -> bytes | None:
        return self._get(self._meta_db, _CONTEXT_KEY)

    def entries(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        return self._scan(self._entries_db, prefix)

    def entries_snapshot(self, prefix: bytes = b"") -> list[tuple[bytes, bytes]]:
        with self._no_txn_open, self._read() as txn:
            return _rows(txn, self._entries_db, prefix)

    def log(self) -> Iterator[tuple[int, bytes]]:
        for key, value in self._scan(self._log_db, b""):
            yield _SEQ.unpack(key)[0], value

    def acks(self) -> dict[str, int]:
        return self._positions(self._acks_db)

    def received(self) -> dict[str, int]:
        return self._positions(self._received_db)

    def _positions(self, db: lmdb._Database) -> dict[str, int]:
        return {key.decode(): _SEQ.unpack(value)[0] for key, value in self._scan(db)}

    def _scan(self, db: lmdb._Database, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Rows whose key starts with ``prefix``, in key order, ``SCAN_CHUNK`` per read txn.

        No transaction stays open across a ``yield``: each chunk is read in its own
        transaction and the next resumes after the last key seen. A commit made while
        a scan is suspended may therefore show up in the later chunks.
        """
        after: bytes | None = None
        while True:
            chunk = self._chunk(db, prefix, after)
            yield from chunk
            if len(chunk) < SCAN_CHUNK:
                return
            after = chunk[-1][0]

    def _chunk(
        self, db: lmdb._Database, prefix: bytes, after: bytes | None
    ) -> list[tuple[bytes, bytes]]:
        with self._read() as txn:
            return _rows(txn, db, prefix, after, SCAN_CHUNK)

    # -- writes ------------------------------------------------------------

    def commit(self, batch: WriteBatch) -> None:
        if batch.is_empty():
            return
        self._validate(batch)
        while True:
            try:
                self._write(batch)
                return
            except lmdb.MapFullError as exc:
                self._grow(exc)
            except lmdb.Error as exc:
                raise StorageError(
                    f"commit to store at {self.path} failed, nothing was applied: {exc}"
                ) from exc

    def _validate(self, batch: WriteBatch) -> None:
        limit = self._live_env().max_key_size()
        peers = [*batch.acks, *batch.received]
        keys = [*batch.entries, *(peer.encode() for peer in peers)]
        for key in keys:
            if not 0 < len(key) <= limit:
                raise StorageError(
                    f"key {key[:32]!r}{'...' if len(key) > 32 else ''} ({len(key)} bytes) "
                    f"cannot be stored: LMDB keys must be 1..{limit} bytes"
                )
        for seq, _ in batch.log_append:
            _encode_seq(seq)
        for seq in [*batch.acks.values(), *batch.received.values()]:
            _encode_seq(seq)

    def _write(self, batch: WriteBatch) -> None:
        with self._live_env().begin(write=True) as txn:
            if batch.meta is not None:
                txn.put(_META_KEY, _encode_meta(batch.meta), db=self._meta_db)
            for key, value in batch.entries.items():
                if value is None:
                    txn.delete(key, db=self._entries_db)
                else:
                    txn.put(key, value, db=self._entries_db)
            if batch.context is not None:
                txn.put(_CONTEXT_KEY, batch.context, db=self._meta_db)
            for seq, raw in batch.log_append:
                txn.put(_encode_seq(seq), raw, db=self._log_db)
            if batch.log_drop_below is not None:
                self._drop_log_below(txn, batch.log_drop_below)
            for peer, seq in batch.acks.items():
                txn.put(peer.encode(), _encode_seq(seq), db=self._acks_db)
            for peer, seq in batch.received.items():
                txn.put(peer.encode(), _encode_seq(seq), db=self._received_db)

    def _drop_log_below(self, txn: lmdb.Transaction[bytes], bound: int) -> None:
        if bound <= 0:
            return
        stop = _encode_seq(min(bound, (1 << 64) - 1))
        with txn.cursor(self._log_db) as cursor:
            found = cursor.first()
            while found and cursor.key() < stop:
                found = cursor.delete()  # deletes and moves to the next row

    def _grow(self, full: lmdb.MapFullError) -> None:
        env = self._live_env()
        current = env.info()["map_size"]
        if current >= self.max_map_size:
            raise StoreFullError(
                f"store at {self.path} is full: it reached its ceiling of "
                f"{self.max_map_size} bytes ({self.max_map_size / MiB:.0f} MiB); the batch was "
                "not applied. Raise --max-store-size or free space (let peers ack so the "
                "log can be trimmed)"
            ) from full
        grown = min(self.max_map_size, _round_up(current * self.growth_factor))
        try:
            with self._no_txn_open:
                env.set_mapsize(grown)
        except lmdb.Error as exc:
            raise StorageError(
                f"store at {self.path} is full at {current} bytes and cannot grow: {exc}"
            ) from exc
        log.info("store %s: map grown from %d to %d bytes", self.path, current, grown)

    # -- lifecycle ---------------------------------------------------------

    def map_size(self) -> int:
        """The current map size in bytes (the store's present size limit)."""
        return int(self._live_env().info()["map_size"])

    def __enter__(self) -> Self:
        return self

    def close(self) -> None:
        with self._no_txn_open:
            env, self._env = self._env, None
            if env is not None:
                env.close()
        self._lock.release()

    def __repr__(self) -> str:
        state = "closed" if self._env is None else f"map_size={self.map_size()}"
        return f"LMDBStorage({str(self.path)!r}, {state}, max_map_size={self.max_map_size})"


def _rows(
    txn: lmdb.Transaction[bytes],
    db: lmdb._Database,
    prefix: bytes,
    after: bytes | None = None,
    limit: int | None = None,
) -> list[tuple[bytes, bytes]]:
    """Rows whose key starts with ``prefix`` (past ``after``, at most ``limit``), in order."""
    rows: list[tuple[bytes, bytes]] = []
    with txn.cursor(db) as cursor:
        found = cursor.set_range(prefix if after is None else after)
        if found and after is not None and cursor.key() == after:
            found = cursor.next()
        while found and (limit is None or len(rows) < limit):
            key, value = cursor.item()
            if not key.startswith(prefix):
                break
            rows.append((key, value))
            found = cursor.next()
    return rows
