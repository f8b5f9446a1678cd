"""EWFlag: enable-wins flag.

Semantics (Almeida, Shoker, Baquero, JPDC 2018, section 7.1):

- ``enable()`` stores a fresh dot and drops every dot it observed;
- ``disable()`` drops every observed dot and stores nothing;
- the flag reads true while any dot is stored.

A concurrent enable and disable: the disable cannot have observed the enable's
dot, so the dot survives. **Enable wins.** Stored dots never exceed the number of
concurrent enablers, and disabled dots live on only as context.
"""

from __future__ import annotations

from typing import Self

from sync._causal import Dot, DotContext
from sync._codec import Reader, Writer
from sync._errors import CodecError
from sync._kernel import DotKernel


class EWFlag(DotKernel):
    ds: dict[Dot, None]
    TYPE_TAG = 6

    def _blank(self, ctx: DotContext) -> Self:
        return EWFlag(ctx)  # type: ignore[return-value]  # (Self is EWFlag: a leaf)

    def enable(self, actor: str) -> EWFlag:
        return self._replace_all(actor, None)

    def disable(self) -> EWFlag:
        return self.reset()

    def value(self) -> bool:
        return bool(self.ds)

    def _encode_payload(self, w: Writer, payload: None) -> None:
        w.u8(0)

    def _decode_payload(self, r: Reader) -> None:
        if r.u8() != 0:
            raise CodecError("malformed EWFlag payload")

    def __repr__(self) -> str:
        return f"EWFlag({self.value()})"
