"""ORMap: observed-remove map of nested CRDTs, keyed by (name, type).

Semantics (Almeida, Shoker, Baquero, JPDC 2018, section 7.3, ORMap over a shared
dot context; key identity (name, type) as in basho/riak_dt's riak_dt_map):

- A key is a ``(name, type)`` pair. Two replicas that concurrently create ``"x"``
  as a set and as a counter create two keys; neither conflicts with the other, and
  reading ``"x"`` shows both.
- Every nested value shares the map's dot context, so a nested update is a dot
  the whole map has seen.
- ``remove(name, type)`` is an observed-reset of the nested value: it cancels
  exactly the updates the remover had seen (dots, and counter totals via bases).
  An update concurrent with the remove is not cancelled, so the key stays, holding
  only what the remover had not seen. **Update wins.** A replica that merely has
  stale state for a removed key cannot bring it back: its dots are in the
  remover's context, so the join drops them.
- Nesting is bounded (``MAX_DEPTH`` in the codec) and the map's join visits only
  the keys a delta touches, unless the delta removes dots it cannot place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from typing import Any, Self, TypeVar

from sync._causal import Dot, DotContext
from sync._codec import MAX_DEPTH, Reader, Writer
from sync._crdt import CRDT, blank_for_tag, newest_of, type_for_tag
from sync._errors import CodecError
from sync._hlc import Timestamp

T = TypeVar("T", bound=CRDT)
Key = tuple[str, int]


class ORMap(CRDT):
    TYPE_TAG = 9

    def _blank(self, ctx: DotContext) -> Self:
        return ORMap(ctx)  # type: ignore[return-value]  # (Self is ORMap: a leaf)

    def __init__(self, ctx: DotContext | None = None) -> None:
        super().__init__(ctx)
        self.entries: dict[Key, CRDT] = {}

    # ---- reads ---------------------------------------------------------------

    def get(self, name: str, cls: type[T]) -> T | None:
        """The nested value at ``(name, cls)``, or None if absent."""
        child = self.entries.get((name, cls.TYPE_TAG))
        if child is None or not child.is_present():
            return None
        assert isinstance(child, cls)
        return child

    def keys(self) -> list[tuple[str, type[CRDT]]]:
        return [(name, type_for_tag(tag)) for name, tag in sorted(self._present())]

    def __len__(self) -> int:
        return sum(1 for _ in self._present())

    def _present(self) -> Iterator[Key]:
        return (key for key, child in self.entries.items() if child.is_present())

    def value(self) -> dict[tuple[str, str], Any]:
        return {
            (name, type_for_tag(tag).TYPE_NAME): self.entries[(name, tag)].value()
            for name, tag in sorted(self._present())
        }

    # ---- mutators --------------------------------------------------------------

    def apply(self, name: str, cls: type[T], mutate: Callable[[T], T]) -> ORMap:
        """Run ``mutate`` (a mutator of ``cls``) on the value at ``(name, cls)``.

        The value is created empty if absent. Returns the map delta.
        """
        if not isinstance(name, str):
            raise TypeError(f"map keys are str, not {type(name).__name__}")
        key = (name, cls.TYPE_TAG)
        child = self.entries.get(key)
        if child is None:
            child = cls(self.ctx)
        assert isinstance(child, cls)
        child_delta = mutate(child)
        self._store(key, child)
        delta = ORMap(child_delta.ctx)
        delta._store(key, child_delta)
        return delta

    def remove(self, name: str, cls: type[CRDT]) -> ORMap:
        """Observed-remove of ``(name, cls)``: cancel what this replica has seen of it."""
        out = DotContext()
        delta = ORMap(out)
        key = (name, cls.TYPE_TAG)
        child = self.entries.get(key)
        if child is not None:
            delta._store(key, child._reset_into(out))
            self._store(key, child)
        return delta

    def _store(self, key: Key, child: CRDT) -> None:
        if child._store_is_bottom():
            self.entries.pop(key, None)
        else:
            self.entries[key] = child

    # ---- store-level contract --------------------------------------------------

    def _pair(self, other: ORMap, key: Key) -> tuple[CRDT, CRDT]:
        """Both sides' values at ``key``, an empty one (on its side's context) if absent."""
        cls = type_for_tag(key[1])
        mine = self.entries.get(key)
        theirs = other.entries.get(key)
        return (
            cls(self.ctx) if mine is None else mine,
            cls(other.ctx) if theirs is None else theirs,
        )

    def _join_store(self, other: ORMap) -> None:
        for key in self._keys_touched_by(other):
            mine, theirs = self._pair(other, key)
            mine._join_store(theirs)
            self._store(key, mine)

    def _keys_touched_by(self, other: ORMap) -> set[Key]:
        """Keys whose values a join with ``other`` can change.

        Always ``other``'s keys; plus the keys holding dots that ``other`` has seen
        but does not store (removals). For a small delta those dots are found among
        the delta's own keys; if any cannot be placed, every key is visited.
        """
        keys = set(other.entries)
        their_ctx = other.ctx
        if their_ctx.size() > len(self.entries) + len(keys):
            return keys | set(self.entries)
        theirs = set(other._store_dots())
        my_ctx = self.ctx
        for dot in their_ctx.dots():
            if dot in theirs or dot not in my_ctx:
                continue
            if not any(k in self.entries and self.entries[k]._holds(dot) for k in keys):
                return keys | set(self.entries)
        return keys

    def _novel_store(self, known: ORMap, out: DotContext) -> ORMap:
        part = ORMap(out)
        for key in known._keys_touched_by(self):
            mine, theirs = self._pair(known, key)
            part._store(key, mine._novel_store(theirs, out))
        return part

    def _store_dots(self) -> Iterator[Dot]:
        return chain.from_iterable(child._store_dots() for child in self.entries.values())

    def _holds(self, dot: Dot) -> bool:
        return any(child._holds(dot) for child in self.entries.values())

    def _store_is_bottom(self) -> bool:
        return not self.entries

    def is_present(self) -> bool:
        return any(child.is_present() for child in self.entries.values())

    def _reset_into(self, out: DotContext) -> ORMap:
        delta = ORMap(out)
        for key, child in list(self.entries.items()):
            delta._store(key, child._reset_into(out))
            self._store(key, child)
        return delta

    def _copy_store(self, ctx: DotContext) -> ORMap:
        twin = ORMap(ctx)
        for key, child in self.entries.items():
            twin.entries[key] = child._copy_store(ctx)
        return twin

    def _decompose_store(self) -> list[ORMap]:
        parts = []
        for key, child in self.entries.items():
            for piece in child._decompose_store():
                part = ORMap(piece.ctx)
                part.entries[key] = piece
                parts.append(part)
        return parts

    def _store_actors(self) -> Iterable[str]:
        return set().union(*(child._store_actors() for child in self.entries.values()))

    def timestamps(self) -> Iterator[Timestamp]:
        return chain.from_iterable(child.timestamps() for child in self.entries.values())

    def newest_timestamp(self) -> Timestamp | None:
        return newest_of(self.entries.values())

    def _encode_store(self, w: Writer, index: dict[str, int]) -> None:
        w.uvarint(len(self.entries))
        for key in sorted(self.entries):
            w.text(key[0])
            w.u8(key[1])
            self.entries[key]._encode_store(w, index)

    def _decode_store(self, r: Reader, ctx: DotContext, actors: list[str], depth: int) -> ORMap:
        if depth >= MAX_DEPTH:
            raise CodecError(f"maps nested deeper than {MAX_DEPTH} levels")
        out = self._blank(ctx)
        prev: Key | None = None
        for _ in range(r.count("map", 3)):
            key = (r.text(), r.u8())
            if prev is not None and key <= prev:
                raise CodecError("map keys are not strictly sorted")
            prev = key
            child = blank_for_tag(key[1])._decode_store(r, ctx, actors, depth + 1)
            if child._store_is_bottom():
                raise CodecError(f"map entry {key[0]!r} holds nothing (not canonical)")
            out.entries[key] = child
        return out

    def __repr__(self) -> str:
        inner = ", ".join(
            f"{name!r}: {self.entries[(name, cls.TYPE_TAG)]!r}" for name, cls in self.keys()
        )
        return f"ORMap({{{inner}}})"
