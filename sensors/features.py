"""Features of a batch of windows, computed for the whole batch at once.

The model sees, per window, what each fault kind changes, in units where a
healthy machine's values stay in a narrow range:

- log band powers of the Hann-windowed spectrum of the centred window (equal
  bands from bin 1 to Nyquist; the count is the sensor kind's,
  ``SensorSpec.bands``): bearing faults add energy at high frequencies, spikes
  spread it over every band;
- the window's Hann-weighted mean (a sensor's bias: drift moves it; the taper
  keeps a fraction of a shaft cycle from leaking into it), the least-squares slope
  in units per window (drift inside the window), the log standard deviation
  and the log standard deviation of first differences (a stuck sensor drives
  both towards the floor), the crest factor and the log kurtosis (spikes), and
  the fraction of repeated consecutive samples (stuck).

The spectrum is not a full FFT. A band's power is the mean power of the
spectrum at probe frequencies two bins apart, at bins 1.5, 3.5, 5.5, ... up to
just under Nyquist (a Hann window's main lobe is four bins wide, so probes two
bins apart miss no frequency, and each band holds whole probes, centred in it).
A probe is the window's projection on a Hann-tapered cosine and sine, so all
probes are two matrix products with precomputed matrices. Both products are
half the window long: taking the phase at the window's centre, the cosine part
of a probe only sees ``x[i] + x[w-1-i]`` and the sine part only ``x[i] -
x[w-1-i]``. For the vibration kind (64 bands of 256-sample windows) that is
64 probes, two (n x 128) @ (128 x 64) products, cheaper than numpy's float64
real FFT of the window alone (which gives 128 bins, twice as many as the bands
need, and needs a float64 copy and a binning pass).

Everything is float32 numpy over the (n, window) array; no per-sample or
per-window Python loop. numpy pays a fixed cost per inner loop, and an
operation that broadcasts a per-window value runs one loop per window, so
sums and means are matrix-vector products, and the first differences are
taken over the whole batch as one flat array. A window whose samples all
repeat takes its first sample as its mean: it centres to exactly zero whatever
the batch (a BLAS sum differs with the batch's shape in the last bits).
Temperature and vibration use the same features; each kind has its own model,
trained on its own healthy windows.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

STATS = ("mean", "slope", "log_std", "log_diff_std", "crest", "log_kurtosis", "repeats")
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


def probe_matrices(window: int, bands: int) -> tuple[npt.NDArray[np.float32], ...]:
    """(cosine, sine) matrices, each (window / 2, probes): column ``i * bands + b``
    is band ``b``'s ``i``-th probe, so a band's probes are sums of whole slabs."""
    half, probes = window // 2, window // 2 // PROBE_SPACING
    per = probes // bands
    order = np.arange(probes).reshape(bands, per).T.reshape(-1)  # slab i holds probes i, i+per..
    bins = PROBE_SPACING * order + 1.5
    n = np.arange(half, dtype=np.float64) - (window - 1) / 2  # phase taken at the centre
    angle = 2 * np.pi * np.outer(n, bins) / window
    taper = np.hanning(window)[:half, None]
    return (taper * np.cos(angle)).astype(np.float32), (taper * np.sin(angle)).astype(np.float32)


class FeatureExtractor:
    """Features of up to ``rows`` windows of ``window`` samples per call.

    Every intermediate lives in a buffer allocated once, and one full-size
    scratch buffer is reused from step to step (the differences, then the
    centred windows, squared in place): arrays this size are mapped fresh from
    the kernel on each allocation, and the page faults of new temporaries cost
    more than the arithmetic, while a small working set stays in the core's
    cache. One extractor is for one thread; ``compute`` returns a view of its
    buffer, valid until the next call.
    """

    def __init__(self, window: int, rows: int, bands: int | None = None) -> None:
        probes = window // 2 // PROBE_SPACING
        bands = max(1, probes) if bands is None else bands
        if window < 16 or window % (2 * PROBE_SPACING) or bands < 1 or probes % bands:
            raise ValueError(f"{window}-sample windows do not split into {bands} equal bands")
        self.window, self.rows, self.bands = window, rows, bands
        self._per_band = probes // bands
        w, half = window, window // 2
        self._cos, self._sin = probe_matrices(window, bands)
        self._out = np.empty((rows, width(bands)), np.float32)
        self._scratch = np.empty((rows, w), np.float32)
        self._even = np.empty((rows, half), np.float32)
        self._odd = np.empty((rows, half), np.float32)
        self._cos_part = np.empty((rows, probes), np.float32)
        self._sin_part = np.empty((rows, probes), np.float32)
        self._repeats = np.zeros((rows, -(-w // 8) * 8), np.bool_)  # whole uint64 words
        self._ones = np.ones(w, np.float32)
        self._by_w = np.full(w, 1 / w, np.float32)  # mean as one matrix-vector product
        self._by_diffs = np.full(w, 1 / (w - 1), np.float32)
        self._by_diffs[-1] = 0.0  # the step into the next window
        hann = np.hanning(w)
        self._hann_mean = (hann / hann.sum()).astype(np.float32)
        ramp = np.arange(w, dtype=np.float64) - (w - 1) / 2
        self._slope = (ramp * w / (ramp @ ramp)).astype(np.float32)  # least squares, per window

    def compute(self, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        n, w = windows.shape
        if w != self.window or n > self.rows:
            raise ValueError(f"{windows.shape} windows: this extractor takes up to "
                             f"({self.rows}, {self.window})")  # fmt: skip
        x, out, scratch = windows, self._out[:n], self._scratch[:n]
        stats = out[:, self.bands :]
        repeats = self._differences(x, stats)  # first: x is read twice in a row, in cache
        stats[:, 0] = x @ self._hann_mean  # bias, little leakage
        stats[:, 1] = x @ self._slope  # the ramp sums to zero: no need to centre
        mean = x @ self._by_w
        # A frozen window centres to exactly zero, whatever the batch (a BLAS sum
        # differs with the batch's shape in the last bits).
        np.copyto(mean, x[:, 0], where=repeats == w - 1)
        centred = np.subtract(x, mean[:, None], out=scratch)
        self._band_powers(centred, out[:, : self.bands])
        squares = np.multiply(centred, centred, out=scratch)
        var = squares @ self._by_w
        peak = np.sqrt(squares.max(axis=1))
        fourth = np.multiply(squares, squares, out=scratch) @ self._by_w
        std = np.sqrt(var)
        stats[:, 2] = np.log(std + _FLOOR)
        stats[:, 4] = peak / (std + _FLOOR)
        stats[:, 5] = np.log(fourth / (var * var + _FLOOR) + _FLOOR)
        return out

    def _differences(
        self, x: npt.NDArray[np.float32], stats: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        """log std of first differences, and the fraction that are zero; returns
        how many are zero per window. The differences are of the raw samples: two
        float32 values differ by exactly zero only if they are equal.

        They are taken over the batch as one flat array (one vector operation, not
        one per window): row i of the result holds window i's differences and, in
        its last column, the step from its last sample to the next window's first,
        which is set to 1 (not a repeat) and weighted 0."""
        n, w = x.shape
        flat, diffs = self._scratch.reshape(-1)[: n * w], self._scratch[:n]
        samples = x.reshape(-1)  # a view: the windows of a batch are one array
        np.subtract(samples[1:], samples[:-1], out=flat[:-1])
        diffs[:, -1] = 1.0
        repeats = self._repeats[:n]
        np.equal(diffs, 0, out=repeats[:, :w])
        counts = count_true(repeats)
        stats[:, 6] = counts * np.float32(1 / (w - 1))
        np.multiply(diffs, diffs, out=diffs)
        stats[:, 3] = np.log(np.sqrt(diffs @ self._by_diffs) + _FLOOR)
        return counts

    def _band_powers(self, centred: npt.NDArray[np.float32], out: npt.NDArray[np.float32]) -> None:
        """Log mean probe power per band, from the two half-length products."""
        n, half, bands = centred.shape[0], self.window // 2, self.bands
        even, odd = self._even[:n], self._odd[:n]
        mirrored = centred[:, : half - 1 : -1]  # x[w-1-i] for i < half
        np.add(centred[:, :half], mirrored, out=even)
        np.subtract(centred[:, :half], mirrored, out=odd)
        power = np.matmul(even, self._cos, out=self._cos_part[:n])
        sin_part = np.matmul(odd, self._sin, out=self._sin_part[:n])
        np.multiply(power, power, out=power)
        np.multiply(sin_part, sin_part, out=sin_part)
        power += sin_part
        band = power[:, :bands]
        for i in range(1, self._per_band):
            band += power[:, i * bands : (i + 1) * bands]
        if self._per_band > 1:
            band *= np.float32(1 / self._per_band)
        band += _FLOOR
        np.log(band, out=out)

    def __repr__(self) -> str:
        return f"FeatureExtractor(window={self.window}, rows={self.rows}, bands={self.bands})"


def count_true(flags: npt.NDArray[np.bool_]) -> npt.NDArray[np.float32]:
    """True values per row of a (n, 8k) bool array, in float32: rows read as
    uint64 words (eight bytes, each 0 or 1), their bits counted, and the counts
    summed by a matrix-vector product; twice as fast as numpy's per-row sum."""
    words = np.bitwise_count(flags.view(np.uint64)).astype(np.float32)
    return words @ np.ones(words.shape[1], np.float32)
