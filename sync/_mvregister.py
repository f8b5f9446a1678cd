"""MVRegister: multi-value register.

Semantics (Shapiro et al., INRIA RR-7506, 2011, section 3.2.2; delta form in
Almeida, Shoker, Baquero, JPDC 2018):

- ``write(v)`` drops every value it observed and stores ``v`` under a fresh dot;
- concurrent writes all survive, and a reader sees each of them; no write is
  silently discarded, and nothing is broken as a tie. A later write that observed
  them collapses them back to one.
- ``reset()`` clears the values observed; a concurrent write survives it.

``value()`` returns the distinct values, ordered by their canonical encoding so
every replica lists them alike.
"""

from __future__ import annotations

from typing import Self

from sync._causal import Dot, DotContext
from sync._codec import Reader, Writer
from sync._kernel import DotKernel
from sync._values import freeze_value, value_order_key


class MVRegister(DotKernel):
    ds: dict[Dot, object]
    TYPE_TAG = 4

    def _blank(self, ctx: DotContext) -> Self:
        return MVRegister(ctx)  # type: ignore[return-value]  # (Self is MVRegister: a leaf)

    def write(self, actor: str, value: object) -> MVRegister:
        return self._replace_all(actor, freeze_value(value))

    def value(self) -> tuple[object, ...]:
        distinct = {value_order_key(v): v for v in self.ds.values()}
        return tuple(distinct[k] for k in sorted(distinct))

    def _encode_payload(self, w: Writer, payload: object) -> None:
        w.value(payload)

    def _decode_payload(self, r: Reader) -> object:
        return r.value()

    def __repr__(self) -> str:
        return f"MVRegister({list(self.value())!r})"
