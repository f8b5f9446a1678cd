"""Keyspace: a replica's whole state, one independent CRDT per key.

A key is ``(path, type)``: a ``/``-separated path and a CRDT type, so two replicas
that concurrently create ``"x"`` as a set and as a counter create two keys.

Unlike ``ORMap``, whose nested values share one dot context, every key here keeps
its *own* context (as Riak KV keeps a clock per object). That is what makes the
keyspace divisible: the part under a prefix, or in a key range, is itself a valid
state. Link policies filter deltas by prefix, digests cover a prefix, and catch-up
reconciles key ranges, all without the lie a shared context would tell (a dot of
a filtered-out key would read as a removal).

Removing a key resets its value (an observed-reset, see each type) and keeps the
key's context as a *tombstone*, so stale copies of the key cannot come back. A
tombstone is a few bytes per removed key; collecting them once every replica has
seen the removal is future work. Dot counters are per key and per actor, so a
key's context stays a compact version vector.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, TypeVar

from sync._causal import DotContext, node_of
from sync._codec import DEFAULT_MAX_SIZE, FORMAT_VERSION, Reader, Writer
from sync._counter import Counter
from sync._crdt import (
    CRDT,
    actor_table,
    blank_for_tag,
    crdt_types,
    decode_body,
    encode_body,
    newest_of,
    read_actor_table,
    type_for_tag,
)
from sync._errors import CodecError
from sync._hlc import Timestamp
from sync._ormap import ORMap
from sync._policy import is_local

T = TypeVar("T", bound=CRDT)
Key = tuple[str, int]  # (path, type tag)
# The entries seen with their keys as the objects they are: compiled, a ``Key`` is a
# C struct, so each key read from a dict typed ``dict[Key, ...]`` is unpacked, and
# boxed into a new tuple (and hashed again) for every dict it is then looked up in.
_Entries = dict[Any, CRDT]

KEYSPACE_FORMAT = 1
MAX_PATH_BYTES: Final = 500  # storage keys (path, NUL, tag) must fit LMDB's 511-byte keys


def check_path(path: str) -> str:
    if not isinstance(path, str):
        raise TypeError(f"key paths are str, not {type(path).__name__}")
    size = len(path.encode("utf-8"))
    if not 0 < size <= MAX_PATH_BYTES:
        raise ValueError(f"key path must be 1 to {MAX_PATH_BYTES} bytes of UTF-8, got {size}")
    if "\x00" in path:
        raise ValueError("key paths cannot contain NUL")
    return path


# A type tag's end of a storage key: NUL, then the tag byte (made once, not per key).
_KEY_ENDS: Final = [b"\x00" + bytes((tag,)) for tag in range(256)]


def storage_key(key: Key) -> bytes:
    """Bytes that sort like the key and make a path prefix a byte prefix."""
    tag = key[1]
    if not 0 <= tag < 256:
        raise ValueError(f"type tag {tag} does not fit a byte")
    return key[0].encode("utf-8") + _KEY_ENDS[tag]


def parse_storage_key(raw: bytes) -> Key:
    path, sep, tag = raw.rpartition(b"\x00")
    if not sep or len(tag) != 1:
        raise CodecError(f"malformed storage key {raw[:40]!r}")
    try:
        return (path.decode("utf-8"), tag[0])
    except UnicodeDecodeError:
        raise CodecError("storage key path is not UTF-8") from None


class Keyspace:
    """Sorted keys, each an independent CRDT with its own dot context."""

    def __init__(self) -> None:
        self.entries: dict[Key, CRDT] = {}
        # Events seen per actor, kept up to date once first asked for: a Hello carries
        # it, and counting it over a million keys per Hello stalled a hub for seconds.
        self._progress: dict[str, int] | None = None

    # ---- reads ---------------------------------------------------------------

    def get(self, path: str, cls: type[T]) -> T | None:
        child = self.entries.get((path, cls.TYPE_TAG))
        if child is None or not child.is_present():
            return None
        assert isinstance(child, cls)
        return child

    def types_at(self, path: str) -> list[CRDT]:
        """Every present value at ``path``, one per type, in type-tag order: a lookup
        per registered type, not a scan of every key (a get on a hub of a million
        keys took a scan of them all)."""
        entries, found = self.entries, []
        for cls in crdt_types():
            child = entries.get((path, cls.TYPE_TAG))
            if child is not None and child.is_present():
                found.append(child)
        return found

    def keys(self, prefix: str = "") -> list[tuple[str, type[CRDT]]]:
        """Present keys under ``prefix``, sorted; only those are sorted, not all."""
        entries = self.entries
        chosen = [key for key in entries if key[0].startswith(prefix)]
        return [
            (path, type_for_tag(tag))
            for (path, tag) in sorted(chosen)
            if entries[(path, tag)].is_present()
        ]

    def value(self, prefix: str = "") -> dict[tuple[str, str], Any]:
        return {
            (path, cls.TYPE_NAME): self.entries[(path, cls.TYPE_TAG)].value()
            for path, cls in self.keys(prefix)
        }

    def __len__(self) -> int:
        return sum(1 for c in self.entries.values() if c.is_present())

    # ---- mutators --------------------------------------------------------------

    def apply(self, path: str, cls: type[T], mutate: Callable[[T], T]) -> Keyspace:
        """Run a mutator of ``cls`` on the value at ``(path, cls)``; return the delta."""
        entries = self.entries
        tag = cls.TYPE_TAG
        key: Any = (path, tag)  # boxed once (see _Entries)
        # A path already stored was checked when it first came in.
        child = entries.get(key) if type(path) is str else None
        stored = child is not None
        if child is None:
            check_path(path)
            child = _new_value(cls, tag)
        assert isinstance(child, cls)
        progress = self._progress
        if progress is not None and key in entries:
            _add_events(progress, child.ctx, -1)
        child_delta = mutate(child)
        if child.is_bottom():
            entries.pop(key, None)
        elif not stored:  # (a value already stored there is this one, changed in place)
            entries[key] = child
        if progress is not None and key in entries:
            _add_events(progress, child.ctx, 1)
        delta = Keyspace()
        delta._store(key, child_delta)
        return delta

    def remove(self, path: str, cls: type[CRDT]) -> Keyspace:
        """Observed-remove of ``(path, cls)``; the key's context stays as a tombstone."""
        delta = Keyspace()
        key: Any = (path, cls.TYPE_TAG)  # boxed once (see _Entries)
        child = self.entries.get(key)
        if child is not None:
            progress = self._progress
            if progress is not None:
                _add_events(progress, child.ctx, -1)
            delta._store(key, child.reset())
            if progress is not None:
                _add_events(progress, child.ctx, 1)
        return delta

    def _store(self, key: Any, child: CRDT) -> None:
        """Keep ``child`` at ``key`` (a ``Key``, boxed: see _Entries), unless it is bottom."""
        if child.is_bottom():
            self.entries.pop(key, None)
        else:
            self.entries[key] = child

    # ---- lattice ---------------------------------------------------------------

    def merge(self, other: Keyspace) -> list[Key]:
        """Join ``other`` in; return the keys it touched (the ones to persist)."""
        theirs_by_key: _Entries = other.entries
        for key, theirs in theirs_by_key.items():
            self._join_entry(key, theirs, copy=True)
        return list(other.entries)

    def absorb(self, other: Keyspace) -> None:
        """Merge ``other`` in, taking its values rather than copying: ``other`` is spent."""
        entries: _Entries = self.entries
        progress = self._progress
        theirs_by_key: _Entries = other.entries
        for key, theirs in theirs_by_key.items():
            # A new key, the usual case on a hub taking in a backlog: stored (in one
            # lookup: ``setdefault`` gives ``theirs`` back only if it stored it) and
            # counted here rather than through ``_join_entry``.
            if progress is not None and entries.setdefault(key, theirs) is theirs:
                _add_events(progress, theirs.ctx, 1)
            else:
                self._join_entry(key, theirs, copy=False)

    def _join_entry(self, key: Any, theirs: CRDT, copy: bool) -> None:
        """Join ``theirs`` into the value at ``key`` (a key as its dict holds it)."""
        entries: _Entries = self.entries
        mine = entries.get(key)
        progress = self._progress
        if mine is None:
            mine = entries[key] = theirs.copy() if copy else theirs
            if progress is not None:
                _add_events(progress, mine.ctx, 1)
        elif progress is None:
            mine.merge(theirs)
        elif not mine.ctx.cloud:  # (the usual case: a plain vector)
            # Count what the join adds from the (usually smaller) incoming side,
            # rather than all of ours before and again after.
            _add_gain(progress, mine.ctx.vv._counters, theirs.ctx)
            mine.merge(theirs)
        else:
            _add_events(progress, mine.ctx, -1)
            mine.merge(theirs)
            _add_events(progress, mine.ctx, 1)

    def novel_part(self, known: Keyspace, owned: bool = False) -> Keyspace:
        """What of this keyspace (a received delta) ``known`` lacks, key by key.

        ``owned``: this keyspace is spent (a freshly decoded delta), so keys ``known``
        lacks are taken as they are rather than copied.
        """
        out = Keyspace()
        mine_by_key: _Entries = self.entries
        known_entries: _Entries = known.entries
        for key, mine in mine_by_key.items():
            theirs = known_entries.get(key)
            if theirs is None:
                out._store(key, mine if owned else mine.copy())
            else:
                out._store(key, mine.novel_part(theirs))
        return out

    def filtered(self, admit: Callable[[str], bool]) -> Keyspace:
        """The sub-keyspace whose paths ``admit`` accepts (a valid state by itself)."""
        out = Keyspace()
        out.entries = {k: c for k, c in self.entries.items() if admit(k[0])}
        return out

    def copy(self) -> Keyspace:
        out = Keyspace()
        entries: _Entries = self.entries
        out.entries = {k: c.copy() for k, c in entries.items()}
        return out

    def is_bottom(self) -> bool:
        return not self.entries

    def timestamps(self) -> Iterator[Timestamp]:
        for child in self.entries.values():
            yield from child.timestamps()

    def newest_timestamp(self) -> Timestamp | None:
        """The greatest of ``timestamps()``, None if there is none."""
        return newest_of(self.entries.values())

    def writers(self) -> set[str]:
        """The actors whose updates this keyspace carries (stored dots, counter totals).

        Removals carry other actors' dots in the context; those are not updates.
        """
        found: set[str] = set()
        for child in self.entries.values():
            found |= _writers(child)
        return found

    def actor_progress(self) -> dict[str, int]:
        """Per actor, how many of its events this keyspace has seen (over all keys).

        Counted over every key the first time, then kept up to date by the mutators.
        """
        if self._progress is None:
            progress = self._progress = {}
            for child in self.entries.values():
                _add_events(progress, child.ctx, 1)
        return {actor: n for actor, n in sorted(self._progress.items()) if n}

    # ---- encoding --------------------------------------------------------------

    def encode(self) -> bytes:
        """Canonical bytes: format, shared actor table, then (path, tag, context, store)*."""
        w = Writer()
        index = self._encode_table(w)
        w.uvarint(len(self.entries))
        for key in sorted(self.entries):
            w.text(key[0])
            w.u8(key[1])
            encode_body(w, index, self.entries[key])
        return w.getvalue()

    def encode_indexed(self) -> tuple[bytes, KeyOffsets]:
        """``encode()``, and where in it the actor table ends and each key's part (path,
        tag, body; in key order) starts, for ``splice``."""
        w = Writer()
        index = self._encode_table(w)
        parts = w.parts
        table_end, table_parts = _length(parts, 0), len(parts)
        w.uvarint(len(self.entries))
        counted, size = len(parts), table_end + _length(parts, table_parts)
        starts = [size]
        for key in sorted(self.entries):
            w.text(key[0])
            w.u8(key[1])
            encode_body(w, index, self.entries[key])
            size += _length(parts, counted)
            counted = len(parts)
            starts.append(size)
        return w.getvalue(), KeyOffsets(table_end, starts)

    def _encode_table(self, w: Writer) -> dict[str, int]:
        """The format byte and the shared actor table; each actor's index in it."""
        actors = sorted(set().union(*(_actors(c) for c in self.entries.values())))
        w.u8(KEYSPACE_FORMAT)
        w.uvarint(len(actors))
        for actor in actors:
            w.text(actor)
        return {a: i for i, a in enumerate(actors)}

    @classmethod
    def decode(cls, data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> Keyspace:
        return decode_with_encodings(data, max_size, cut=False)[0]

    def digest(self, prefix: str = "") -> str:
        """Hex SHA-256 over the keys under ``prefix``: equal digests, equal state.

        Keys under ``local/`` never leave their node, so they count only when the
        prefix asks for them.
        """
        under = (k for k in sorted(self.entries) if k[0].startswith(prefix))
        return digest_of_stored(((storage_key(k), self.entries[k].encode()) for k in under), prefix)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Keyspace) and self.encode() == other.encode()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(f"{p!r}: {self.entries[(p, c.TYPE_TAG)]!r}" for p, c in self.keys())
        return f"Keyspace({{{shown}}})"


