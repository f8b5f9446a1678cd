"""The one contract every CRDT type in this package keeps.

Every type is a *causal* CRDT in the sense of Almeida, Shoker and Baquero (JPDC
2018, section 6): a store of what it holds plus a ``DotContext`` of every dot it
has seen. Types nested in an ``ORMap`` share the map's context object, which is
what lets removing a map key cancel exactly what the remover had observed.

The contract:

- a mutator changes the replica in place and returns a *delta* of the same type;
- ``merge`` is the one join: commutative, associative and idempotent, and the
  only way state from elsewhere gets in;
- ``decompose`` splits a state into irreducible parts that re-join to it;
- ``encode``/``decode`` are canonical: equal states give equal bytes, and ``==``
  is defined as equality of those bytes;
- ``reset`` is the observed-reset (cancel everything seen so far), the building
  block of key removal in ``ORMap``.

Subclasses implement the store-level half (``_join_store``, ``_store_dots`` ...)
against ``self.ctx`` and the other side's ``ctx``, before the contexts are joined.

``CRDT`` marks that half ``@abstractmethod`` for the type checker but does not
derive from ``ABC``: a Python base class gives mypyc-compiled instances a
``__dict__`` and a weak-reference slot, and on Python 3.11 mypyc's generated
deallocator releases that slot as if it owned the first weak reference, which
frees a weak reference still in use (docs/architecture.md, "Compiled core").
"""

from __future__ import annotations

import hashlib
from abc import abstractmethod
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self, TypeVar

from sync._causal import Dot, DotContext, VersionVector, new_dot
from sync._codec import DEFAULT_MAX_SIZE, FORMAT_VERSION, Reader, Writer
from sync._errors import CodecError

if TYPE_CHECKING:
    from sync._hlc import Timestamp

C = TypeVar("C", bound="CRDT")

_REGISTRY: dict[int, type[CRDT]] = {}


def crdt_types() -> list[type[CRDT]]:
    """Every registered CRDT type, in tag order."""
    return [_REGISTRY[tag] for tag in sorted(_REGISTRY)]


def type_for_tag(tag: int) -> type[CRDT]:
    try:
        return _REGISTRY[tag]
    except KeyError:
        raise CodecError(f"unknown CRDT type tag {tag}") from None


# One empty instance per type tag, never changed: decoders call ``_decode_store`` on
# it, an instance method that a compiled core dispatches through its vtable (as a
# classmethod called through the class, it was a Python-level call per decoded key).
# A list by tag (tags are bytes), not a dict: compiled, indexing it boxes nothing.
_BLANKS: Final[list[CRDT | None]] = [None] * 256


def blank_for_tag(tag: int) -> CRDT:
    """The shared empty instance of the type ``tag`` names: read it, never change it."""
    if not 0 <= tag < 256:
        return type_for_tag(tag)()  # (raises: every registered tag is a byte)
    blank = _BLANKS[tag]
    if blank is None:
        blank = _BLANKS[tag] = type_for_tag(tag)()
    return blank


