"""Causal context: dots, version vectors and the compact dot context.

A *dot* ``(actor, n)`` names the n-th event of one actor. Every causal CRDT in
this package tags what it stores with dots and keeps a *dot context*: the set of
all dots it has ever seen, whether what they tagged is still stored or has since
been removed. A dot in the context but not in the store is a removal the replica
knows about; that is what lets joins tell "removed" from "never heard of".

The context is kept compact, as in Almeida, Shoker and Baquero, "Delta State
Replicated Data Types" (JPDC 2018, section 6): a version vector covers each
actor's contiguous prefix ``1..n`` and a *dot cloud* holds the dots seen out of
order. ``compact()`` folds cloud dots into the vector as gaps fill, so two
contexts holding the same set of dots always have the same representation,
which the canonical encoding and ``==`` rely on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Final, NamedTuple


def actor_name(node_id: str, epoch: int) -> str:
    """The actor a node writes as in one epoch: ``node@epoch`` (16 hex digits)."""
    return f"{node_id}@{epoch:016x}"


def node_of(actor: str) -> str:
    """The node id of an actor, whatever its epoch."""
    return actor.split("@", 1)[0]


class Dot(NamedTuple):
    """The ``counter``-th event of ``actor`` (counters start at 1)."""

    actor: str
    counter: int

    def __repr__(self) -> str:
        return f"Dot({self.actor!r}, {self.counter})"


# Dots built as the named tuple's ``__new__`` builds them, without running that
# Python-level function: compiled, ``Dot(actor, n)`` cost 7,000 instructions of an
# update's 58,000 (counted with cachegrind).
_new_tuple: Final = tuple.__new__  # (Final: compiled, a static, not a module lookup)


# Dot counters count per key, so most dots minted or decoded are an actor's first
# few, the same few for every key: each is built once and shared (dots are
# immutable), where building one cost 1,500 instructions and a look-up here 150.
_SHARED_COUNTERS: Final = 16
_SHARED_ACTORS: Final = 1024  # a bound: the cache is dropped and rebuilt past it
_SHARED: Final[dict[str, list[Dot | None]]] = {}


def new_dot(actor: str, counter: int) -> Dot:
    """``Dot(actor, counter)``, built fast (see above): one per dot minted or decoded."""
    if not 0 < counter < _SHARED_COUNTERS:
        return _new_tuple(Dot, (actor, counter))
    shared = _SHARED.get(actor)
    if shared is None:
        if len(_SHARED) >= _SHARED_ACTORS:
            _SHARED.clear()
        shared = _SHARED[actor] = [None] * _SHARED_COUNTERS
    dot = shared[counter]
    if dot is None:
        dot = shared[counter] = _new_tuple(Dot, (actor, counter))
    return dot


class VersionVector:
    """A map from actor to the highest contiguous event counter seen.

    Absent actors count as 0. The partial order is pointwise, and ``merge`` is the
    pointwise maximum.
    """

    __slots__ = ("_counters",)

    def __init__(self, counters: Mapping[str, int] | None = None) -> None:
        self._counters: dict[str, int] = {}
        if not counters:
            return
        for actor, n in counters.items():
            if n < 0:
                raise ValueError(f"version vector counter for {actor!r} is negative: {n}")
            if n:
                self._counters[actor] = n

    def __getitem__(self, actor: str) -> int:
        return self._counters.get(actor, 0)

    def __contains__(self, dot: tuple[str, int]) -> bool:
        return dot[1] <= self._counters.get(dot[0], 0)

    def __iter__(self) -> Iterator[str]:
        return iter(self._counters)

    def __len__(self) -> int:
        return len(self._counters)

    def items(self) -> Iterable[tuple[str, int]]:
        return self._counters.items()

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self._counters.items()))

    def copy(self) -> VersionVector:
        vv = VersionVector()
        vv._counters = dict(self._counters)
        return vv

    def advance(self, actor: str, counter: int) -> None:
        """Raise ``actor``'s entry to ``counter`` if that is higher."""
        if counter > self._counters.get(actor, 0):
            self._counters[actor] = counter

    def merge(self, other: VersionVector) -> None:
        mine = self._counters
        for actor, n in other._counters.items():
            if n > mine.get(actor, 0):
                mine[actor] = n

    def __le__(self, other: VersionVector) -> bool:
        theirs = other._counters
        return all(n <= theirs.get(a, 0) for a, n in self._counters.items())

    def __ge__(self, other: VersionVector) -> bool:
        return other <= self

    def __lt__(self, other: VersionVector) -> bool:
        return self <= other and self != other

    def __gt__(self, other: VersionVector) -> bool:
        return other < self

    def concurrent(self, other: VersionVector) -> bool:
        return not self <= other and not other <= self

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VersionVector) and self._counters == other._counters

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        body = ", ".join(f"{a!r}: {n}" for a, n in sorted(self._counters.items()))
        return f"VersionVector({{{body}}})"