class KeyOffsets:
    """Where a keyspace's encoding ends its actor table, and where each key's part
    starts (in key order; the last item is the end of the encoding)."""

    __slots__ = ("starts", "table_end")

    def __init__(self, table_end: int, starts: list[int]) -> None:
        self.table_end, self.starts = table_end, starts

    def __repr__(self) -> str:
        return f"KeyOffsets(table_end={self.table_end}, keys={len(self.starts) - 1})"


def _length(parts: list[bytes], first: int) -> int:
    """The bytes in ``parts[first:]``, without slicing."""
    total = 0
    for i in range(first, len(parts)):
        total += len(parts[i])
    return total


# An entry body at least this large is cut out of the payload through a memoryview:
# one copy instead of two, where a view would cost more than copying a small body.
_VIEW_FROM: Final = 1024


def splice(parts: list[tuple[Keyspace, bytes, KeyOffsets]]) -> list[bytes | memoryview] | None:
    """``encode()`` of the join of ``parts`` (each a keyspace, its encoding, and where
    that puts each key), made by cutting each key's part out of its encoding rather
    than encoding any value again; None unless they all share one actor table (the
    same table, so a body's actor indices mean the same in each) and no key.

    An edge's backlog is many log entries of its own updates on distinct keys:
    sending it joined one interval of them and encoded it again, 6 us a key.

    The encoding comes in pieces, to be joined: the message that carries it joins
    them once, with its own head (``encode_deltas``), where joining here too copied
    every byte of a megabyte interval one more time.
    """
    first_encoding, first = parts[0][1], parts[0][2]
    table = first_encoding[: first.table_end]
    pieces: list[tuple[Key, bytes | memoryview]] = []
    for delta, encoding, offsets in parts:
        if encoding[: offsets.table_end] != table:
            return None
        starts = offsets.starts
        view = memoryview(encoding)
        for i, key in enumerate(sorted(delta.entries)):
            start, end = starts[i], starts[i + 1]
            # A large value is copied once, into the join, rather than sliced first.
            piece = view[start:end] if end - start >= _VIEW_FROM else encoding[start:end]
            pieces.append((key, piece))
    pieces.sort(key=_first)
    w = Writer()
    w.uvarint(len(pieces))
    out: list[bytes | memoryview] = [table, w.getvalue()]
    last: Key | None = None
    for key, piece in pieces:
        if key == last:
            return None  # a key in two parts: they must be joined
        out.append(piece)
        last = key
    return out


