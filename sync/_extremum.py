"""MaxRegister and MinRegister: registers that only move one way.

Semantics (the max/min join semilattice of Shapiro et al., INRIA RR-7506, 2011,
embedded as a causal dot store so that it can be reset inside an ``ORMap``):

- ``set(x)`` on a MaxRegister stores ``max(x, current)`` under a fresh dot and
  drops every observed dot; a write that would not raise the maximum changes
  nothing and returns an empty delta (so sensor pipelines writing every window
  send nothing while the peak holds).
- Concurrent writes are both kept; the reader sees the greatest. Ties between an
  int and an equal float break toward the float, the same way everywhere.
- ``reset()`` clears the observed values. Known limit, chosen for bounded state:
  a write concurrent with a reset carries the maximum its writer had observed,
  so after that merge the old maximum can reappear. An exact reset would have to
  keep every write until it is causally stable.

MinRegister is the mirror image.
"""

from __future__ import annotations

from typing import Self

from sync._causal import Dot, DotContext
from sync._codec import Reader, Writer
from sync._errors import CodecError
from sync._kernel import DotKernel
from sync._values import Number, check_number, number_order_key

_INT, _FLOAT = 0, 1


class _Extremum(DotKernel):
    ds: dict[Dot, Number]
    _SIGN = 1  # +1 keeps the maximum, -1 the minimum

    def _key(self, x: Number) -> tuple[Number, int]:
        value, kind = number_order_key(x)
        return (value * self._SIGN, kind)

    def set(self, actor: str, x: Number) -> Self:
        x = check_number(x)
        current = self.value()
        if current is not None and self._key(x) <= self._key(current):
            return self._delta()
        return self._replace_all(actor, x)

    def value(self) -> Number | None:
        if not self.ds:
            return None
        return max(self.ds.values(), key=self._key)

    def _encode_payload(self, w: Writer, payload: Number) -> None:
        if isinstance(payload, int):
            w.u8(_INT)
            w.svarint(payload)
        else:
            w.u8(_FLOAT)
            w.float64(payload)

    def _decode_payload(self, r: Reader) -> Number:
        kind = r.u8()
        if kind == _INT:
            return r.int64()
        if kind == _FLOAT:
            return r.float64()
        raise CodecError(f"unknown number kind {kind}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value()!r})"


class MaxRegister(_Extremum):
    TYPE_TAG = 7
    _SIGN = 1

    def _blank(self, ctx: DotContext) -> Self:
        return MaxRegister(ctx)  # type: ignore[return-value]  # (Self is MaxRegister: a leaf)


class MinRegister(_Extremum):
    TYPE_TAG = 8
    _SIGN = -1

    def _blank(self, ctx: DotContext) -> Self:
        return MinRegister(ctx)  # type: ignore[return-value]  # (Self is MinRegister: a leaf)
