"""DigestTree: fingerprints of a keyspace over ranges of key hashes.

Every key has a *position* (the first 64 bits of the SHA-256 of its storage key)
and a *fingerprint* (64 bits of BLAKE2b over its storage key and its canonical
encoding). A node of the tree is a range of positions: level ``L`` splits the
position space into ``4**L`` equal ranges, down to ``MAX_LEVEL``. A node's
fingerprint is the XOR of the fingerprints of the keys inside it, so two replicas
whose ranges hold equal keys in equal states agree on it, and a change anywhere
inside shows at every level above.

The tree is maintained incrementally, one key at a time (XOR out the old
fingerprint, XOR in the new), from encodings the replica computes anyway when it
persists a key, so catching a peer up never re-reads or re-encodes the state.

It is also maintained lazily: ``set`` only notes a key's newest encoding, and the
hashing and the walk up the levels happen when the tree is next read (a catch-up)
or when ``MAX_PENDING`` keys (or ``MAX_PENDING_BYTES`` of their encodings) wait.
The write path, which runs per update, then costs one dict store; a key written
many times between reads is hashed once. A large encoding (``HOLD_AT_MOST`` bytes
or more) is not held until then: the tree notes the key only and encodes it again
from the state (``encode_current``) when it flushes. Holding it kept a second copy
of every large value in memory, fresh pages each, besides the state's own: a hub
fed 16 KiB values faulted in twice the memory it needed (docs/architecture.md,
"Issue 4's 0.5x bar"), and the copy the store needed is freed after its commit,
so the next frame's encodings reuse its pages. The flush pays one encode (a copy)
per such key, beside the hash it pays anyway.

Only the top of the tree is kept summed: levels 0 to ``SUMMED_LEVEL`` hold each
node's fingerprint and key count, and keys are held in one bucket per node of
that level. A node further down is summed from its bucket when a catch-up reads
it. Keeping every level summed cost a hub about a third of its CPU per received
key: a flush of 65,536 new keys folded changes into some 184,000 nodes, 163,000
of them in the three lowest levels, where nearly every key is a node of its own,
and made a leaf dict per key; now it folds into about 21,500 nodes and fills
16,384 buckets at most. Reading a lower node costs one bucket's scan: about 60
keys at a million keys.
"""

from __future__ import annotations

import hashlib
import importlib
import struct
from collections.abc import Callable, Iterable
from typing import Any, Final

from sync._keyspace import Key, storage_key

# Final: compiled, constants rather than a module-dict lookup per key flushed.
MAX_LEVEL: Final = 10  # 4**10 = ~1M leaf ranges
FANOUT: Final = 4
MAX_PENDING: Final = 65_536  # keys noted but not yet hashed in; bounds the memory they hold
# ... and the bytes of their encodings: 65,536 keys of 16 KiB values held 1 GiB.
MAX_PENDING_BYTES: Final = 64 * 1024 * 1024
HOLD_AT_MOST: Final = 4096  # an encoding this large or larger is encoded again at the flush
SUMMED_LEVEL: Final = 7  # levels 0..7 keep sums per node; the 4**7 = 16,384 buckets are below
_BUCKET_SHIFT: Final = 64 - 2 * SUMMED_LEVEL  # position -> its bucket (summed node) index

Bucket = dict[int, tuple[Key, int]]  # position -> (key, fingerprint)


def position(key: Key) -> int:
    return _position(storage_key(key))


def fingerprint(key: Key, encoded: bytes) -> int:
    return _fingerprint(storage_key(key), encoded)


# The first 8 bytes of a digest as a big-endian integer, read in place: the same
# value as ``int.from_bytes(digest[:8], "big")`` without the slice and the call.
_FIRST_U64: Final = struct.Struct(">Q")