def _first(piece: tuple[Key, bytes | memoryview]) -> Key:
    return piece[0]


def decode_with_encodings(
    data: bytes, max_size: int = DEFAULT_MAX_SIZE, cut: bool = True, first: int = 0, last: int = -1
) -> tuple[Keyspace, dict[Key, bytes] | None]:
    """Decode a keyspace, and give each entry's own canonical encoding (``encode()``
    of its value) when it can be cut out of ``data``: when the table names one actor.

    Then every entry's actor table is that one actor (an entry that is not bottom
    names some actor), so its body here, indexed against the same table, is
    byte for byte the body of its own encoding. A receiver that stores an entry
    as received saves encoding it again. ``cut=False``: decode only.

    The keyspace is ``data[first:last]`` (``last`` -1: to the end), decoded where it
    lies: a payload inside a received message is not copied out to be decoded.
    """
    last = len(data) if last < 0 else last
    if last - first > max_size:
        raise CodecError(f"keyspace of {last - first} bytes exceeds the {max_size}-byte limit")
    data = bytes(data)
    r = Reader(data, first, last)
    version = r.u8()
    if version != KEYSPACE_FORMAT:
        raise CodecError(
            f"unsupported keyspace format {version}; this build reads {KEYSPACE_FORMAT}"
        )
    actors = read_actor_table(r)
    out = Keyspace()
    entries = out.entries
    # With one actor, each entry's encoding is a head per type tag (format, tag and
    # the table) and the body as it stands in ``data``: cut out as it is decoded.
    encodings: dict[Key, bytes] | None = {} if cut and len(actors) == 1 else None
    heads: list[bytes | None] = [None] * 256  # by tag: indexed, no int boxed
    prev_path, prev_tag = "", 0  # below every key: paths are never empty
    for _ in range(r.count("keyspace", 4)):
        path, tag = _decoded_path(r), r.u8()
        if path < prev_path or (path == prev_path and tag <= prev_tag):
            raise CodecError("keyspace keys are not strictly sorted")
        prev_path, prev_tag = path, tag
        key: Any = (path, tag)  # boxed once: compiled, a (str, int) pair is boxed at each use
        start = r.pos
        child = decode_body(r, blank_for_tag(tag), actors)
        if child.is_bottom():
            raise CodecError(f"keyspace entry {path!r} holds nothing (not canonical)")
        entries[key] = child
        if encodings is not None:
            head = heads[tag]
            if head is None:
                head = heads[tag] = bytes((FORMAT_VERSION, tag)) + actor_table(actors)[0]
            if r.pos - start < _VIEW_FROM:
                encodings[key] = head + data[start : r.pos]
            else:  # a large value: copied once into its encoding, not sliced first
                encodings[key] = head + memoryview(data)[start : r.pos]
    r.expect_end()
    if len(actors) == 1 and entries:
        # Every entry names some actor, and only one can be named: all are used.
        return out, encodings
    used = set().union(*(_actors(c) for c in entries.values()))
    if used != set(actors):
        raise CodecError("actor table names actors the keyspace does not use")
    return out, None