class CRDT:
    TYPE_TAG: ClassVar[int]
    TYPE_NAME: ClassVar[str]
    ctx: DotContext

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        tag = vars(cls).get("TYPE_TAG")
        if tag is not None:
            if tag in _REGISTRY:
                raise TypeError(f"type tag {tag} is taken by {_REGISTRY[tag].__name__}")
            _REGISTRY[tag] = cls
            cls.TYPE_NAME = cls.__name__

    def __init__(self, ctx: DotContext | None = None) -> None:
        self.ctx = ctx if ctx is not None else DotContext()

    def _blank(self, ctx: DotContext) -> Self:
        """An empty value of this type, bound to ``ctx``. Each concrete type names its
        own constructor: compiled, that is a direct call, where ``type(self)(ctx)`` is
        a generic one through the type object (a decoder makes one per key)."""
        return type(self)(ctx)

    # ---- store-level operations, implemented by each type -------------------

    @abstractmethod
    def _join_store(self: C, other: C) -> None:
        """Join ``other``'s store into this one, using both (not yet joined) contexts."""

    @abstractmethod
    def _store_dots(self) -> Iterator[Dot]:
        """The dots the store holds."""

    @abstractmethod
    def _holds(self, dot: Dot) -> bool:
        """Whether the store holds ``dot``."""

    @abstractmethod
    def _store_is_bottom(self) -> bool:
        """True when the store holds nothing at all (not even counter tallies)."""

    @abstractmethod
    def _reset_into(self: C, out: DotContext) -> C:
        """Cancel everything stored; return the delta, bound to context ``out``."""

    @abstractmethod
    def _copy_store(self: C, ctx: DotContext) -> C:
        """A deep copy of the store, bound to ``ctx``."""

    @abstractmethod
    def _decompose_store(self: C) -> list[C]:
        """Irreducible parts of the store, each with a context of just its own dots."""

    @abstractmethod
    def _novel_store(self: C, known: C, out: DotContext) -> C:
        """What of this store ``known`` lacks, bound to ``out``.

        Adds to ``out`` the dots ``known`` stores that this side removed. The
        caller adds every dot of this context that ``known`` has not seen.
        """

    @abstractmethod
    def _store_actors(self) -> Iterable[str]:
        """Actors named by the store outside its dots (counter tallies)."""

    def _store_names_only(self, actor: str) -> bool:
        """Whether ``_store_actors()`` names no actor but ``actor`` (types whose store
        names actors override it with a check that builds no set)."""
        return all(other == actor for other in self._store_actors())

    @abstractmethod
    def _encode_store(self, w: Writer, index: dict[str, int]) -> None: ...

    @abstractmethod
    def _decode_store(self: C, r: Reader, ctx: DotContext, actors: list[str], depth: int) -> C:
        """A new value of this type, bound to ``ctx``, read from ``r``; ``self`` is only
        the type's blank (``blank_for_tag``) and is left as it is."""

    def _check_decoded_store(self) -> None:
        """Refuse a decoded store holding a dot its context lacks, or one dot twice."""
        _check_dots(self)

    @abstractmethod
    def value(self) -> Any:
        """The value a reader sees."""

    # ---- the contract, shared by every type ----------------------------------

    def is_present(self) -> bool:
        """Whether the value exists for readers: some update is not yet cancelled."""
        return next(self._store_dots(), None) is not None

    def is_bottom(self) -> bool:
        ctx = self.ctx
        return not ctx.vv._counters and not ctx.cloud and self._store_is_bottom()

    def merge(self: C, other: C) -> None:
        """Join ``other`` into this replica (in place)."""
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        self._join_store(other)
        self.ctx.merge(other.ctx)

    def reset(self: C) -> C:
        """Observed-reset: cancel every update this replica has seen; return the delta."""
        return self._reset_into(DotContext())

    def copy(self: C) -> C:
        return self._copy_store(self.ctx.copy())

    def decompose(self: C) -> list[C]:
        """Split into irreducible states whose join is this state."""
        parts = self._decompose_store()
        held = set(self._store_dots())
        for dot in self.ctx.dots():
            if dot not in held:
                parts.append(self._blank(DotContext.of([dot])))
        return parts

    def novel_part(self: C, known: C) -> C:
        """The part of this state (typically a received delta) that ``known`` lacks.

        ``known.merge(x.novel_part(known))`` has the same effect as ``known.merge(x)``,
        and the result is bottom when ``x`` adds nothing: the redundant-state removal
        of Enes et al., "Efficient Synchronization of State-based CRDTs" (ICDE 2019).
        """
        if type(known) is not type(self):
            raise TypeError(f"cannot compare {type(self).__name__} with {type(known).__name__}")
        out = DotContext()
        part = self._novel_store(known, out)
        self.ctx.add_unseen(known.ctx, out)
        return part

    def timestamps(self) -> Iterator[Timestamp]:
        """Every HLC timestamp held, for checking a received delta against the local clock."""
        return iter(())

    def newest_timestamp(self) -> Timestamp | None:
        """The greatest of ``timestamps()`` (None if there is none), without iterators:
        a receiver checks it for every key it takes in."""
        return None

    def encode(self) -> bytes:
        return encode(self)

    @classmethod
    def decode(cls: type[C], data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> C:
        obj = decode(data, max_size)
        if not isinstance(obj, cls):
            raise CodecError(f"expected {cls.__name__}, found {type(obj).__name__}")
        return obj

    def digest(self) -> str:
        return digest(self)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, CRDT) and type(other) is type(self) and encode(self) == encode(other)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value()!r}, ctx={self.ctx!r})"