def _plain_sha256() -> Callable[[bytes], Any]:
    """CPython's own SHA-256 where the build has it, else hashlib's (the same digest).

    For a storage key of a few bytes, OpenSSL's set-up per call costs more than the
    hash: about 5,300 instructions a key against 3,700 (callgrind), and a flush
    hashes every key a hub takes in.
    """
    for name in ("_sha256", "_sha2"):  # (3.12 renamed the module)
        try:
            found: Callable[[bytes], Any] = importlib.import_module(name).sha256
        except (ImportError, AttributeError):
            continue
        return found
    return hashlib.sha256


_SHA256: Final = _plain_sha256()


def _position(stored: bytes) -> int:
    first: int = _FIRST_U64.unpack_from(_SHA256(stored).digest())[0]
    return first


# Copied per key: the same hash as ``blake2b(digest_size=8)`` made afresh, without
# parsing the keyword each time (a flush hashes every key it takes in).
_BLAKE2B_8 = hashlib.blake2b(digest_size=8)


def _fingerprint(stored: bytes, encoded: bytes) -> int:
    h = _BLAKE2B_8.copy()
    h.update(stored)
    h.update(encoded)
    fp: int = _FIRST_U64.unpack(h.digest())[0]
    return fp


class DigestTree:
    def __init__(self, encode_current: Callable[[Key], bytes | None] | None = None) -> None:
        """``encode_current(key)``: the key's encoding now (None: gone); without it,
        every encoding is held until the flush."""
        self._encode_current = encode_current
        self._encode_later: set[Key] = set()  # pending keys whose encoding was not held
        # Sparse per level: small keyspaces cost little; absent nodes are (0, 0).
        self.fps: list[dict[int, int]] = [{} for _ in range(SUMMED_LEVEL + 1)]
        self.counts: list[dict[int, int]] = [{} for _ in range(SUMMED_LEVEL + 1)]
        self.buckets: dict[int, Bucket] = {}  # per node of SUMMED_LEVEL; none empty
        self.positions: dict[Key, int] = {}
        # Newest (storage key, encoding) of each key not yet hashed in.
        self._pending: dict[Key, tuple[bytes, bytes | None]] = {}
        self._pending_bytes = 0  # of the encodings in ``_pending``

    def __len__(self) -> int:
        self._flush()
        return self.counts[0].get(0, 0)

    def set(self, key: Key, encoded: bytes | None, stored: bytes | None = None) -> None:
        """Record ``key``'s new encoding (None: the key is gone); ``stored``: its
        storage key, when the caller has it at hand."""
        pending = self._pending
        if encoded is not None and len(encoded) >= HOLD_AT_MOST and self._encode_current:
            self._encode_later.add(key)
            encoded = b""  # not held: encoded again at the flush
        elif self._encode_later:
            self._encode_later.discard(key)
        pending[key] = (storage_key(key) if stored is None else stored, encoded)
        if encoded is not None:
            self._pending_bytes += len(encoded)  # (a key set twice counts twice: flushed early)
        if len(pending) > MAX_PENDING or self._pending_bytes > MAX_PENDING_BYTES:
            self._flush()

    def _flush(self) -> None:
        """Hash the pending keys into their buckets, then fold the changes up once per
        touched node and level (not once per key and level): a flush of many keys
        costs about what ``load`` does for them."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        later, self._encode_later = self._encode_later, set()
        self._pending_bytes = 0
        changes: dict[int, tuple[int, int]] = {}  # bucket -> (xor of fps, key count delta)
        positions, buckets = self.positions, self.buckets
        for key, (stored, held) in pending.items():
            encoded = held
            if later and key in later and self._encode_current is not None:
                encoded = self._encode_current(key)  # too large to hold: encoded now
            pos = positions.get(key)
            if pos is None:
                if encoded is None:
                    continue  # never hashed in, and gone again
                pos = positions[key] = _position(stored)
            node = pos >> _BUCKET_SHIFT
            bucket = buckets.get(node)
            if bucket is None:
                bucket = buckets[node] = {}
            old = bucket.get(pos)
            if encoded is None:
                del positions[key]
                bucket.pop(pos, None)
                if not bucket:
                    del buckets[node]
                if old is None:
                    continue
                change, added = old[1], -1
            else:
                fp = _fingerprint(stored, encoded)
                bucket[pos] = (key, fp)
                change, added = (fp, 1) if old is None else (old[1] ^ fp, 0)
            was = changes.get(node)
            changes[node] = (change, added) if was is None else (was[0] ^ change, was[1] + added)
        self._fold_up(changes)

    def _fold_up(self, changes: dict[int, tuple[int, int]]) -> None:
        """Apply per-bucket changes to the summed nodes, level by level up to the root."""
        for level in range(SUMMED_LEVEL, -1, -1):
            changes = self._apply_to_level(level, changes)

    def _apply_to_level(
        self, level: int, changes: dict[int, tuple[int, int]]
    ) -> dict[int, tuple[int, int]]:
        """Apply per-node changes at ``level``; return them summed per parent node."""
        fps, counts = self.fps[level], self.counts[level]
        parents: dict[int, tuple[int, int]] = {}
        for node, (change, added) in changes.items():
            count = counts.get(node, 0) + added
            if count:
                counts[node] = count
                fps[node] = fps.get(node, 0) ^ change
            else:  # empty ranges are absent: (0, 0)
                counts.pop(node, None)
                fps.pop(node, None)
            parent = node >> 2
            old = parents.get(parent, (0, 0))
            parents[parent] = (old[0] ^ change, old[1] + added)
        return parents

    def load(self, entries: Iterable[tuple[Key, bytes, bytes]]) -> None:
        """Build an empty tree from (key, storage key, encoding) at once: what makes
        opening a store of a million keys quick (the storage keys are at hand)."""
        assert not self.positions and not self._pending, "load() builds a tree from nothing"
        changes: dict[int, tuple[int, int]] = {}
        positions, buckets = self.positions, self.buckets
        for key, stored, encoded in entries:
            pos = positions[key] = _position(stored)
            fp = _fingerprint(stored, encoded)
            node = pos >> _BUCKET_SHIFT
            bucket = buckets.get(node)
            if bucket is None:
                bucket = buckets[node] = {}
            bucket[pos] = (key, fp)
            was = changes.get(node)
            changes[node] = (fp, 1) if was is None else (was[0] ^ fp, was[1] + 1)
        self._fold_up(changes)

    def node(self, level: int, index: int) -> tuple[int, int]:
        """(fingerprint, key count) of a node."""
        self._flush()
        if level <= SUMMED_LEVEL:
            return self.fps[level].get(index, 0), self.counts[level].get(index, 0)
        fp = count = 0
        for _, key_fp in self.items(level, index).values():
            fp ^= key_fp
            count += 1
        return fp, count

    def root(self) -> int:
        self._flush()
        return self.fps[0].get(0, 0)

    def items(self, level: int, index: int) -> Bucket:
        """Every key in a node: position -> (key, fingerprint)."""
        self._flush()
        buckets = self.buckets
        if level >= SUMMED_LEVEL:  # within one bucket
            bucket = buckets.get(index >> 2 * (level - SUMMED_LEVEL), {})
            if level == SUMMED_LEVEL:
                return dict(bucket)
            shift = 64 - 2 * level
            return {pos: item for pos, item in bucket.items() if pos >> shift == index}
        span = FANOUT ** (SUMMED_LEVEL - level)  # buckets under the node
        first = index * span
        out: Bucket = {}
        if span <= len(buckets):
            for node in range(first, first + span):
                found = buckets.get(node)
                if found is not None:
                    out.update(found)
        else:
            for node, bucket in buckets.items():
                if first <= node < first + span:
                    out.update(bucket)
        return out

    def __repr__(self) -> str:
        return f"DigestTree(keys={len(self)}, root={self.root():016x})"


def valid_node(level: int, index: int) -> bool:
    return 0 <= level <= MAX_LEVEL and 0 <= index < FANOUT**level