def own_part(child: T, node_id: str) -> T:
    """The part of ``child`` that carries no update of another node: the join of its
    irreducible parts whose writers are all ``node_id`` (any epoch).

    Removals (context-only dots, counter bases) are kept: they are not updates. What
    is left out is left out of the context too, so the part never claims to have
    removed an update it merely omits. A node that may send only its own updates
    (an edge) catches a peer up with this.
    """
    own = type(child)()
    for part in child.decompose():
        if all(node_of(actor) == node_id for actor in _writers(part)):
            own.merge(part)
    return own


def _stored_digest(stored: bytes, encoded: bytes) -> bytes:
    return hashlib.sha256(stored + b"\x00" + encoded).digest()


def digest_of_stored(rows: Iterable[tuple[bytes, bytes]], prefix: str = "") -> str:
    """``Keyspace.digest`` from (storage key, canonical encoding) rows in key order,
    as a store holds them: storage keys sort as keys do, so the two agree."""
    h = hashlib.sha256()
    count_local = prefix.startswith("local")
    for stored, encoded in rows:
        path = stored.rpartition(b"\x00")[0].decode("utf-8")
        if path.startswith(prefix) and (count_local or not is_local(path)):
            h.update(_stored_digest(stored, encoded))
    return h.hexdigest()


