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
or when ``MAX_PENDING`` keys wait. The write path, which runs per update, then
costs one dict store; a key written many times between reads is hashed once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sync._keyspace import Key, storage_key

MAX_LEVEL = 10  # 4**10 = ~1M leaf ranges
FANOUT = 4
_LEAF_SHIFT = 64 - 2 * MAX_LEVEL
MAX_PENDING = 65_536  # keys noted but not yet hashed in; bounds the memory they hold


def position(key: Key) -> int:
    return _position(storage_key(key))


def fingerprint(key: Key, encoded: bytes) -> int:
    return _fingerprint(storage_key(key), encoded)


def _position(stored: bytes) -> int:
    return int.from_bytes(hashlib.sha256(stored).digest()[:8], "big")


def _fingerprint(stored: bytes, encoded: bytes) -> int:
    h = hashlib.blake2b(stored, digest_size=8)
    h.update(encoded)
    return int.from_bytes(h.digest(), "big")


class DigestTree:
    def __init__(self) -> None:
        # Sparse per level: small keyspaces cost little; absent nodes are (0, 0).
        self.fps: list[dict[int, int]] = [{} for _ in range(MAX_LEVEL + 1)]
        self.counts: list[dict[int, int]] = [{} for _ in range(MAX_LEVEL + 1)]
        self.leaves: dict[int, dict[int, tuple[Key, int]]] = {}  # leaf -> pos -> (key, fp)
        self.positions: dict[Key, int] = {}
        self._pending: dict[Key, bytes | None] = {}  # newest encodings not yet hashed in

    def __len__(self) -> int:
        self._flush()
        return self.counts[0].get(0, 0)

    def set(self, key: Key, encoded: bytes | None) -> None:
        """Record ``key``'s new encoding (None: the key is gone)."""
        pending = self._pending
        pending[key] = encoded
        if len(pending) > MAX_PENDING:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, {}
            for key, encoded in pending.items():
                self._apply(key, encoded)

    def _apply(self, key: Key, encoded: bytes | None) -> None:
        pos = self.positions.get(key)
        if pos is None:
            if encoded is None:
                return
            pos = self.positions[key] = position(key)
        leaf = pos >> _LEAF_SHIFT
        bucket = self.leaves.setdefault(leaf, {})
        old = bucket.get(pos)
        new_fp = 0 if encoded is None else fingerprint(key, encoded)
        change = (old[1] if old else 0) ^ new_fp
        added = (encoded is not None) - (old is not None)
        if encoded is None:
            bucket.pop(pos, None)
            del self.positions[key]
        else:
            bucket[pos] = (key, new_fp)
        for level in range(MAX_LEVEL + 1):
            node = leaf >> (2 * (MAX_LEVEL - level))
            fps, counts = self.fps[level], self.counts[level]
            fps[node] = fps.get(node, 0) ^ change
            count = counts.get(node, 0) + added
            if count:
                counts[node] = count
            else:
                counts.pop(node, None)
                fps.pop(node, None)

    def load(self, entries: Iterable[tuple[Key, bytes, bytes]]) -> None:
        """Build an empty tree from (key, storage key, encoding) at once.

        Equal to ``set`` per key, but each key touches only its leaf; the levels
        above are then folded from the level below, once per node rather than once
        per key and level: what makes opening a store of a million keys quick.
        """
        assert not self.positions and not self._pending, "load() builds a tree from nothing"
        leaf_fps, leaf_counts = self.fps[MAX_LEVEL], self.counts[MAX_LEVEL]
        for key, stored, encoded in entries:
            pos = self.positions[key] = _position(stored)
            fp = _fingerprint(stored, encoded)
            leaf = pos >> _LEAF_SHIFT
            bucket = self.leaves.get(leaf)
            if bucket is None:
                bucket = self.leaves[leaf] = {}
            bucket[pos] = (key, fp)
            leaf_fps[leaf] = leaf_fps.get(leaf, 0) ^ fp
            leaf_counts[leaf] = leaf_counts.get(leaf, 0) + 1
        for level in range(MAX_LEVEL - 1, -1, -1):
            fps, counts = self.fps[level], self.counts[level]
            for child, count in self.counts[level + 1].items():
                node = child >> 2
                fps[node] = fps.get(node, 0) ^ self.fps[level + 1][child]
                counts[node] = counts.get(node, 0) + count

    def node(self, level: int, index: int) -> tuple[int, int]:
        """(fingerprint, key count) of a node."""
        self._flush()
        return self.fps[level].get(index, 0), self.counts[level].get(index, 0)

    def root(self) -> int:
        self._flush()
        return self.fps[0].get(0, 0)

    def items(self, level: int, index: int) -> dict[int, tuple[Key, int]]:
        """Every key in a node: position -> (key, fingerprint)."""
        self._flush()
        span = FANOUT ** (MAX_LEVEL - level)
        first = index * span
        out: dict[int, tuple[Key, int]] = {}
        if span <= len(self.leaves):
            for leaf in range(first, first + span):
                out.update(self.leaves.get(leaf, {}))
        else:
            for leaf, bucket in self.leaves.items():
                if first <= leaf < first + span:
                    out.update(bucket)
        return out

    def __repr__(self) -> str:
        return f"DigestTree(keys={len(self)}, root={self.root():016x})"


def valid_node(level: int, index: int) -> bool:
    return 0 <= level <= MAX_LEVEL and 0 <= index < FANOUT**level
