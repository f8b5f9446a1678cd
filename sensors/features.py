"""Features of a batch of windows, computed for the whole batch at once.

The model sees, per window, what each fault kind changes, in units where a
healthy machine's values stay in a narrow range:

- log band powers of the Hann-windowed spectrum of the centred window (equal
  bands from bin 1 to Nyquist; the count is the sensor kind's,
  ``SensorSpec.bands``): bearing faults add energy at high frequencies, spikes
  spread it over every band. The log is ``fast_log``, piecewise linear between
  powers of two;
- the window's Hann-weighted mean (a sensor's bias: drift moves it; the taper
  keeps a fraction of a shaft cycle from leaking into it), the least-squares slope
  in units per window (drift inside the window), the log RMS of the spectrum
  probes (the Hann-weighted standard deviation, near the floor for a stuck
  sensor), and of the first differences: the log standard deviation (stuck:
  the floor), the crest factor and the log kurtosis (a spike is two huge
  steps), and the fraction that are exactly zero (stuck).

The spectrum is not a full FFT. A band's power is the mean power of the
spectrum at probe frequencies two bins apart, at bins 1.5, 3.5, 5.5, ... up to
just under Nyquist (a Hann window's main lobe is four bins wide, so probes two
bins apart miss no frequency, and each band holds whole probes, centred in it).
A probe is the window's projection on a Hann-tapered cosine and sine, so all
probes are two matrix products with precomputed matrices. Both products are
half the window long: taking the phase at the window's centre, the cosine part
of a probe only sees ``x[i] + x[w-1-i]`` and the sine part only ``x[i] -
x[w-1-i]``. For the vibration kind (64 bands of 256-sample windows) that is
64 probes, two (n x 128) @ (128 x 65) products (the extra column: the Hann
mean, the slope), cheaper than numpy's real FFT of the window (which gives
twice the bins the bands need, at half-integer offsets from the probes).

Everything is float32 numpy over the (n, window) array; no per-sample or
per-window Python loop. numpy pays a fixed cost per inner loop, and an
operation that broadcasts a per-window value runs one loop per window, so
sums and means are columns of the matrix products or matrix-vector products,
the window is centred inside the cosine product (never as an array), and the
first differences are taken over the whole batch as one flat array. A window
whose samples all repeat gets exactly zero power and exactly its value as its
mean, whatever the batch (a BLAS sum differs with the batch's shape in the
last bits). Temperature and vibration use the same features; each kind has
its own model, trained on its own healthy windows.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

STATS = (
    "mean",
    "slope",
    "log_probe_rms",
    "log_diff_std",
    "diff_crest",
    "log_diff_kurtosis",
    "repeats",
)
_FLOOR = np.float32(1e-6)  # keeps logs finite for a frozen sensor
PROBE_SPACING = 2  # bins between spectrum probes: half a Hann main lobe


def names(bands: int) -> tuple[str, ...]:
    return tuple(f"band{i}" for i in range(bands)) + STATS


def width(bands: int) -> int:
    return bands + len(STATS)


def features(windows: npt.NDArray[np.float32], bands: int | None = None) -> npt.NDArray[np.float32]:
    """(n, w) windows -> (n, ``width(bands)``) features (default: one probe per
    band, ``w / 4`` bands). A one-off: a pipeline keeps a ``FeatureExtractor``,
    whose buffers are reused."""
    x = np.asarray(windows, dtype=np.float32)
    return FeatureExtractor(x.shape[1], max(1, x.shape[0]), bands).compute(x).copy()


def probe_matrices(window: int, bands: int) -> tuple[npt.NDArray[np.float64], ...]:
    """(cosine, sine) matrices, each (window / 2, probes): column ``i * bands + b``
    is band ``b``'s ``i``-th probe, so a band's probes are sums of whole slabs."""
    half, probes = window // 2, window // 2 // PROBE_SPACING
    per = probes // bands
    order = np.arange(probes).reshape(bands, per).T.reshape(-1)  # slab i holds probes i, i+per..
    bins = PROBE_SPACING * order + 1.5
    n = np.arange(half, dtype=np.float64) - (window - 1) / 2  # phase taken at the centre
    angle = 2 * np.pi * np.outer(n, bins) / window
    taper = np.hanning(window)[:half, None]
    return taper * np.cos(angle), taper * np.sin(angle)


def folded_matrices(window: int, bands: int) -> tuple[npt.NDArray[np.float32], ...]:
    """The matrices the folded halves are multiplied by: (cosine probes with the
    centring folded in | Hann-weighted mean) for ``x[i] + x[w-1-i]``, and (sine
    probes | least-squares slope) for ``x[i] - x[w-1-i]``.

    Centring: the even half of the centred window is ``even - 2 * mean`` with
    ``mean = sum(even) / w``, so its product with ``C`` is ``even @ (C - 2/w *
    colsum(C))``. A constant has no odd half, so the sines need nothing. The
    Hann taper is symmetric and the slope's ramp antisymmetric, so each reads one
    half."""
    cos, sin = probe_matrices(window, bands)
    half = window // 2
    cos -= (2 / window) * cos.sum(axis=0)
    hann = np.hanning(window)
    ramp = np.arange(window, dtype=np.float64) - (window - 1) / 2
    hann_mean = hann[:half] / hann.sum()
    slope = (ramp * window / (ramp @ ramp))[:half]  # in units per window
    return (
        np.column_stack([cos, hann_mean]).astype(np.float32),
        np.column_stack([sin, slope]).astype(np.float32),
    )


class FeatureExtractor:
    """Features of up to ``rows`` windows of ``window`` samples per call.

    Every intermediate lives in a buffer allocated once (arrays this size are
    mapped fresh from the kernel on each allocation, and the page faults of new
    temporaries cost more than the arithmetic), and one full-size scratch
    buffer serves in turn for the differences, the folded window and the sine
    powers, so the working set stays small enough to leave the model's weights
    some of the core's cache. Each full-size numpy pass costs as much as a
    third of a matrix product, so the window is read in three passes (the
    differences, and the two halves of the fold), and everything else linear
    (centring, the Hann-weighted mean, the slope) rides in the two matrix
    products as extra columns. One extractor is for one thread; ``compute``
    returns a view of its buffer, valid until the next call.
    """

    def __init__(self, window: int, rows: int, bands: int | None = None) -> None:
        probes = window // 2 // PROBE_SPACING
        bands = max(1, probes) if bands is None else bands
        if window < 16 or window % (2 * PROBE_SPACING) or bands < 1 or probes % bands:
            raise ValueError(f"{window}-sample windows do not split into {bands} equal bands")
        self.window, self.rows, self.bands = window, rows, bands
        self._probes, self._per_band = probes, probes // bands
        self._cos, self._sin = folded_matrices(window, bands)
        self._out = np.empty((rows, width(bands)), np.float32)
        # The differences (a window a row), then the fold's three half-window blocks.
        self._scratch = np.empty(rows * window * 3 // 2, np.float32)
        self._cos_part = np.empty((rows, probes + 1), np.float32)  # then the powers
        self._sin_part = np.empty((rows, probes + 1), np.float32)
        self._repeats = np.zeros((rows, -(-window // 8) * 8), np.bool_)  # whole uint64 words
        self._by_probes = np.full(probes, 1 / probes, np.float32)
        self._by_diffs = np.full(window, 1 / (window - 1), np.float32)
        self._by_diffs[-1] = 0.0  # the step into the next window
        self._row_starts = np.arange(rows) * window
        self._logs = np.empty(3 * rows, np.float32)  # what takes a log: three rows of n
        self._views: dict[int, _Views] = {}

    def _views_of(self, n: int) -> _Views:
        """The buffers' views for a batch of ``n`` windows: made once per size (a
        pipeline's batches are all one size), not sliced afresh in every call."""
        views = self._views.get(n)
        if views is None:
            w, half, bands = self.window, self.window // 2, self.bands
            out, size = self._out[:n], n * half
            flat = self._scratch[: n * w]
            even, odd, first = (self._scratch[i * size : (i + 1) * size].reshape(n, half)
                                for i in range(3))  # fmt: skip
            cos, sin = self._cos_part[:n], self._sin_part[:n]
            sines = self._scratch[: sin.size].reshape(sin.shape)
            logs = self._logs[: 3 * n].reshape(3, n)
            views = _Views(out, out[:, :bands], out[:, bands:], logs, flat, flat.reshape(n, w),
                           self._repeats[:n], even, odd, first, cos, sin, sines,
                           self._row_starts[:n])  # fmt: skip
            self._views[n] = views
        return views

    def compute(self, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        n, w = windows.shape
        if w != self.window or n > self.rows:
            raise ValueError(f"{windows.shape} windows: this extractor takes up to "
                             f"({self.rows}, {self.window})")  # fmt: skip
        x, v, probes = windows, self._views_of(n), self._probes
        stats, logs = v.stats, v.logs
        repeats = self._differences(x, v)  # first: x is read twice, in cache
        self._fold(x, v)
        cos = np.matmul(v.even, self._cos, out=v.cos)  # probes, Hann mean
        sin = np.matmul(v.odd, self._sin, out=v.sin)  # probes, slope
        stats[:, 0] = cos[:, probes]
        stats[:, 1] = sin[:, probes]
        # Whole rows, the last column included (and weighted 0 or dropped after):
        # an operation on contiguous arrays is one vector loop, on a slice of
        # each row one loop per row, three times slower here.
        power = np.multiply(cos, cos, out=cos)
        power += np.multiply(sin, sin, out=v.sines)  # the fold is spent
        if _MAX(repeats) == w - 1:  # a frozen window
            frozen = repeats == w - 1
            # Exactly nothing and exactly its value, whatever the batch: the centring
            # folded into the products leaves rounding that depends on the batch's shape.
            power[frozen] = 0.0
            stats[frozen, 0] = x[frozen, 0]
        np.sqrt(power[:, :probes] @ self._by_probes, out=logs[2])  # BLAS reads a row's slice
        logs[2] += _FLOOR
        # numpy's log writes a column of the output in a scalar loop, ten times
        # slower than a contiguous row: the three logs are taken in one call.
        np.log(logs, out=logs)
        stats[:, 2], stats[:, 3], stats[:, 5] = logs[2], logs[0], logs[1]
        self._band_powers(power, v.bands)
        return v.out

    def _fold(self, x: npt.NDArray[np.float32], v: _Views) -> None:
        """``x[i] + x[w-1-i]`` and ``x[i] - x[w-1-i]`` for ``i < w/2`` into
        ``v.even`` and ``v.odd``, contiguous (n, w/2) blocks of the scratch buffer.
        Both halves are copied into blocks first: numpy adds a reversed operand in
        a scalar loop, and a row's half (of a row twice as long) in one loop per
        row; the sum and the difference are then single vector loops."""
        half = x.shape[1] // 2
        np.copyto(v.odd, x[:, : half - 1 : -1])
        np.copyto(v.first, x[:, :half])
        np.add(v.first, v.odd, out=v.even)
        np.subtract(v.first, v.odd, out=v.odd)

    def _differences(self, x: npt.NDArray[np.float32], v: _Views) -> npt.NDArray[np.float32]:
        """The statistics of first differences: std, crest factor, kurtosis (spikes:
        a glitch is two huge steps) and the fraction that are zero (stuck); returns
        how many are zero per window. The std and kurtosis go to ``v.logs[0]`` and
        ``v.logs[1]``, their log still to take. The differences are of the raw
        samples: two float32 values differ by exactly zero only if they are equal.

        They are taken over the batch as one flat array (one vector operation, not
        one per window): row i of the result holds window i's differences and, in
        its last column, the step from its last sample to the next window's first,
        which is set to 1 (not a repeat), then to 0, and weighted 0."""
        w, flat, diffs, stats, logs = x.shape[1], v.flat, v.diffs, v.stats, v.logs
        samples = x.reshape(-1)  # a view: the windows of a batch are one array
        np.subtract(samples[1:], samples[:-1], out=flat[:-1])
        diffs[:, -1] = 1.0
        np.equal(diffs, 0, out=v.repeats[:, :w])
        counts = count_true(v.repeats)
        np.multiply(counts, np.float32(1 / (w - 1)), out=stats[:, 6])
        diffs[:, -1] = 0.0
        np.multiply(flat, flat, out=flat)
        var = diffs @ self._by_diffs
        peak = np.sqrt(_MAX_AT(flat, v.row_starts))  # per row: one call, not n
        np.multiply(flat, flat, out=flat)
        fourth = diffs @ self._by_diffs
        std = np.sqrt(var, out=logs[0])
        std += _FLOOR
        np.divide(peak, std, out=stats[:, 4])
        var *= var
        var += _FLOOR
        np.divide(fourth, var, out=logs[1])
        logs[1] += _FLOOR
        return counts

    def _band_powers(self, power: npt.NDArray[np.float32], out: npt.NDArray[np.float32]) -> None:
        """Log mean probe power per band; overwrites ``power``."""
        bands = self.bands
        if self._per_band == 1:  # a band is a probe: the whole buffer, then the bands
            power += _FLOOR
            fast_log(power, power)
            out[...] = power[:, :bands]
            return
        band = power[:, :bands]
        for i in range(1, self._per_band):
            band += power[:, i * bands : (i + 1) * bands]
        band *= np.float32(1 / self._per_band)
        band += _FLOOR
        fast_log(band, out)

    def __repr__(self) -> str:
        return f"FeatureExtractor(window={self.window}, rows={self.rows}, bands={self.bands})"


class _Views(NamedTuple):
    """One batch size's views of a ``FeatureExtractor``'s buffers."""

    out: npt.NDArray[np.float32]  # (n, width): the features
    bands: npt.NDArray[np.float32]  # out's band columns
    stats: npt.NDArray[np.float32]  # out's other columns
    logs: npt.NDArray[np.float32]  # (3, n)
    flat: npt.NDArray[np.float32]  # the differences, all n windows in a row
    diffs: npt.NDArray[np.float32]  # the same, (n, w)
    repeats: npt.NDArray[np.bool_]
    even: npt.NDArray[np.float32]  # the fold's blocks, each (n, w/2)
    odd: npt.NDArray[np.float32]
    first: npt.NDArray[np.float32]
    cos: npt.NDArray[np.float32]  # the products (n, probes + 1); cos then the powers
    sin: npt.NDArray[np.float32]
    sines: npt.NDArray[np.float32]  # sin's squares, over the spent fold
    row_starts: npt.NDArray[np.intp]


_ONE_BITS = np.int32(0x3F800000)  # 1.0f
_LN2_PER_ULP = np.float32(np.log(2) / 2**23)


def fast_log(x: npt.NDArray[np.float32], out: npt.NDArray[np.float32]) -> None:
    """The natural log of positive ``x`` to within 0.06, piecewise linear between
    powers of two (exact at them): a float32's bits read as an integer are its
    exponent and mantissa, a log2 with a linear mantissa. numpy's float32 log
    runs a scalar loop on this machine (its SIMD loop needs AVX-512): 30 us for
    a batch's 16,384 band powers, against 5 for this. Overwrites ``x``."""
    bits = x.view(np.int32)
    np.subtract(bits, _ONE_BITS, out=bits)
    np.copyto(out, bits, casting="unsafe")  # then a float product: a casting one is slower
    out *= _LN2_PER_ULP


_MAX, _MAX_AT = np.maximum.reduce, np.maximum.reduceat


def count_true(flags: npt.NDArray[np.bool_]) -> npt.NDArray[np.float32]:
    """True values per row of a (n, 8k) bool array, in float32: rows read as
    uint64 words (eight bytes, each 0 or 1), their bits counted, and the counts
    summed by a matrix-vector product; twice as fast as numpy's per-row sum."""
    words = np.bitwise_count(flags.view(np.uint64)).astype(np.float32)
    return words @ _ones(words.shape[1])


@functools.cache
def _ones(n: int) -> npt.NDArray[np.float32]:
    return np.ones(n, np.float32)
