"""Storage: what a replica persists, behind one small interface.

A store holds opaque bytes in four places: the store's *meta* (format version,
node id, epoch, whether the last shutdown was clean), the *entries* of the
replicated map (one per key, sorted by key bytes so a prefix is a range), the
encoded root *context*, the *delta log* (sequence number to encoded delta) and
the *acks* (peer to the first sequence number it has not acknowledged) and the
*received* positions (peer to our position in its log: every entry it holds for us
below it is merged here, see ``Replica._on_deltas``; it is told them on each Hello, so
that it resends what a restored copy of this store lost).

``commit`` applies one ``WriteBatch`` atomically and durably: when it returns,
everything in the batch survives a crash (kill -9, power loss), and if it raises,
nothing in the batch was applied. The replica acknowledges a write to its client
only after the batch holding it has committed.

``MemoryStorage`` is the in-memory double (the simulator and tests use it); the
LMDB implementation lives in ``sync.adapters.lmdb_storage``. One contract test
suite runs against both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Self

STORE_FORMAT = 2  # 2: LMDB stores have a write-ahead journal


class StorageError(Exception):
    """The store cannot do what was asked; the message says why and what to do."""


class StoreFullError(StorageError):
    """The store reached its size ceiling: writes are refused, reads and sync go on."""


class DiskFullError(StoreFullError):
    """The filesystem holding the store is full: writes are refused until space is
    freed, reads and sync go on."""


class IncompatibleStoreError(StorageError):
    """The store was written by a format this build cannot read."""


@dataclass(frozen=True)
class StoreMeta:
    node_id: str
    epoch: int
    clean_shutdown: bool = False
    format_version: int = STORE_FORMAT

    def with_clean_shutdown(self, clean: bool) -> StoreMeta:
        return replace(self, clean_shutdown=clean)


@dataclass(frozen=True)
class StoreUsage:
    """How much room a store takes, for operators (``edgesync status``): the bytes
    it uses, the ceiling at which it refuses writes (None: no bound), and what its
    write-ahead journal holds that is not yet written back."""

    used_bytes: int
    max_bytes: int | None
    journal_bytes: int = 0
    write_backs: int = 0


@dataclass
class WriteBatch:
    """Everything one commit changes; empty fields change nothing."""

    meta: StoreMeta | None = None
    entries: dict[bytes, bytes | None] = field(default_factory=dict)  # None deletes
    context: bytes | None = None
    log_append: list[tuple[int, bytes]] = field(default_factory=list)
    log_drop_below: int | None = None  # delete log entries with seq < this
    acks: dict[str, int] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return (
            self.meta is None
            and not self.entries
            and self.context is None
            and not self.log_append
            and self.log_drop_below is None
            and not self.acks
            and not self.received
        )

    def absorb(self, later: WriteBatch) -> None:
        """Fold a later batch into this one, so both commit as one (group commit)."""
        if later.meta is not None:
            self.meta = later.meta
        self.entries.update(later.entries)
        if later.context is not None:
            self.context = later.context
        self.log_append.extend(later.log_append)
        if later.log_drop_below is not None:
            self.log_drop_below = max(self.log_drop_below or 0, later.log_drop_below)
        self.acks.update(later.acks)
        self.received.update(later.received)


class Storage(ABC):
    @abstractmethod
    def meta(self) -> StoreMeta | None:
        """The store's meta, or None for a store never committed to."""

    @abstractmethod
    def entries(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Entries whose key starts with ``prefix``, in key order.

        Consume the iterator before committing again: a scan interleaved with
        commits may or may not see them.
        """

    @abstractmethod
    def entries_snapshot(self, prefix: bytes = b"") -> list[tuple[bytes, bytes]]:
        """Entries whose key starts with ``prefix``, in key order, as of one commit.

        Safe to call from another thread while commits go on (a status digest reads
        a large store this way, off the event loop).
        """

    @abstractmethod
    def context(self) -> bytes | None: ...

    @abstractmethod
    def log(self) -> Iterator[tuple[int, bytes]]:
        """The delta log in sequence order."""

    @abstractmethod
    def acks(self) -> dict[str, int]: ...

    @abstractmethod
    def received(self) -> dict[str, int]: ...

    @abstractmethod
    def commit(self, batch: WriteBatch) -> None:
        """Apply ``batch`` atomically and durably, or raise and apply nothing.

        Within a batch, log appends happen before ``log_drop_below``. Sequence
        numbers, acks and received positions are in 0 .. 2**64-1 and only grow, so
        absorbing a later batch into an earlier one commits the same thing as
        committing both in order.
        """

    @abstractmethod
    def usage(self) -> StoreUsage:
        """Room taken; safe to call from another thread while commits run."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MemoryStorage(Storage):
    """The in-memory double: same contract, no durability beyond the process."""

    def __init__(self) -> None:
        self._meta: StoreMeta | None = None
        self._entries: dict[bytes, bytes] = {}
        self._context: bytes | None = None
        self._log: dict[int, bytes] = {}
        self._acks: dict[str, int] = {}
        self._received: dict[str, int] = {}
        self.commits = 0
        # Odd while a commit changes the entries: a snapshot from another thread reads
        # between two commits, retrying if one ran meanwhile (a seqlock; the core
        # takes no locks, and even one C call can switch threads if it collects garbage).
        self._entries_writes = 0

    def meta(self) -> StoreMeta | None:
        return self._meta

    def entries(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        yield from self.entries_snapshot(prefix)

    def entries_snapshot(self, prefix: bytes = b"") -> list[tuple[bytes, bytes]]:
        while True:
            before = self._entries_writes
            if before % 2 == 0:  # else a commit is halfway: spin till the GIL passes
                try:
                    rows = list(self._entries.items())
                except RuntimeError:  # changed size while copied: a commit ran
                    continue
                if self._entries_writes == before:
                    return sorted((k, v) for k, v in rows if k.startswith(prefix))

    def context(self) -> bytes | None:
        return self._context

    def log(self) -> Iterator[tuple[int, bytes]]:
        for seq in sorted(self._log):
            yield seq, self._log[seq]

    def acks(self) -> dict[str, int]:
        return dict(self._acks)

    def received(self) -> dict[str, int]:
        return dict(self._received)

    def commit(self, batch: WriteBatch) -> None:
        # Each part only if the batch has it, each looked at once (no ``is_empty`` first):
        # the simulator commits after every message, most batches hold an ack position
        # or two, and this runs interpreted.
        applied = False
        if batch.entries:
            self._entries_writes += 1
            try:
                for key, value in batch.entries.items():
                    if value is None:
                        self._entries.pop(key, None)
                    else:
                        self._entries[key] = value
            finally:
                self._entries_writes += 1
            applied = True
        if batch.meta is not None:
            self._meta = batch.meta
            applied = True
        if batch.context is not None:
            self._context = batch.context
            applied = True
        if batch.log_append:
            for seq, raw in batch.log_append:
                self._log[seq] = raw
            applied = True
        if batch.log_drop_below is not None:
            for seq in [s for s in self._log if s < batch.log_drop_below]:
                del self._log[seq]
            applied = True
        if batch.acks:
            self._acks.update(batch.acks)
            applied = True
        if batch.received:
            self._received.update(batch.received)
            applied = True
        if applied:  # an empty batch is no commit
            self.commits += 1

    def usage(self) -> StoreUsage:
        """The bytes of the keys, values and log records held: no bound but memory.
        (Each copy is one C call over bytes and ints, which no other thread breaks
        into; the total may straddle a commit, which a usage figure can afford.)"""
        entries, log = list(self._entries.items()), list(self._log.values())
        used = sum(len(k) + len(v) for k, v in entries) + sum(8 + len(v) for v in log)
        return StoreUsage(used_bytes=used, max_bytes=None)

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"MemoryStorage(entries={len(self._entries)}, log={len(self._log)})"
