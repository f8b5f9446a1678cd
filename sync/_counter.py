"""Shared machinery of GCounter and PNCounter: presence dots plus tallies.

A counter stores (a) *presence* dots, so that inside an ``ORMap`` a key removed
while someone concurrently incremented it stays present (update wins), and (b)
one ``Tally`` per direction. Each increment replaces the observed presence dots
with one fresh dot, so presence costs at most one dot per concurrent updater.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Self

from sync._causal import Dot, DotContext
from sync._codec import Reader, Writer
from sync._kernel import DotKernel
from sync._tally import Tally
from sync._values import check_int


class Counter(DotKernel):
    ds: dict[Dot, None]

    def __init__(self, ctx: DotContext | None = None) -> None:
        super().__init__(ctx)
        self.tallies = [Tally() for _ in range(self._directions())]

    def _directions(self) -> int:
        """How many tallies the type keeps. A method: compiled, a class attribute that
        a subclass overrides is looked up by name, once for every value made."""
        return 1

    def _bump(self, actor: str, direction: int, n: int) -> Self:
        tally = self.tallies[direction]
        total = check_int(tally.totals.get(actor, 0) + n, "counter total")
        delta = self._replace_all(actor, None)
        if total:  # every delta carries its actor's running total, even for n == 0
            tally.totals[actor] = total
            delta.tallies[direction].totals[actor] = total
        return delta

    # The tallies of two values of one type pair up by index (compiled, a zip is a
    # generic call and iterator; an index into a list is native).

    def _join_store(self, other: Self) -> None:
        super()._join_store(other)
        theirs = other.tallies
        for i, tally in enumerate(self.tallies):
            tally.join(theirs[i])

    def _novel_store(self, known: Self, out: DotContext) -> Self:
        part = super()._novel_store(known, out)
        theirs = known.tallies
        part.tallies = [tally.above(theirs[i]) for i, tally in enumerate(self.tallies)]
        return part

    def is_present(self) -> bool:
        """Some update is not yet cancelled: a presence dot, or a total above its base.

        The totals matter on their own: presence dots stand for the updates their
        writer had seen, but a delta carries only its writer's own total, so a replica
        that got a later dot before an earlier total (deltas out of causal order) can
        reset the dot while the total it never saw still counts.
        """
        return super().is_present() or any(t.value() for t in self.tallies)

    def _store_is_bottom(self) -> bool:
        return not self.ds and all(t.is_bottom() for t in self.tallies)

    def _reset_into(self, out: DotContext) -> Self:
        delta = super()._reset_into(out)
        delta.tallies = [t.reset() for t in self.tallies]
        return delta

    def _copy_store(self, ctx: DotContext) -> Self:
        twin = super()._copy_store(ctx)
        fresh = twin.tallies  # filled, not replaced: no second set of them is made
        for i, tally in enumerate(self.tallies):
            fresh[i].fill(tally)
        return twin

    def _decompose_store(self) -> list[Self]:
        parts = super()._decompose_store()
        for direction, tally in enumerate(self.tallies):
            for piece in tally.decompose():
                part = self._blank(DotContext())
                part.tallies[direction] = piece
                parts.append(part)
        return parts

    def _store_actors(self) -> Iterable[str]:
        found: set[str] = set()
        for tally in self.tallies:  # adds one by one: set.update is a call by name compiled
            for actor in tally.totals:
                found.add(actor)
            for actor in tally.bases:
                found.add(actor)
        return found

    def _store_names_only(self, actor: str) -> bool:
        return all(tally.names_only(actor) for tally in self.tallies)

    def _encode_store(self, w: Writer, index: dict[str, int]) -> None:
        super()._encode_store(w, index)
        for tally in self.tallies:
            tally.encode(w, index)

    def _decode_rest(self, r: Reader, actors: list[str]) -> None:
        for tally in self.tallies:  # the fresh, empty ones the constructor made
            tally.read(r, actors)

    def _encode_payload(self, w: Writer, payload: None) -> None:
        pass  # presence dots carry nothing

    def _decode_payload(self, r: Reader) -> None:
        return None
