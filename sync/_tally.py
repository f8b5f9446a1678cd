"""Per-actor running totals with observed-reset bases: the payload of counters.

Each actor only ever raises its own total, so totals join by maximum. A reset
records, per actor, the total it observed as a *base*; bases also join by maximum.
An actor contributes ``total - base``: exactly the increments no reset observed.
Before a reset's own causal past has arrived a base may exceed the total known
here; the contribution then reads as 0 until the increments catch up.
"""

from __future__ import annotations

from typing import Final

from sync._codec import Reader, Writer
from sync._errors import CodecError

_EMPTY: Final = b"\x00\x00"  # an empty tally's encoding: no totals, no bases, one part


class Tally:
    __slots__ = ("bases", "totals")

    def __init__(self) -> None:
        self.totals: dict[str, int] = {}
        self.bases: dict[str, int] = {}

    def value(self) -> int:
        bases = self.bases
        return sum(max(0, t - bases.get(a, 0)) for a, t in self.totals.items())

    def join(self, other: Tally) -> None:
        _join_max(self.totals, other.totals)
        _join_max(self.bases, other.bases)

    def above(self, known: Tally) -> Tally:
        """The entries of this tally that exceed ``known``'s."""
        part = Tally()
        _above(self.totals, known.totals, part.totals)
        _above(self.bases, known.bases, part.bases)
        return part

    def reset(self) -> Tally:
        """Set each base to the observed total; return the bases that moved."""
        delta = Tally()
        for actor, total in self.totals.items():
            if total > self.bases.get(actor, 0):
                self.bases[actor] = total
                delta.bases[actor] = total
        return delta

    def is_bottom(self) -> bool:
        return not self.totals and not self.bases

    def copy(self) -> Tally:
        twin = Tally()
        twin.fill(self)
        return twin

    def fill(self, other: Tally) -> None:
        """Copy ``other``'s entries into this (empty) tally."""
        if other.totals:
            self.totals.update(other.totals)
        if other.bases:
            self.bases.update(other.bases)

    def decompose(self) -> list[Tally]:
        parts = []
        for attr in ("totals", "bases"):
            for actor, n in getattr(self, attr).items():
                part = Tally()
                getattr(part, attr)[actor] = n
                parts.append(part)
        return parts

    def actors(self) -> set[str]:
        return set(self.totals) | set(self.bases)

    def names_only(self, actor: str) -> bool:
        """Whether ``actor`` is the only actor named here (if any is)."""
        return _names_only(self.totals, actor) and _names_only(self.bases, actor)

    def encode(self, w: Writer, index: dict[str, int]) -> None:
        if not self.totals and not self.bases:  # (a counter never decremented)
            w.raw(_EMPTY)
            return
        w.counter_dict(index, self.totals)
        w.counter_dict(index, self.bases)

    def read(self, r: Reader, actors: list[str]) -> None:
        """Decode into this (empty) tally."""
        _read_entries(r, actors, self.totals)
        _read_entries(r, actors, self.bases)

    def __repr__(self) -> str:
        return f"Tally(totals={self.totals!r}, bases={self.bases!r})"


def _names_only(entries: dict[str, int], actor: str) -> bool:
    return not entries or (len(entries) == 1 and actor in entries)


def _read_entries(r: Reader, actors: list[str], entries: dict[str, int]) -> None:
    """Totals or bases, into the empty ``entries`` (a function, not a loop over the
    pair of dicts: that built a tuple per tally read)."""
    if r.empty():
        return
    prev = -1
    for _ in range(r.count("tally", 2)):
        ix = r.uvarint()
        if ix >= len(actors) or ix <= prev:
            raise CodecError("tally entries are unsorted or name an unknown actor")
        prev = ix
        n = r.uvarint()
        if n == 0 or n >> 63:  # (n >= 2**63; compiled, a shift is native, 2**63 is boxed)
            raise CodecError(f"tally entry {n} outside 1 .. 2**63-1")
        entries[actors[ix]] = n


def _join_max(mine: dict[str, int], theirs: dict[str, int]) -> None:
    for actor, n in theirs.items():
        if n > mine.get(actor, 0):
            mine[actor] = n


def _above(mine: dict[str, int], known: dict[str, int], out: dict[str, int]) -> None:
    for actor, n in mine.items():
        if n > known.get(actor, 0):
            out[actor] = n