# ---- shared helpers for stores ----------------------------------------------


def newest_of(values: Iterable[CRDT]) -> Timestamp | None:
    """The greatest ``newest_timestamp()`` of ``values`` (None if none has any)."""
    newest: Timestamp | None = None
    for value in values:
        ts = value.newest_timestamp()
        if ts is not None and (newest is None or ts > newest):
            newest = ts
    return newest


# A dot is read as its actor index, then its counter, each checked: two calls that
# return plain integers, where one returning a tuple allocated it (and boxed both).


def read_actor_index(r: Reader, actors: list[str]) -> int:
    """An index into the actor table: it orders dots canonically."""
    ix = r.uvarint()
    if ix >= len(actors):
        raise CodecError(f"actor index {ix} outside the table of {len(actors)}")
    return ix


def read_dot_counter(r: Reader) -> int:
    n = r.uvarint()
    if n == 0:
        raise CodecError("dot counter 0 (counters start at 1)")
    return n


# ---- whole-state encoding ---------------------------------------------------


def sole_actor(obj: CRDT) -> str | None:
    """The one actor ``obj`` names, or None when it names several (or none).

    The state of a key that one node writes names just that node's actor: its
    context is then a one-entry vector with no cloud (every stored dot is in the
    context, so it names no other actor), and the store names no other outside.
    """
    ctx = obj.ctx
    counters = ctx.vv._counters
    if len(counters) != 1 or ctx.cloud:
        return None
    for actor in counters:
        if obj._store_names_only(actor):
            return actor
    return None


def _collect_actors(obj: CRDT) -> list[str]:
    actors = obj.ctx.actors()
    for actor in obj._store_actors():  # compiled, set.update would be a call by name
        actors.add(actor)
    return sorted(actors)


# Encoded actor tables and their indexes, by the sorted actors: a node's states name
# the same few actors again and again, and every key it persists is encoded whole.
_TABLES: dict[tuple[str, ...], tuple[bytes, dict[str, int]]] = {}
_TABLES_MAX = 4096


def actor_table(actors: list[str]) -> tuple[bytes, dict[str, int]]:
    """The encoded table (count, then each actor) and each actor's index in it."""
    key = tuple(actors)
    found = _TABLES.get(key)
    if found is None:
        w = Writer()
        w.uvarint(len(actors))
        for actor in actors:
            w.text(actor)
        found = (w.getvalue(), {a: i for i, a in enumerate(actors)})
        if len(_TABLES) >= _TABLES_MAX:
            _TABLES.clear()  # a bound, not an eviction policy: tables are cheap to rebuild
        _TABLES[key] = found
    return found


# The format version and each type tag, as one part.
_HEADS: Final = [bytes((FORMAT_VERSION, tag)) for tag in range(256)]

# For each actor of a one-actor state: its index ({actor: 0}) and, by type tag, the
# head of the encoding (version, tag, the one-actor table) as one part. Bounded as
# ``_TABLES`` is.
_SOLE: dict[str, tuple[dict[str, int], list[bytes | None]]] = {}


def encode(obj: CRDT) -> bytes:
    """Canonical bytes: format version, type tag, actor table, context, store.

    A state that names one actor (``sole_actor``) takes a cached head and index,
    with no set, sort or table key to build; ``encode_general`` is the same bytes.
    """
    actor = sole_actor(obj)
    if actor is None:
        return encode_general(obj)
    w = Writer()
    index = _write_sole_head(w, obj.TYPE_TAG, actor)
    encode_body(w, index, obj)
    return w.getvalue()


def encode_general(obj: CRDT) -> bytes:
    """``encode`` of any state, its actor table collected and sorted."""
    table, index = actor_table(_collect_actors(obj))
    w = Writer()
    w.raw(_HEADS[obj.TYPE_TAG])
    w.raw(table)
    encode_body(w, index, obj)
    return w.getvalue()


