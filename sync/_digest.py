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
        """Hash the pending keys into their leaves, then fold the changes up once per
        touched node and level (not once per key and level): a flush of many keys
        costs about what ``load`` does for them."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        changes: dict[int, tuple[int, int]] = {}  # leaf -> (xor of fingerprints, key count delta)
        for key, encoded in pending.items():
            leaf, change, added = self._apply_to_leaf(key, encoded)
            if change or added:
                old = changes.get(leaf, (0, 0))
                changes[leaf] = (old[0] ^ change, old[1] + added)
        self._fold_up(changes)

    def _fold_up(self, changes: dict[int, tuple[int, int]]) -> None:
        for level in range(MAX_LEVEL, -1, -1):
            changes = self._apply_to_level(level, changes)

    def _apply_to_leaf(self, key: Key, encoded: bytes | None) -> tuple[int, int, int]:
        """Record ``key``'s new fingerprint in its leaf bucket: (leaf, xor change, +-1/0)."""
        pos = self.positions.get(key)
        stored = storage_key(key)
        if pos is None:
            if encoded is None:
                return 0, 0, 0
            pos = self.positions[key] = _position(stored)
        leaf = pos >> _LEAF_SHIFT
        bucket = self.leaves.setdefault(leaf, {})
        old = bucket.get(pos)
        if encoded is None:
            bucket.pop(pos, None)
            if not bucket:
                del self.leaves[leaf]
            del self.positions[key]
            return leaf, old[1] if old else 0, -(old is not None)
        new_fp = _fingerprint(stored, encoded)
        bucket[pos] = (key, new_fp)
        return leaf, (old[1] if old else 0) ^ new_fp, old is None

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
        for key, stored, encoded in entries:
            pos = self.positions[key] = _position(stored)
            fp = _fingerprint(stored, encoded)
            leaf = pos >> _LEAF_SHIFT
            self.leaves.setdefault(leaf, {})[pos] = (key, fp)
            old = changes.get(leaf, (0, 0))
            changes[leaf] = (old[0] ^ fp, old[1] + 1)
        self._fold_up(changes)

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
