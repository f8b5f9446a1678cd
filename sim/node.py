"""One simulated process: a real ``Replica`` over a real store, and its lifecycle.

The node plays the daemon's driver: every input is followed by ``flush``, which
commits the ``Ready``'s batch *before* handing back the messages to send, so an
acknowledged write, or a received delta, is in the store before anyone hears of it.

Process faults act on the store as a crash would:

- ``crash`` drops the replica from memory without a clean shutdown and closes the
  store (for LMDB, the environment and its lock: a restart reopens the files);
- ``restart`` rebuilds the replica from what the store holds;
- ``wipe`` (crash with amnesia) replaces the store with an empty one;
- ``rollback`` replaces it with the copy taken at the last ``snapshot`` (a restored
  backup, or a disk that lost its last writes);
- ``pause`` keeps everything but stops the process (messages wait, writes time out).

Each node's physical clock is the simulator's virtual time plus an offset (skew
and jumps), read by the replica and its hybrid logical clock.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from pathlib import Path

from sync._crdt import decode
from sync._digest import _fingerprint
from sync._keyspace import Keyspace, parse_storage_key
from sync._policy import EVERYTHING
from sync._replica import Replica, ReplicaConfig
from sync._storage import MemoryStorage, Storage, WriteBatch
from sync.adapters.lmdb_storage import LMDBStorage


def dump(storage: Storage) -> WriteBatch:
    """Everything a store holds, as one batch that recreates it in an empty store."""
    batch = WriteBatch(meta=storage.meta(), context=storage.context())
    batch.entries = dict(storage.entries())
    batch.log_append = list(storage.log())
    batch.acks = storage.acks()
    batch.received = storage.received()  # a real backup keeps the positions too
    return batch


def stored_state(storage: Storage) -> Keyspace:
    """The keyspace a store holds (what a replica opened on it would start from)."""
    state = Keyspace()
    for raw_key, raw_value in storage.entries():
        state.entries[parse_storage_key(raw_key)] = decode(raw_value)
    return state


def fingerprint(key: bytes, encoded: bytes) -> int:
    """The digest tree's fingerprint of a stored key (``sync._digest``), remembered."""
    seen = FINGERPRINTS.get(encoded)
    if seen is not None and seen[0] == key:
        return seen[1]
    fp = _fingerprint(key, encoded)
    if len(encoded) <= _FINGERPRINTED_MAX_BYTES:
        if len(FINGERPRINTS) >= _FINGERPRINTED_MAX:
            FINGERPRINTS.clear()
        FINGERPRINTS[encoded] = (key, fp)
    return fp


# Fingerprints of recently stored encodings, by content (with the key they were stored
# under): replicas that agree store equal encodings of a key, so a change that reaches
# the whole fleet is hashed once, not once a node (a lookup where a BLAKE2b costs
# ten times as much). A pure function of the bytes: what it holds changes no root.
FINGERPRINTS: dict[bytes, tuple[bytes, int]] = {}
_FINGERPRINTED_MAX = 4096
_FINGERPRINTED_MAX_BYTES = 4096


