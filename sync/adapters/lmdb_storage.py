"""``LMDBStorage``: the durable ``Storage``, one LMDB environment in a directory.

On-disk layout (``path`` is a directory)::

    data.mdb, lock.mdb   the LMDB environment (LMDB's own files)
    journal.wal, journal-2.wal   the write-ahead journal (``sync.adapters.journal``)
    edgesync.lock        our advisory lock: flock(LOCK_EX) held while open, holds the pid

One environment with five named sub-databases, so a ``WriteBatch`` touching any
of them commits in a single LMDB write transaction (atomic, fsynced on commit):

    meta     b"meta"    -> canonical JSON of StoreMeta (sorted keys, no spaces)
             b"context" -> the encoded root context, as given
             b"journal" -> seq of the last journal record folded in, big-endian u64
    entries  key bytes  -> value bytes, as given (LMDB sorts keys bytewise, so a
                           prefix is a contiguous range; keys are 1..511 bytes)
    log      seq as big-endian unsigned 8 bytes -> encoded delta (big-endian so
                           byte order is numeric order and a drop is a prefix)
    acks     peer id UTF-8 -> seq as big-endian unsigned 8 bytes
    received peer id UTF-8 -> seq as big-endian unsigned 8 bytes (a store written
                           before this sub-database existed gets it, empty, at open)

Meta is JSON rather than a struct so a future build can read ``format_version``
from a store whose other fields changed, and refuse it with a clear message.

Durability: a commit returns once its batch is on disk, as one record of the
journal (one sequential write, one ``fdatasync``). The batches journalled since
the last write-back wait in memory, folded into one ``WriteBatch``; once the
journal file holds ``journal_bytes``, the next commit hands them to a background
thread, which writes them back into LMDB in one transaction that also records the
last journal seq it holds, and the commit goes on in the other journal file. So a
busy store pays LMDB's two flushes and its page per touched leaf once per many
commits, not once per commit, and no commit waits for a write-back unless the
next file fills before the last write-back ended (then it waits for that one).
Measured, a write-back in the commit path stalled every writer for 5-90 ms.
Reads merge the waiting batches (the ones being written back, then the newer
ones) over what LMDB holds, so they see every commit, never wait for a
write-back, and go on when one cannot be done (a full disk refuses commits, not
reads). A write-back that failed in the background is done again, in the
commit that needs its file, which then fails with its error. At open the
journals' unapplied records are replayed and written back.
``background_write_back=False`` writes back in the commit instead (the simulator,
which runs on one thread).
A batch bigger than an eighth of ``journal_bytes`` (a hub's frame of thousands of
deltas) commits straight to LMDB, after the waiting ones: it pays for LMDB's
flushes by itself, and journalling it would write its bytes twice.
``journal_bytes=0`` commits straight to LMDB, as before the journal existed.

LMDB itself runs with ``sync=True, metasync=True``, no ``writemap`` (with
``writemap`` a stray write through the map could corrupt the file, and LMDB's
ENOSPC handling is weaker), no ``map_async``: a write-back returns only after
LMDB's fsync.

Store formats: format 2 has the journal. A format-1 store is upgraded at open
(its meta rewritten to format 2 before anything is journalled), so an older
build, which would ignore the journal, refuses it instead of losing what only
the journal holds.

Growth: the map starts at ``initial_map_size`` (by default 64 MiB, or the ceiling
if that is smaller). When a batch hits
``MapFullError`` the transaction is aborted (nothing applied), the map grows by
``growth_factor`` up to ``max_map_size`` and the whole batch is retried; at the
ceiling the commit raises ``StoreFullError`` and the store stays readable (and
writable for batches that fit, e.g. ones that trim the log). The data file only
grows as pages are used, so a large map costs address space, not disk. A batch
is journalled only while the space left below the ceiling could take it and all
the batches waiting with it, reckoned at two fresh pages per row plus its bytes
(the most a row can dirty, a split leaf, short of a deep split); otherwise the
waiting batches are written back and the batch commits straight to LMDB, which
is how a store near its ceiling refuses what does not fit and takes what does.

A full disk is not the ceiling but fails the same way: a journal write or an LMDB
commit that fails while the filesystem has less free space than the batch needs
(or with ENOSPC; LMDB reports a short write as EIO) raises ``DiskFullError``,
which says so and how much is free. Nothing of the batch is applied, reads and
sync go on, and writes succeed again once space is freed.

Stale readers: a process killed inside a read transaction leaves its slot in
``lock.mdb``, pinning old pages so they are never reused. ``reader_check()`` at
open clears slots of dead pids (``stale_readers_cleared``). LMDB itself resets the
reader table when the first process opens the environment, so the count is only
nonzero when another process (a backup or inspection tool) kept it open.

Threading: growing the map requires that no transaction is live in this process,
so reads never keep a transaction open across a ``yield`` (scans materialize in
chunks) and one ``LMDBStorage`` must be used from one thread at a time, except
``entries_snapshot``, which may run in another thread while commits go on. The
background write-back only reads the batch handed to it and writes LMDB; every
LMDB write transaction holds ``_lmdb_writing``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import heapq
import json
import logging
import os
import struct
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Self

import lmdb

from sync._storage import (
    STORE_FORMAT,
    DiskFullError,
    IncompatibleStoreError,
    Storage,
    StorageError,
    StoreFullError,
    StoreMeta,
    StoreUsage,
    WriteBatch,
)
from sync.adapters.journal import (
    JOURNAL_FILES,
    Journal,
    decode_batch,
    decode_meta,
    encode_batch,
    encode_meta,
    encoded_size,
    fsync_dir,
    unapplied_records,
)

__all__ = ["JOURNAL_BYTES", "LMDBStorage"]

log = logging.getLogger("edgesync.store")  # a daemon's log: one key=value line per event

MiB = 1 << 20
GiB = 1 << 30
INITIAL_MAP_BYTES = 64 * MiB  # the map's size at open unless told; it grows as needed
LOCK_FILE = "edgesync.lock"
SCAN_CHUNK = 10_000  # rows read per read transaction while scanning
_PAGE = 4096
_SEQ = struct.Struct(">Q")
_META_KEY = b"meta"
_CONTEXT_KEY = b"context"
_JOURNAL_KEY = b"journal"
# The journal's default bound: a write-back when it is full. Measured on this
# machine, 1 MiB of a hub's new keys (13,000 rows) took 23-37 ms to write back and
# 4 MiB (40,000) up to 630 ms; both amortize, and commits go on meanwhile.
JOURNAL_BYTES = 1 * MiB
_UPGRADABLE_FORMATS = (1,)  # read, and rewritten as STORE_FORMAT at open
_ROW_PAGES = 2  # fresh pages one row of a write-back may take (see "Growth")
# A batch bigger than this share of the journal commits straight to LMDB: it pays
# for LMDB's two flushes by itself, and journalling it would write it twice.
_BIG_BATCH_SHARE = 8
_DB_NAMES = (b"meta", b"entries", b"log", b"acks", b"received")


def _encode_seq(seq: int) -> bytes:
    if not 0 <= seq < 1 << 64:
        raise StorageError(f"sequence number {seq} is outside 0..2**64-1")
    return _SEQ.pack(seq)


def _checked_format(raw: bytes | None, where: Path) -> bytes | None:
    """Refuse a store of another format before decoding anything else in it; return
    the meta to store instead when the format is one this build upgrades."""
    if raw is None:
        return None
    try:
        version = json.loads(raw)["format_version"]
    except (ValueError, TypeError, KeyError) as exc:
        raise StorageError(f"store at {where} has unreadable meta ({exc})") from exc
    if version in _UPGRADABLE_FORMATS:
        return encode_meta(replace(decode_meta(raw, where), format_version=STORE_FORMAT))
    if version != STORE_FORMAT:
        raise IncompatibleStoreError(
            f"store at {where} was written in store format {version}; "
            f"this build reads format {STORE_FORMAT} (and upgrades format 1)"
        )
    return None


def _lmdb_cost(batch: WriteBatch, payload: bytes) -> int:
    """The most bytes of map ``batch`` may take when written back (see "Growth"):
    its encoding holds every byte it stores."""
    rows = len(batch.entries) + len(batch.log_append)
    return rows * _ROW_PAGES * _PAGE + len(payload) + _PAGE


DISK_MARGIN_BYTES = 1 << 20  # free space below a batch's size plus this: the disk is full


def _free_bytes(path: Path) -> int | None:
    """Bytes an unprivileged writer may still use on the filesystem of ``path``."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


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


