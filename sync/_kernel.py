"""DotKernel: the dot store behind every set-, flag- and register-like type.

A kernel maps dots to payloads. Joining two kernels (Almeida, Shoker, Baquero,
JPDC 2018, section 6.1) keeps a dot when both sides store it, or when one side
stores it and the other has never seen it; a dot one side stores and the other has
seen but no longer stores was removed there, and stays removed. Removal therefore
needs no tombstones beyond the (compact) context.

Joins cost time in proportion to the smaller of the two sides' relevant parts, so
merging a small delta into a large state is cheap: removals are found by walking
the delta's context rather than the whole store, whenever that is much smaller.

The kernel is not ``Generic`` over its payload type: ``Generic`` is a Python base
class at run time, which a mypyc-compiled core cannot afford (see ``sync._crdt``).
Each subclass narrows ``ds`` and the payload hooks to its own payload type instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Final, TypeVar

from sync._causal import Dot, DotContext, new_dot
from sync._codec import Reader, Writer
from sync._crdt import CRDT, read_actor_index, read_dot_counter
from sync._errors import CodecError

K = TypeVar("K", bound="DotKernel")

# How many stored dots looking one up in a context costs about as much as making one
# dot of a context's vector: a join walks the context instead of the other side's
# store only when the context is this many times smaller.
_DOT_COST: Final = 8


def _only(store: dict[Dot, Any]) -> Dot:
    """The one dot of a store that holds one (compiled, a loop over the dict is
    native, where ``next(iter(store))`` is two generic calls)."""
    for dot in store:
        return dot
    raise ValueError("the store is empty")


class DotKernel(CRDT):
    """A map from dots to payloads, joined causally. Subclasses give payload codecs."""

    ds: dict[Dot, Any]  # subclasses narrow the payload type

    def __init__(self, ctx: DotContext | None = None) -> None:
        super().__init__(ctx)
        self.ds = {}

    # Index hooks: subclasses that look payloads up by value override both.
    def _put(self, dot: Dot, payload: Any) -> None:
        self.ds[dot] = payload

    def _drop(self, dot: Dot) -> None:
        del self.ds[dot]

    # ---- mutator building blocks ----------------------------------------------

    def _delta(self: K) -> K:
        return self._blank(DotContext())  # compiled, a direct call (see CRDT._blank)

    def _mint(self: K, actor: str, payload: Any, delta: K) -> None:
        """Store ``payload`` under a fresh dot of ``actor``, here and in ``delta``."""
        dot = self.ctx.mint(actor)
        self._put(dot, payload)
        delta._put(dot, payload)
        delta.ctx.add(dot)

    def _remove(self: K, dots: Iterable[Dot], delta: K) -> None:
        """Remove observed ``dots`` here and record their removal in ``delta``."""
        for dot in list(dots):
            self._drop(dot)
            delta.ctx.add(dot)

    def _replace_all(self: K, actor: str, payload: Any) -> K:
        """Remove every observed dot and store ``payload`` under a new one."""
        delta = self._delta()
        held = self.ds
        if len(held) == 1:
            # The usual case: the one write (or presence dot) of the last update. One
            # dot needs no copy of the store to iterate over while it changes.
            dot = _only(held)
            self._drop(dot)
            delta.ctx.add(dot)
        elif held:
            self._remove(held, delta)
        self._mint(actor, payload, delta)
        return delta

    # ---- store-level contract -------------------------------------------------

    def _join_store(self: K, other: K) -> None:
        mine, my_ctx = self.ds, self.ctx
        for dot, payload in other.ds.items():
            if dot not in mine and dot not in my_ctx:
                self._put(dot, payload)
        for dot in other._removed_from(self):
            self._drop(dot)

    def _novel_store(self: K, known: K, out: DotContext) -> K:
        part = self._blank(out)
        seen = known.ctx
        for dot, payload in self.ds.items():
            if dot not in seen:
                part._put(dot, payload)
        for dot in self._removed_from(known):
            out.add(dot)
        return part

    def _removed_from(self: K, known: K) -> list[Dot]:
        """Dots ``known`` stores that this side has seen and no longer stores."""
        mine, theirs, ctx = self.ds, known.ds, self.ctx
        if ctx.size() * _DOT_COST < len(theirs):
            return [d for d in ctx.dots() if d in theirs and d not in mine]
        return [d for d in theirs if d in ctx and d not in mine]

    def _store_dots(self) -> Iterator[Dot]:
        return iter(self.ds)

    def _holds(self, dot: Dot) -> bool:
        return dot in self.ds

    def _store_is_bottom(self) -> bool:
        return not self.ds

    def _reset_into(self: K, out: DotContext) -> K:
        delta = self._blank(out)
        self._remove(self.ds, delta)
        return delta

    def _copy_store(self: K, ctx: DotContext) -> K:
        twin = self._blank(ctx)
        for dot, payload in self.ds.items():
            twin._put(dot, payload)
        return twin

    def _decompose_store(self: K) -> list[K]:
        parts = []
        for dot, payload in self.ds.items():
            part = self._blank(DotContext.of([dot]))
            part._put(dot, payload)
            parts.append(part)
        return parts

    def _store_actors(self) -> Iterable[str]:
        return ()

    def _store_names_only(self, actor: str) -> bool:
        return True  # no actor outside the dots (a subclass naming some overrides both)

    def _encode_store(self, w: Writer, index: dict[str, int]) -> None:
        ds = self.ds
        if len(ds) == 1:  # one presence dot or one write dominates: nothing to sort
            for dot, payload in ds.items():
                w.one_row(index[dot[0]])  # the count and the dot's actor, one part
                w.uvarint(dot[1])
                self._encode_payload(w, payload)
            return
        w.uvarint(len(ds))
        for dot in sorted(ds, key=lambda d: (index[d[0]], d[1])):
            w.uvarint(index[dot[0]])
            w.uvarint(dot[1])
            self._encode_payload(w, ds[dot])

    def _decode_store(self: K, r: Reader, ctx: DotContext, actors: list[str], depth: int) -> K:
        kernel = self._blank(ctx)
        prev_ix = prev_n = -1
        for _ in range(r.count("dot store", 2)):
            ix = read_actor_index(r, actors)
            n = read_dot_counter(r)
            if ix < prev_ix or (ix == prev_ix and n <= prev_n):
                raise CodecError("dot store entries are not strictly sorted")
            prev_ix, prev_n = ix, n
            dot = new_dot(actors[ix], n)
            if dot not in ctx:  # checked as read: see _check_decoded_store
                raise CodecError(f"stored dot {dot!r} is not covered by the context")
            kernel._put(dot, kernel._decode_payload(r))
        kernel._decode_rest(r, actors)
        return kernel

    def _check_decoded_store(self) -> None:
        """Nothing is left to check: ``_decode_store`` checked each dot's cover as it
        read the dot, and a kernel's dots are its keys, so none is stored twice (an
        ``ORMap`` checks across its kernels, which share its context)."""

    def _decode_rest(self, r: Reader, actors: list[str]) -> None:
        """Read what a subclass stores after the dots (a hook, called on the new value)."""

    # ---- payloads -------------------------------------------------------------

    def _encode_payload(self, w: Writer, payload: Any) -> None:
        raise NotImplementedError

    def _decode_payload(self, r: Reader) -> Any:
        """Read one payload (an instance method: a compiled core calls it through the
        vtable, where a classmethod called through ``cls`` is a Python-level lookup)."""
        raise NotImplementedError