def _write_sole_head(w: Writer, tag: int, actor: str) -> dict[str, int]:
    """Write the head of a state that names only ``actor``; return its index."""
    found = _SOLE.get(actor)
    if found is None:
        if len(_SOLE) >= _TABLES_MAX:
            _SOLE.clear()
        found = _SOLE[actor] = ({actor: 0}, [None] * 256)
    index, heads = found
    head = heads[tag]
    if head is None:
        head = heads[tag] = _HEADS[tag] + actor_table([actor])[0]
    w.raw(head)
    return index


def encode_body(w: Writer, index: dict[str, int], obj: CRDT) -> None:
    """Context and store, against an actor table the caller wrote."""
    _encode_context(w, index, obj.ctx)
    obj._encode_store(w, index)


def _encode_context(w: Writer, index: dict[str, int], ctx: DotContext) -> None:
    w.counter_dict(index, ctx.vv._counters)
    w.counters(index, ctx.cloud)


def decode(data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> CRDT:
    """Decode any CRDT; raises ``CodecError`` (and only that) on bad input."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"expected bytes, not {type(data).__name__}")
    if len(data) > max_size:
        raise CodecError(f"encoding of {len(data)} bytes exceeds the {max_size}-byte limit")
    r = Reader(bytes(data))
    version = r.u8()
    if version != FORMAT_VERSION:
        raise CodecError(
            f"unsupported encoding format version {version}; "
            f"this build reads version {FORMAT_VERSION}"
        )
    blank = blank_for_tag(r.u8())
    actors = read_actor_table(r)
    obj = decode_body(r, blank, actors)
    r.expect_end()
    if _collect_actors(obj) != actors:
        raise CodecError("actor table names actors the state does not use")
    return obj


def decode_body(r: Reader, blank: C, actors: list[str]) -> C:
    """Context and store of a value of ``blank``'s type (``blank_for_tag``), checked,
    against an already-read actor table."""
    ctx = _decode_context(r, actors)
    try:
        obj = blank._decode_store(r, ctx, actors, 0)
    except RecursionError:
        raise CodecError("encoding nested too deeply") from None
    obj._check_decoded_store()
    return obj


def read_actor_table(r: Reader) -> list[str]:
    n = r.count("actor table", 1)
    actors: list[str] = []
    for _ in range(n):
        actor = r.text()
        if actors and actor <= actors[-1]:
            raise CodecError("actor table is not strictly sorted")
        actors.append(actor)
    return actors


def _decode_context(r: Reader, actors: list[str]) -> DotContext:
    vv = VersionVector()
    counters = vv._counters  # strictly sorted, counters >= 1: each entry is new and kept
    prev_ix = -1
    for _ in range(r.count("version vector", 2)):
        ix = read_actor_index(r, actors)
        n = read_dot_counter(r)
        if ix <= prev_ix:
            raise CodecError("version vector entries are not strictly sorted")
        prev_ix = ix
        counters[actors[ix]] = n
    ctx = DotContext(vv)
    if r.empty():  # the common case: contexts are compact version vectors
        return ctx
    cloud_size = r.count("dot cloud", 2)
    cloud = ctx.cloud
    prev = (-1, 0)
    for _ in range(cloud_size):
        ix = read_actor_index(r, actors)
        n = read_dot_counter(r)
        actor = actors[ix]
        if (ix, n) <= prev:
            raise CodecError("dot cloud is not strictly sorted")
        prev = (ix, n)
        if n <= vv[actor] + 1:
            raise CodecError(f"dot cloud entry {Dot(actor, n)!r} is not compact against the vector")
        cloud.add(new_dot(actor, n))
    return ctx


def _check_dots(obj: CRDT) -> None:
    ctx = obj.ctx
    first: Dot | None = None
    seen: set[Dot] | None = None  # made at the second dot: most stores hold one
    for dot in obj._store_dots():
        if dot not in ctx:
            raise CodecError(f"stored dot {dot!r} is not covered by the context")
        if first is None:
            first = dot
            continue
        if seen is None:
            seen = {first}
        if dot in seen:
            raise CodecError(f"dot {dot!r} is stored twice")
        seen.add(dot)


def digest(obj: CRDT) -> str:
    """Hex SHA-256 of the canonical encoding: equal digests mean equal states."""
    return hashlib.sha256(encode(obj)).hexdigest()