class LMDBStorage(Storage):
    """The durable store: one LMDB environment in the directory ``path``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        initial_map_size: int | None = None,
        max_map_size: int = 8 * GiB,
        growth_factor: float = 2,
        journal_bytes: int = JOURNAL_BYTES,
        background_write_back: bool = True,
    ) -> None:
        if initial_map_size is None:
            initial_map_size = min(INITIAL_MAP_BYTES, max_map_size)
        if not 0 < initial_map_size <= max_map_size or growth_factor <= 1 or journal_bytes < 0:
            raise ValueError(
                "need 0 < initial_map_size <= max_map_size, growth_factor > 1 and "
                f"journal_bytes >= 0, got {initial_map_size}, {max_map_size}, "
                f"{growth_factor}, {journal_bytes}"
            )
        self.path = Path(path)
        self.max_map_size = max_map_size
        self.growth_factor = growth_factor
        self.journal_bytes = journal_bytes
        self.stale_readers_cleared = 0  # reader slots of dead processes cleared at open
        self.journal_replayed = 0  # journal records replayed at open
        self.write_backs = 0
        self._env: lmdb.Environment | None = None
        self._journal: Journal | None = None  # the file commits go to
        self._spare: Journal | None = None  # the other: being written back, or done
        self._applied = 0  # seq of the last journal record LMDB holds
        self._seq = 0  # seq of the last journal record written
        self._unapplied = WriteBatch()  # the records in _journal, folded into one
        self._unapplied_cost = 0  # bytes they may take in LMDB (see "Growth")
        # The records in _spare that a write-back is taking into LMDB, up to seq
        # _flushing_upto; None once LMDB holds them.
        self._flushing: WriteBatch | None = None
        self._flushing_cost = 0
        self._flushing_upto = 0
        self._write_back_done: Future[None] | None = None  # the background write-back
        self._write_backer = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="write-back")
            if background_write_back and journal_bytes
            else None
        )
        self._make_dir()
        self._lock = _DirLock(self.path)
        # Held by a snapshot read for its whole transaction (it may run in another
        # thread), and by what LMDB allows only with no transaction open in this
        # process: growing the map, closing the environment.
        self._no_txn_open = threading.Lock()
        # Held by a commit (the journal files and the overlays), and by a snapshot
        # while it takes the overlays and begins its transaction.
        self._writing = threading.Lock()
        self._lmdb_writing = threading.Lock()  # held by every LMDB write transaction
        try:
            self._open(_round_up(initial_map_size))
            self._replay_journal()
        except BaseException:
            self.close()
            raise

    def _make_dir(self) -> None:
        if self.path.is_dir():
            return
        try:
            self.path.mkdir(parents=True)
            fsync_dir(self.path.parent)
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
                upgraded = _checked_format(txn.get(_META_KEY, db=self._meta_db), self.path)
                if upgraded is not None:
                    txn.put(_META_KEY, upgraded, db=self._meta_db)
                applied = txn.get(_JOURNAL_KEY, db=self._meta_db)
                self._applied = 0 if applied is None else _SEQ.unpack(applied)[0]
        except lmdb.Error as exc:
            raise StorageError(f"cannot open store at {self.path}: {exc}") from exc
        fsync_dir(self.path)  # make the newly created data.mdb's name durable
        if self.stale_readers_cleared:
            log.warning(
                "cleared stale reader slots left by dead processes",
                extra={"store": str(self.path), "slots": self.stale_readers_cleared},
            )

    def _replay_journal(self) -> None:
        """Write back what the journals hold beyond LMDB's ``applied`` (what a crash
        left unapplied), then keep them open for commits, if they use them."""
        self._journal, self._spare = (Journal(self.path, name) for name in JOURNAL_FILES)
        chains = [self._journal.chain(), self._spare.chain()]
        records = unapplied_records(chains, self._applied)
        replayed = WriteBatch()
        for seq, payload in records:
            try:
                replayed.absorb(decode_batch(payload, self.path))
            except (ValueError, UnicodeDecodeError, StorageError) as exc:
                raise StorageError(
                    f"store at {self.path}: journal record {seq} passes its checksum but "
                    f"cannot be read ({exc}); the store was left as it was"
                ) from exc
        self._unapplied = replayed
        self._seq = self._applied + len(records)
        self.journal_replayed = len(records)
        self._write_back_all()
        self._spare.restart()  # nothing in it is beyond what LMDB holds now
        if self.journal_replayed:
            log.info(
                "replayed journal records a crash left unapplied",
                extra={"store": str(self.path), "records": self.journal_replayed},
            )
        if not self.journal_bytes:
            for journal in (self._journal, self._spare):
                journal.close()
            self._journal = self._spare = None

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

    # Reads see the journalled batches not yet written back (``_unapplied``) over
    # what LMDB holds, so they never wait for a write-back, and keep working when
    # one cannot be done (a full disk). A write-back can only move rows from the
    # overlay into LMDB, so a read that looks at the overlay first and LMDB
    # second sees every commit made before it began.

    def _overlay(self) -> WriteBatch:
        """The journalled batches LMDB does not hold yet, folded into one: the newer
        ones over those a write-back is taking in (a copy then). Taken newest
        first, so a write-back that ends meanwhile cannot hide a batch."""
        waiting, flushing = self._unapplied, self._flushing
        if flushing is None:
            return waiting
        merged = WriteBatch()
        merged.absorb(flushing)
        merged.absorb(waiting)
        return merged

    def meta(self) -> StoreMeta | None:
        waiting = self._overlay().meta
        if waiting is not None:
            return waiting
        raw = self._get(self._meta_db, _META_KEY)
        return None if raw is None else decode_meta(raw, self.path)

    def context(self) -> bytes | None:
        waiting = self._overlay().context
        return waiting if waiting is not None else self._get(self._meta_db, _CONTEXT_KEY)

    def entries(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        waiting = _waiting_rows(self._overlay(), prefix)
        return _overlaid(self._scan(self._entries_db, prefix), waiting)

    def entries_snapshot(self, prefix: bytes = b"") -> list[tuple[bytes, bytes]]:
        # The overlay and the transaction are taken together under _writing, so no
        # write-back falls between them; the rows are read after it is released.
        with self._no_txn_open, contextlib.ExitStack() as stack:
            with self._writing:
                waiting = _waiting_rows(self._overlay(), prefix)
                txn = stack.enter_context(self._read())
            rows = _rows(txn, self._entries_db, prefix)
        return list(_overlaid(iter(rows), waiting))

    def log(self) -> Iterator[tuple[int, bytes]]:
        waiting = self._overlay()
        drop = waiting.log_drop_below or 0
        appended = dict(waiting.log_append)
        for key, value in self._scan(self._log_db, b""):
            seq = _SEQ.unpack(key)[0]
            if seq >= drop and seq not in appended:
                yield seq, value
        yield from sorted((seq, raw) for seq, raw in appended.items() if seq >= drop)

    def acks(self) -> dict[str, int]:
        waiting = self._overlay()
        return self._positions(self._acks_db) | waiting.acks

    def received(self) -> dict[str, int]:
        waiting = self._overlay()
        return self._positions(self._received_db) | waiting.received

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
        with self._writing:
            journal = self._journal
            if journal is None:
                self._commit_to_lmdb(batch)
                return
            if self._written_back():
                self._finish_write_back()  # reads need not merge its overlay any more
            limit = self.journal_bytes // _BIG_BATCH_SHARE
            # A hub's frame is plainly big: not encoded only to learn its size.
            payload = encode_batch(batch) if encoded_size(batch) <= limit else None
            if payload is None:  # a big batch
                self._write_back_all()  # raises if LMDB cannot take them: batch refused
                self._commit_to_lmdb(batch)
                return
            cost = _lmdb_cost(batch, payload)
            if not self._has_room(self._unapplied_cost + self._flushing_cost + cost):
                self._write_back_all()  # near the ceiling: all in, or the batch refused
                if not self._has_room(cost):
                    self._commit_to_lmdb(batch)  # the store near full
                    return
            elif not journal.fits(payload, self.journal_bytes):
                self._start_write_back()  # raises if an earlier one cannot be done
            self._journal_append(payload, batch, cost)

    def _journal_append(self, payload: bytes, batch: WriteBatch, cost: int) -> None:
        assert self._journal is not None
        try:
            self._journal.append(self._seq + 1, payload)
        except StorageError as exc:
            full = self._disk_full(str(exc), exc, len(payload))
            if full is None:
                raise
            raise full from exc.__cause__
        self._seq += 1
        self._unapplied.absorb(batch)
        self._unapplied_cost += cost

    def _has_room(self, cost: int) -> bool:
        """Whether LMDB, grown to its ceiling, could surely take ``cost`` more bytes."""
        return self._used_bytes() + cost <= self.max_map_size

    def _used_bytes(self) -> int:
        """LMDB's pages in use: the file's high-water mark (freed pages are reused,
        not returned)."""
        return (self._live_env().info()["last_pgno"] + 1) * _PAGE

    def _start_write_back(self) -> None:
        """Hand the current journal file's records to a write-back (in the background,
        if there is one) and go on in the other file. Call with ``_writing`` held."""
        self._finish_write_back()  # the other file's records must be in LMDB first
        assert self._journal is not None and self._spare is not None
        if self._seq == self._applied:
            return
        self._flushing, self._flushing_cost = self._unapplied, self._unapplied_cost
        self._flushing_upto = self._seq
        self._unapplied, self._unapplied_cost = WriteBatch(), 0
        self._journal, self._spare = self._spare, self._journal
        self._journal.restart()
        if self._write_backer is None:
            self._finish_write_back()
        else:
            batch, upto = self._flushing, self._flushing_upto
            self._write_back_done = self._write_backer.submit(self._write_back, batch, upto)

    def _write_back(self, batch: WriteBatch, upto: int) -> None:
        self._commit_to_lmdb(batch, upto)
        self.write_backs += 1  # only one write-back runs at a time

    def _written_back(self) -> bool:
        """Whether the background write-back ended and did its job."""
        done = self._write_back_done
        return done is not None and done.done() and done.exception() is None

    def _finish_write_back(self) -> None:
        """Wait for the write-back under way; if it failed (or never ran), do it here,
        raising its error (the records stay in the journal and the overlay)."""
        done, self._write_back_done = self._write_back_done, None
        if self._flushing is None:
            return
        failed = None if done is None else done.exception()
        if failed is not None:
            extra = {"store": str(self.path), "reason": str(failed)}
            log.warning("write-back failed, trying again", extra=extra)
        if done is None or failed is not None:
            self._write_back(self._flushing, self._flushing_upto)
        self._applied = self._flushing_upto
        self._flushing, self._flushing_cost = None, 0

    def _write_back_all(self) -> None:
        """Fold every journalled record into LMDB now (the current file's after the
        other's), so both files may be reused. Call with ``_writing`` held."""
        self._finish_write_back()
        if self._seq == self._applied:
            return
        self._write_back(self._unapplied, self._seq)
        self._applied = self._seq
        self._unapplied, self._unapplied_cost = WriteBatch(), 0
        if self._journal is not None:
            self._journal.restart()

    def _commit_to_lmdb(self, batch: WriteBatch, applied: int | None = None) -> None:
        with self._lmdb_writing:
            self._commit_to_lmdb_locked(batch, applied)

    def _commit_to_lmdb_locked(self, batch: WriteBatch, applied: int | None) -> None:
        turned_over = False
        while True:
            try:
                self._write(batch, applied)
                return
            except lmdb.MapFullError as exc:
                # LMDB reuses the pages a transaction frees only from the one after
                # next: if the last one trimmed the log (a write-back may hold the
                # trim), one more lets a retry at the ceiling use that space.
                if self.map_size() < self.max_map_size or turned_over or not self._turn_over():
                    self._grow(exc)  # raises StoreFullError at the ceiling
                turned_over = True
            except lmdb.Error as exc:
                what = f"commit to store at {self.path} failed, nothing was applied"
                full = self._disk_full(what, exc, _lmdb_cost(batch, b""))
                raise full or StorageError(f"{what}: {exc}") from exc

    def _disk_full(self, what: str, exc: Exception, needed: int) -> DiskFullError | None:
        """``DiskFullError`` if a full disk is why a write of ``needed`` bytes failed."""
        free = _free_bytes(self.path)
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        no_space = isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT)
        if no_space or (free is not None and free < needed + DISK_MARGIN_BYTES):
            return DiskFullError(
                f"{what}: the disk holding it is full ({free} bytes free); writes "
                f"succeed again once space is freed, reads and sync go on"
            )
        return None

    def _turn_over(self) -> bool:
        """Commit a transaction that changes nothing; whether there was room for it."""
        try:
            self._write(WriteBatch(), self._applied)
        except lmdb.MapFullError:
            return False
        return True

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

    def _write(self, batch: WriteBatch, applied: int | None) -> None:
        with self._live_env().begin(write=True) as txn:
            if applied is not None:
                txn.put(_JOURNAL_KEY, _encode_seq(applied), db=self._meta_db)
            if batch.meta is not None:
                txn.put(_META_KEY, encode_meta(batch.meta), db=self._meta_db)
            # putmulti: one call for all rows, 2.5x faster than a put each for a
            # write-back of 13,000 (measured with py-lmdb 3.0).
            puts = [(key, value) for key, value in batch.entries.items() if value is not None]
            if len(puts) < len(batch.entries):
                for key, value in batch.entries.items():
                    if value is None:
                        txn.delete(key, db=self._entries_db)
            if puts:
                with txn.cursor(self._entries_db) as cursor:
                    cursor.putmulti(puts)
            if batch.context is not None:
                txn.put(_CONTEXT_KEY, batch.context, db=self._meta_db)
            if batch.log_append:
                with txn.cursor(self._log_db) as cursor:
                    cursor.putmulti([(_encode_seq(seq), raw) for seq, raw in batch.log_append])
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
        log.info("map grown", extra={"store": str(self.path), "from": current, "to": grown})

    # -- lifecycle ---------------------------------------------------------

    def map_size(self) -> int:
        """The current map size in bytes (the store's present size limit)."""
        return int(self._live_env().info()["map_size"])

    def usage(self) -> StoreUsage:
        """LMDB's pages in use against the ceiling, and the journal's bytes not yet
        written back."""
        journal, spare = self._journal, self._spare
        waiting = 0 if journal is None else journal.offset
        if spare is not None and self._flushing is not None and not self._written_back():
            waiting += spare.offset
        return StoreUsage(
            used_bytes=self._used_bytes(),
            max_bytes=self.max_map_size,
            journal_bytes=waiting,
            write_backs=self.write_backs,
        )

    def __enter__(self) -> Self:
        return self

    def close(self) -> None:
        with self._writing:
            try:
                self._write_back_all()
            except StorageError as exc:  # the journal keeps them: the next open replays
                extra = {"store": str(self.path), "reason": str(exc)}
                log.error("journal not written back at close", extra=extra)
        self.abandon()

    def abandon(self) -> None:
        """Close as a killed process leaves the store: what the journal holds is not
        written back, and the next open replays it (the simulator's crash)."""
        with self._writing:
            if self._write_backer is not None:
                self._write_backer.shutdown()  # waits for a write-back under way
            for journal in (self._journal, self._spare):
                if journal is not None:
                    journal.close()
            self._journal = self._spare = None
        with self._no_txn_open:
            env, self._env = self._env, None
            if env is not None:
                env.close()
        self._lock.release()

    def __repr__(self) -> str:
        state = "closed" if self._env is None else f"map_size={self.map_size()}"
        return (
            f"LMDBStorage({str(self.path)!r}, {state}, max_map_size={self.max_map_size}, "
            f"journal={self._journal!r})"
        )


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


def _waiting_rows(waiting: WriteBatch, prefix: bytes) -> list[tuple[bytes, bytes | None]]:
    """The overlay's entries under ``prefix``, in key order (None: deleted)."""
    return sorted((k, v) for k, v in waiting.entries.items() if k.startswith(prefix))


def _overlaid(
    stored: Iterator[tuple[bytes, bytes]], waiting: list[tuple[bytes, bytes | None]]
) -> Iterator[tuple[bytes, bytes]]:
    """Merge two key-ordered streams; ``waiting`` wins a tie and None deletes."""
    ranked = heapq.merge(
        ((key, 0, value) for key, value in waiting), ((key, 1, value) for key, value in stored)
    )
    last = None
    for key, _, value in ranked:  # a key's overlay row comes first: it wins
        if key != last and value is not None:
            yield key, value
        last = key