class DotContext:
    """A set of dots, stored as a version vector plus a cloud of outliers.

    Invariant after every public operation (the *compact* form): no cloud dot is
    covered by the vector, and no cloud dot is the next one the vector expects.
    Hence equal sets of dots have equal representations.
    """

    __slots__ = ("cloud", "vv")

    def __init__(self, vv: VersionVector | None = None, cloud: Iterable[Dot] = ()) -> None:
        self.vv = vv if vv is not None else VersionVector()
        self.cloud: set[Dot] = set(cloud) if cloud else set()
        if self.cloud:
            self.compact()

    @classmethod
    def of(cls, dots: Iterable[Dot]) -> DotContext:
        return cls(cloud=dots)

    def __contains__(self, dot: Dot) -> bool:
        return dot[1] <= self.vv._counters.get(dot[0], 0) or dot in self.cloud

    def next_dot(self, actor: str) -> Dot:
        """The next dot ``actor`` should mint; assumes the actor's own dots are contiguous."""
        return new_dot(actor, self.vv._counters.get(actor, 0) + 1)

    def mint(self, actor: str) -> Dot:
        """``next_dot(actor)``, added: one lookup of the actor's counter, not two."""
        counters = self.vv._counters
        n = counters.get(actor, 0) + 1
        counters[actor] = n
        if self.cloud:
            self._absorb(actor)
        return new_dot(actor, n)

    def add(self, dot: Dot) -> None:
        """Insert one dot, keeping the compact form."""
        actor, n = dot
        counters = self.vv._counters
        have = counters.get(actor, 0)
        if n <= have:
            return
        if n == have + 1:
            counters[actor] = n
            if self.cloud:
                self._absorb(actor)
        else:
            self.cloud.add(dot)

    def merge(self, other: DotContext) -> None:
        self.vv.merge(other.vv)
        cloud = self.cloud
        if other.cloud:
            cloud |= other.cloud
        if cloud:
            self.compact()

    def compact(self) -> None:
        """Fold cloud dots into the vector where they extend it; drop covered ones."""
        counters, cloud = self.vv._counters, self.cloud
        # By index, not by field name: compiled, ``d.actor`` is a lookup by name.
        stale = [d for d in cloud if d[1] <= counters.get(d[0], 0)]
        for d in stale:
            cloud.discard(d)
        for actor in {d[0] for d in cloud}:
            self._absorb(actor)

    def _absorb(self, actor: str) -> None:
        counters = self.vv._counters
        n = counters.get(actor, 0)
        cloud = self.cloud
        # Probed with plain tuples, which hash and compare as the dots they name:
        # no Dot is built for a dot that is not there.
        while (actor, n + 1) in cloud:
            n += 1
            cloud.discard((actor, n))
        if n:
            counters[actor] = n

    def dots(self) -> Iterator[Dot]:
        """Every dot in the set; as many as the vector's counters add up to."""
        for actor, n in self.vv.items():
            for i in range(1, n + 1):
                yield new_dot(actor, i)
        yield from self.cloud

    def size(self) -> int:
        """How many dots ``dots()`` would yield, without yielding them."""
        total = len(self.cloud)
        for n in self.vv._counters.values():  # (a loop: compiled, no generator object)
            total += n
        return total

    def add_unseen(self, known: DotContext, out: DotContext) -> None:
        """Add to ``out`` every dot of this set that ``known`` lacks.

        Only the dots above ``known``'s vector are looked at: a large context that
        ``known`` has mostly seen costs its actors, not its dots.
        """
        seen, seen_cloud = known.vv._counters, known.cloud
        for actor, n in self.vv._counters.items():
            for i in range(seen.get(actor, 0) + 1, n + 1):
                if not seen_cloud or (actor, i) not in seen_cloud:
                    out.add(new_dot(actor, i))
        for dot in self.cloud:
            if dot not in known:
                out.add(dot)

    def actors(self) -> set[str]:
        found = set(self.vv._counters)
        if self.cloud:
            found.update(d.actor for d in self.cloud)
        return found

    def copy(self) -> DotContext:
        vv = VersionVector()
        vv._counters = self.vv._counters.copy()
        return DotContext(vv, self.cloud)  # a cloud already compact stays so

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DotContext) and self.vv == other.vv and self.cloud == other.cloud

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        cloud = ", ".join(repr(d) for d in sorted(self.cloud))
        return f"DotContext({self.vv!r}, cloud={{{cloud}}})"