class SimNode:
    def __init__(
        self,
        name: str,
        role: str,
        *,
        links: dict[str, bool],  # peer -> that peer is an edge (may send only its own writes)
        now: Callable[[], int],
        rng: random.Random,
        store_dir: Path | None,  # None: MemoryStorage
        touched: set[str] | None = None,  # gets the name whenever the node may have changed
    ) -> None:
        self.name = name
        self.role = role
        self.links = dict(sorted(links.items()))
        self.offset_ms = 0
        self._now = now
        self._rng = rng
        self.store_dir = store_dir
        self.config = ReplicaConfig(relay=role != "edge")
        self.storage: Storage | None = self._new_storage()
        self.replica: Replica | None = None
        self.last_state = Keyspace()  # what the store holds while the node is down
        self.paused = False
        self.snapshot: WriteBatch | None = None
        self.incarnation = 0  # bumped when the store loses state (wipe, rollback)
        self.version = 0  # bumped whenever the state in memory may have changed
        self.touched = touched if touched is not None else set()
        self.changed: set[bytes] | None = None  # storage keys changed since read; None: all
        # The root of the replica's digest tree, kept here from what each commit writes
        # (see ``root``); per storage key, its fingerprint.
        self.root = 0
        self._fingerprints: dict[bytes, int] = {}
        # Not yet started: the simulator calls open() and sends the Hellos it returns.

    # ---- clock and storage ---------------------------------------------------------

    def clock(self) -> int:
        return self._now() + self.offset_ms

    def new_epoch(self) -> int:
        return self._rng.getrandbits(64)

    def _new_storage(self, contents: WriteBatch | None = None) -> Storage:
        if self.store_dir is None:
            storage: Storage = MemoryStorage()
        else:
            shutil.rmtree(self.store_dir, ignore_errors=True)
            storage = LMDBStorage(
                self.store_dir, initial_map_size=4 << 20, background_write_back=False
            )
        if contents is not None:
            storage.commit(contents)
        return storage

    # ---- lifecycle ---------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self.replica is not None

    @property
    def live(self) -> bool:
        """Up and not paused: takes writes, messages and ticks."""
        return self.replica is not None and not self.paused

    def state(self) -> Keyspace:
        """The node's state: in memory when up, else what its store holds."""
        return self.replica.keyspace if self.replica is not None else self.last_state

    def open(self) -> list[tuple[str, bytes]]:
        """Start the process from its store and introduce it on every link."""
        storage = self._ensure_storage()
        self._fingerprints = {k: fingerprint(k, v) for k, v in storage.entries()}
        self.root = 0
        for fp in self._fingerprints.values():
            self.root ^= fp
        replica = Replica.open(storage, self.name, self.clock, self.new_epoch, self.config)
        self.replica = replica
        self.version += 1
        self.touched.add(self.name)
        self.changed = None
        self.paused = False
        for peer, peer_is_edge in self.links.items():
            replica.connect(peer, EVERYTHING, certified_node=peer, own_writes_only=peer_is_edge)
        return self.flush()

    def crash(self) -> None:
        if self.replica is None:
            return
        self.touched.add(self.name)
        self.last_state = self.replica.keyspace
        self.replica = None
        self.paused = False
        if isinstance(self.storage, LMDBStorage):
            self.storage.abandon()  # as the process's death would; reopened by open()
            self.storage = None

    def take_snapshot(self) -> None:
        self.snapshot = dump(self._ensure_storage())

    def lose_state(self, rollback: bool) -> None:
        """Crash, and come back to an empty store (wipe) or the last snapshot."""
        self.crash()
        if self.storage is not None:
            self.storage.close()
        contents = self.snapshot if rollback else None
        self.storage = self._new_storage(contents)
        self.incarnation += 1
        self.last_state = stored_state(self.storage)

    def _ensure_storage(self) -> Storage:
        if self.storage is None:
            assert self.store_dir is not None  # only an LMDB store is ever closed
            self.storage = LMDBStorage(
                self.store_dir, initial_map_size=4 << 20, background_write_back=False
            )
        return self.storage

    def close(self) -> None:
        if self.storage is not None:
            self.storage.close()
            self.storage = None

    # ---- driving -------------------------------------------------------------------------

    def flush(self) -> list[tuple[str, bytes]]:
        """Commit what the replica's inputs call for; return the messages to send."""
        assert self.replica is not None
        ready = self.replica.ready()
        batch = ready.batch
        storage = self.storage if self.storage is not None else self._ensure_storage()
        storage.commit(batch)
        written = batch.entries
        if written:  # a key changed: observers must look again
            self.version += 1
            self.touched.add(self.name)
            if self.changed is not None:
                self.changed.update(written)
            # Keep ``root`` equal to ``replica.tree.root()``: the XOR of every stored
            # key's fingerprint (sync/_digest.py), from the very encodings the tree is
            # given. The simulator samples every touched node's root each simulated
            # second; asking the tree would fold each change up all its levels, which
            # the replica itself does only when a catch-up reads the tree. Here a
            # change costs one hash.
            fingerprints, root, known = self._fingerprints, self.root, FINGERPRINTS
            for key, encoded in written.items():
                root ^= fingerprints.pop(key, 0)  # XOR out the old fingerprint, if any
                if encoded is not None:  # (None: deleted)
                    seen = known.get(encoded)  # fingerprint(), inlined: once a change
                    if seen is not None and seen[0] == key:
                        fp = seen[1]
                    else:
                        fp = fingerprint(key, encoded)
                    fingerprints[key] = fp
                    root ^= fp
            self.root = root
        return ready.messages

    def take_changes(self) -> set[bytes] | None:
        """The storage keys changed since the last call (None: any may have, it restarted)."""
        changed, self.changed = self.changed, set()
        return changed

    def reconnect(self, peer: str) -> list[tuple[str, bytes]]:
        """The link to ``peer`` was re-established: say Hello afresh."""
        assert self.replica is not None
        self.replica.disconnect(peer)
        self.replica.connect(
            peer, EVERYTHING, certified_node=peer, own_writes_only=self.links[peer]
        )
        return self.flush()

    def __repr__(self) -> str:
        state = "paused" if self.paused else "up" if self.up else "down"
        return f"SimNode({self.name!r}, {self.role}, {state}, offset={self.offset_ms} ms)"
