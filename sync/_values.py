"""What the CRDTs may hold, checked and frozen at the door.

Register values are JSON-like: None, bool, int (signed 64-bit), finite float,
str, bytes, and lists and string-keyed dicts of these. They are frozen on the way
in (lists become tuples, dicts read-only mappings) so a caller cannot change
replicated state by mutating an object after writing it.

Set elements are str, int or bytes: hashable, totally ordered within a type, and
free of Python's ``True == 1`` and ``1 == 1.0`` aliasing, which would otherwise make
two states compare equal while encoding differently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, TypeAlias

from sync._codec import INT_BITS, MAX_DEPTH, encode_value

Value: TypeAlias = object
Element: TypeAlias = str | int | bytes
Number: TypeAlias = int | float

_INT_MIN: Final = -(1 << (INT_BITS - 1))
_INT_MAX: Final = (1 << (INT_BITS - 1)) - 1
# Compiled, an int below 2**62 in magnitude is held unboxed, and comparing it with a
# bound that is too is a machine comparison; the 64-bit bounds above are boxed, and
# comparing with them is a generic Python comparison (two per timestamp stored).
_SMALL: Final = (1 << 62) - 1


def check_int(n: int, what: str = "integer") -> int:
    if -_SMALL <= n <= _SMALL:  # (the common case, decided without the boxed bounds)
        return n
    if not _INT_MIN <= n <= _INT_MAX:
        raise ValueError(f"{what} {n} does not fit in a signed {INT_BITS}-bit integer")
    return n


def check_float(x: float) -> float:
    if not math.isfinite(x):
        raise ValueError(f"only finite floats can be stored, not {x!r}")
    return 0.0 if x == 0.0 else x  # fold -0.0: equal values must encode alike


def freeze_value(v: object, depth: int = 0) -> object:
    """Validate a register value and return an immutable copy of it."""
    if depth > MAX_DEPTH:
        raise ValueError(f"value nested deeper than {MAX_DEPTH} levels")
    # Compiled, isinstance on a tuple of types is one type check per type, where one
    # on ``bool | str | bytes`` builds that union object on every call.
    if v is None or isinstance(v, (str, bool, bytes)):
        return v
    if isinstance(v, int):
        return check_int(v)
    if isinstance(v, float):
        return check_float(v)
    if isinstance(v, (list, tuple)):
        return tuple(freeze_value(item, depth + 1) for item in v)
    if isinstance(v, Mapping):
        out: dict[str, object] = {}
        for key in sorted(v):
            if not isinstance(key, str):
                raise TypeError(f"dict keys must be str, not {type(key).__name__}")
            out[key] = freeze_value(v[key], depth + 1)
        return MappingProxyType(out)
    raise TypeError(f"cannot store a value of type {type(v).__name__}")


def check_element(e: object) -> Element:
    if isinstance(e, bool) or not isinstance(e, (str, int, bytes)):  # (a tuple: see above)
        raise TypeError(f"set elements are str, int or bytes, not {type(e).__name__}")
    if isinstance(e, int):
        check_int(e, "set element")
    return e


def check_number(x: object) -> Number:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"expected an int or float, not {type(x).__name__}")
    return check_int(x) if isinstance(x, int) else check_float(x)


def value_order_key(v: object) -> bytes:
    """A total order on values: their canonical bytes. Used to break exact ties."""
    return encode_value(v)


def element_order_key(e: Element) -> tuple[int, Element]:
    """Sort key for set elements of mixed types: ints, then str, then bytes."""
    if isinstance(e, int):
        return (0, e)
    if isinstance(e, str):
        return (1, e)
    return (2, e)


def number_order_key(x: Number) -> tuple[Number, int]:
    """Numeric order; an int sorts below an equal float so ties break the same way everywhere."""
    return (x, 1 if isinstance(x, float) else 0)


def thaw(v: object) -> object:
    """A plain (mutable, JSON-ready) copy of a frozen value."""
    if isinstance(v, tuple):
        return [thaw(x) for x in v]
    if isinstance(v, Mapping):
        return {k: thaw(x) for k, x in v.items()}
    return v
