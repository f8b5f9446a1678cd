"""AWSet: add-wins observed-remove set.

Semantics (Shapiro et al., "A comprehensive study of CRDTs", INRIA RR-7506, 2011,
OR-Set; delta form after Almeida, Shoker, Baquero, JPDC 2018, figure 3):

- ``add(e)`` tags ``e`` with a fresh dot and drops the dots of ``e`` it observed, so
  one element is stored under at most one dot per concurrent adder.
- ``remove(e)`` removes only the dots of ``e`` this replica has observed.
- A concurrent add and remove of the same element: the add's dot was not observed
  by the remove, so it survives. **Add wins.** There is no tie to break.
- Garbage: removed dots leave nothing behind but their place in the compact dot
  context, which folds into one counter per actor once delivery catches up.

Elements are str, int or bytes (see ``sync._values``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Self

from sync._causal import Dot, DotContext
from sync._codec import Reader, Writer
from sync._errors import CodecError
from sync._kernel import DotKernel
from sync._values import Element, check_element, element_order_key

_STR, _INT, _BYTES = 0, 1, 2


class AWSet(DotKernel):
    ds: dict[Dot, Element]
    TYPE_TAG = 5

    def _blank(self, ctx: DotContext) -> Self:
        return AWSet(ctx)  # type: ignore[return-value]  # (Self is AWSet: a leaf)

    def __init__(self, ctx: DotContext | None = None) -> None:
        super().__init__(ctx)
        self._dots_of: dict[Element, set[Dot]] = {}

    def _put(self, dot: Dot, payload: Element) -> None:
        self.ds[dot] = payload
        self._dots_of.setdefault(payload, set()).add(dot)

    def _drop(self, dot: Dot) -> None:
        element = self.ds.pop(dot)
        dots = self._dots_of[element]
        dots.discard(dot)
        if not dots:
            del self._dots_of[element]

    def add(self, actor: str, element: Element) -> AWSet:
        """Add ``element`` on behalf of ``actor``; return the delta."""
        element = check_element(element)
        delta = self._delta()
        self._remove(self._dots_of.get(element, ()), delta)
        self._mint(actor, element, delta)
        return delta

    def remove(self, element: Element) -> AWSet:
        """Remove the observed instances of ``element``; return the delta (empty if absent)."""
        delta = self._delta()
        self._remove(self._dots_of.get(element, ()), delta)
        return delta

    def __contains__(self, element: object) -> bool:
        return element in self._dots_of and not isinstance(element, bool)

    def __iter__(self) -> Iterator[Element]:
        return iter(self.elements())

    def __len__(self) -> int:
        return len(self._dots_of)

    def elements(self) -> list[Element]:
        return sorted(self._dots_of, key=element_order_key)

    def value(self) -> frozenset[Element]:
        return frozenset(self._dots_of)

    def _encode_payload(self, w: Writer, payload: Element) -> None:
        if isinstance(payload, str):
            w.u8(_STR)
            w.text(payload)
        elif isinstance(payload, int):
            w.u8(_INT)
            w.svarint(payload)
        else:
            w.u8(_BYTES)
            w.blob(payload)

    def _decode_payload(self, r: Reader) -> Element:
        kind = r.u8()
        if kind == _STR:
            return r.text()
        if kind == _INT:
            return r.int64()
        if kind == _BYTES:
            return r.blob()
        raise CodecError(f"unknown set element kind {kind}")

    def __repr__(self) -> str:
        return f"AWSet({self.elements()!r})"
