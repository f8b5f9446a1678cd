"""The two MQTT payload formats a sensor may publish: JSON and compact binary.

JSON, for hand-written publishers and debugging::

    {"samples": [0.12, -0.03, ...], "rate": 4000, "t": 1795305600.125, "kind": "vibration"}

``samples`` (a non-empty list of finite numbers) and ``rate`` (samples per
second, > 0) are required; ``t`` is the first sample's time in seconds since the
Unix epoch (default: when the message arrived, minus the chunk's duration);
``kind`` is ``vibration`` (default) or ``temperature``.

Binary, for constrained publishers (about 4 bytes a sample instead of 8-20),
all little-endian::

    offset size  field
    0      2     magic b"ES"
    2      1     format version, 1
    3      1     kind: 0 vibration, 1 temperature
    4      8     t: float64, first sample's time, seconds since the epoch
    12     4     rate: float32, samples per second
    16     4     n: uint32, number of samples
    20     4n    samples: float32

A payload that breaks either format raises ``PayloadError`` with the reason;
the MQTT source counts and logs it and carries on.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

MAGIC, VERSION = b"ES", 1
HEADER = struct.Struct("<2sBBdfI")
KIND_CODES = ("vibration", "temperature")
MAX_SAMPLES = 1 << 20


class PayloadError(ValueError):
    """A message that is neither valid JSON nor valid binary sensor payload."""


@dataclass(frozen=True)
class Reading:
    kind: str
    start_s: float | None  # None: the publisher did not say
    rate_hz: float
    samples: npt.NDArray[np.float32]

    def __repr__(self) -> str:
        return f"Reading({self.kind!r}, rate={self.rate_hz}, samples={self.samples.size})"


def encode_binary(kind: str, start_s: float, rate_hz: float, samples: npt.ArrayLike) -> bytes:
    values = np.asarray(samples, dtype="<f4").reshape(-1)
    header = HEADER.pack(MAGIC, VERSION, KIND_CODES.index(kind), start_s, rate_hz, values.size)
    return header + values.tobytes()


def encode_json(kind: str, start_s: float, rate_hz: float, samples: npt.ArrayLike) -> bytes:
    values = [float(v) for v in np.asarray(samples, dtype=np.float64).reshape(-1)]
    return json.dumps({"kind": kind, "t": start_s, "rate": rate_hz, "samples": values}).encode()


def decode(payload: bytes) -> Reading:
    if payload[:2] == MAGIC:
        return _decode_binary(payload)
    if payload[:1] in (b"{", b" ", b"\n", b"\t", b"\r"):
        return _decode_json(payload)
    raise PayloadError("neither binary (magic 'ES') nor a JSON object")


def _decode_binary(payload: bytes) -> Reading:
    if len(payload) < HEADER.size:
        raise PayloadError(f"binary payload of {len(payload)} bytes is shorter than its header")
    _, version, kind, start_s, rate, n = HEADER.unpack_from(payload)
    if version != VERSION:
        raise PayloadError(f"binary payload format version {version}, this node reads {VERSION}")
    if kind >= len(KIND_CODES):
        raise PayloadError(f"unknown sensor kind code {kind}")
    if len(payload) != HEADER.size + 4 * n:
        raise PayloadError(
            f"header says {n} samples, body holds {len(payload) - HEADER.size} bytes"
        )
    samples = np.frombuffer(payload, dtype="<f4", offset=HEADER.size).astype(np.float32)
    return _checked(KIND_CODES[kind], start_s, rate, samples)


def _decode_json(payload: bytes) -> Reading:
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError(f"invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise PayloadError("JSON payload is not an object")
    raw, rate, start, kind = doc.get("samples"), doc.get("rate"), doc.get("t"), doc.get("kind")
    if not isinstance(raw, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in raw
    ):
        raise PayloadError("'samples' must be a list of numbers")
    if not isinstance(rate, int | float) or isinstance(rate, bool):
        raise PayloadError("'rate' must be a number")
    if start is not None and (not isinstance(start, int | float) or isinstance(start, bool)):
        raise PayloadError("'t' must be a number of seconds")
    kind = "vibration" if kind is None else kind
    if kind not in KIND_CODES:
        raise PayloadError(f"unknown sensor kind {kind!r}")
    samples = np.asarray(raw, dtype=np.float32)
    return _checked(kind, None if start is None else float(start), float(rate), samples)


def _checked(
    kind: str, start_s: float | None, rate: float, samples: npt.NDArray[np.float32]
) -> Reading:
    if not (math.isfinite(rate) and rate > 0):
        raise PayloadError(f"rate must be a positive number, not {rate}")
    if start_s is not None and not math.isfinite(start_s):
        raise PayloadError("'t' must be finite")
    if not 0 < samples.size <= MAX_SAMPLES:
        raise PayloadError(f"a payload holds 1 to {MAX_SAMPLES} samples, not {samples.size}")
    if not np.isfinite(samples).all():
        raise PayloadError("samples must be finite")
    return Reading(kind, start_s, rate, samples)