def _decoded_path(r: Reader) -> str:
    """A path read from ``r``: its size checked on the bytes already in hand."""
    raw = r.blob()
    try:
        path = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CodecError(f"invalid UTF-8 in string: {exc.reason}") from None
    if not 0 < len(raw) <= MAX_PATH_BYTES or 0 in raw:  # (an int: a plain memchr)
        check_decoded_path(path)  # raises, saying which rule it breaks
    return path


def check_decoded_path(path: str) -> str:
    try:
        return check_path(path)
    except ValueError as exc:
        raise CodecError(str(exc)) from None


def _events_per_actor(ctx: DotContext) -> dict[str, int]:
    out: dict[str, int] = {}
    _add_events(out, ctx, 1)
    return out


def _add_events(totals: dict[str, int], ctx: DotContext, sign: int) -> None:
    """Add (``sign`` 1) or take away (-1) the events ``ctx`` has seen, per actor."""
    for actor, n in ctx.vv._counters.items():  # the dict itself: iterated natively
        totals[actor] = totals.get(actor, 0) + sign * n
    if ctx.cloud:  # (most contexts are a plain vector)
        for dot in ctx.cloud:
            totals[dot.actor] = totals.get(dot.actor, 0) + sign


def _add_gain(totals: dict[str, int], mine: dict[str, int], theirs: DotContext) -> None:
    """Add, per actor, the events that joining ``theirs`` adds to the plain vector
    ``mine``: the part of its vector above ``mine``, and each cloud dot above both
    vectors (in a compact context, every cloud dot is above its own vector)."""
    for actor, n in theirs.vv._counters.items():
        had = mine.get(actor, 0)
        if n > had:
            totals[actor] = totals.get(actor, 0) + n - had
    for dot in theirs.cloud:
        actor = dot[0]
        if dot[1] > max(mine.get(actor, 0), theirs.vv._counters.get(actor, 0)):
            totals[actor] = totals.get(actor, 0) + 1


def _new_value(cls: type[T], tag: int) -> CRDT:
    """An empty ``cls``: through its type's blank (a direct call, compiled) when that
    is ``cls``, where calling ``cls`` is a generic call through the type object."""
    blank = blank_for_tag(tag)
    return blank._blank(DotContext()) if type(blank) is cls else cls()


def _writers(child: CRDT) -> set[str]:
    found = {dot.actor for dot in child._store_dots()}
    if isinstance(child, Counter):
        for tally in child.tallies:
            found.update(tally.totals)  # bases are what a reset saw: not updates
    if isinstance(child, ORMap):
        for nested in child.entries.values():
            found |= _writers(nested)
    return found


def _actors(child: CRDT) -> set[str]:
    found = child.ctx.actors()
    found.update(child._store_actors())
    return found
