"""Features of a batch of windows, computed for the whole batch at once.

The model sees, per window, what each fault kind changes, in units where a
healthy machine's values stay in a narrow range:

- log band powers of the Hann-windowed spectrum of the centred window (equal
  groups of bins from the lowest to just under Nyquist; the count is the
  sensor kind's, ``SensorSpec.bands``):
  bearing faults add energy at high frequencies, spikes spread it over every
  band;
- the window's Hann-weighted mean (a sensor's bias: drift moves it; the taper
  keeps a fraction of a shaft cycle from leaking into it), the least-squares slope
  in units per window (drift inside the window), the log standard deviation
  and the log standard deviation of first differences (a stuck sensor drives
  both towards the floor), the crest factor and the log kurtosis (spikes), and
  the fraction of repeated consecutive samples (stuck).

Everything is float32 numpy over the (n, window) array: no per-sample or
per-window Python loop. Temperature and vibration use the same features; each
kind has its own model, trained on its own healthy windows.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

STATS = ("mean", "slope", "log_std", "log_diff_std", "crest", "log_kurtosis", "repeats")
_FLOOR = 1e-6  # keeps logs finite for a frozen sensor


def names(bands: int) -> tuple[str, ...]:
    return tuple(f"band{i}" for i in range(bands)) + STATS


def width(bands: int) -> int:
    return bands + len(STATS)


def features(windows: npt.NDArray[np.float32], bands: int | None = None) -> npt.NDArray[np.float32]:
    """(n, w) windows -> (n, ``width(bands)``) features (default ``w / 4`` bands). A
    one-off: a pipeline keeps a ``FeatureExtractor``, whose buffers are reused."""
    x = np.asarray(windows, dtype=np.float32)
    return FeatureExtractor(x.shape[1], max(1, x.shape[0]), bands).compute(x).copy()


class FeatureExtractor:
    """Features of up to ``rows`` windows of ``window`` samples per call.

    Every intermediate lives in a buffer allocated once: arrays this size are
    mapped fresh from the kernel on each allocation, and the page faults of
    new temporaries cost more than the arithmetic (3x, measured on the FFT).
    One extractor is for one thread; ``compute`` returns a view of its buffer,
    valid until the next call.
    """

    def __init__(self, window: int, rows: int, bands: int | None = None) -> None:
        bands = window // 4 if bands is None else bands
        if window < 16 or bands < 1 or (window // 2) % bands:
            raise ValueError(f"{window}-sample windows do not split into {bands} equal bands")
        self.window, self.rows, self.bands = window, rows, bands
        w, b = window, self.bands
        self._out = np.empty((rows, width(bands)), np.float32)
        self._centred = np.empty((rows, w), np.float32)
        self._squares = np.empty((rows, w), np.float32)
        self._diffs = np.empty((rows, w - 1), np.float32)
        self._tapered = np.empty((rows, w), np.float64)
        self._spectrum = np.empty((rows, w // 2 + 1), np.complex128)
        self._power = np.empty((rows, w), np.float64)  # (re, im) squared, bins 1 .. w/2
        self._pairs = np.empty((rows, b), np.float64)
        self._repeats = np.empty((rows, w - 1), np.bool_)
        self._hann = np.hanning(w)
        self._hann32 = self._hann.astype(np.float32)
        self._hann_scale = np.float32(1.0 / self._hann.sum())
        self._ramp = np.arange(w, dtype=np.float32) - np.float32((w - 1) / 2)
        self._ramp_scale = np.float32(w) / (self._ramp @ self._ramp)

    def compute(self, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        n, w = windows.shape
        if w != self.window or n > self.rows:
            raise ValueError(f"{windows.shape} windows: this extractor takes up to "
                             f"({self.rows}, {self.window})")  # fmt: skip
        x, out = windows, self._out[:n]
        centred, squares, diffs = self._centred[:n], self._squares[:n], self._diffs[:n]
        # float64 sums: a frozen sensor's window centres to exactly zero, whatever
        # the batch (a BLAS mean differs with the batch's shape in the last bits)
        mean = x.mean(axis=1, dtype=np.float64).astype(np.float32)
        np.subtract(x, mean[:, None], out=centred)
        self._band_powers(centred, out[:, : self.bands])
        np.multiply(centred, centred, out=squares)
        var = squares.sum(axis=1) / np.float32(w)
        std = np.sqrt(var)
        np.subtract(x[:, 1:], x[:, :-1], out=diffs)
        diff_var = np.einsum("ij,ij->i", diffs, diffs) / np.float32(w - 1)
        fourth = np.einsum("ij,ij->i", squares, squares) / np.float32(w)
        stats = out[:, self.bands :]
        stats[:, 0] = (x @ self._hann32) * self._hann_scale  # bias, little leakage
        stats[:, 1] = (centred @ self._ramp) * self._ramp_scale
        stats[:, 2] = np.log(std + _FLOOR)
        stats[:, 3] = np.log(np.sqrt(diff_var) + _FLOOR)
        stats[:, 4] = np.sqrt(squares.max(axis=1)) / (std + _FLOOR)
        stats[:, 5] = np.log(fourth / (var * var + _FLOOR) + _FLOOR)
        repeats = self._repeats[:n]
        np.equal(diffs, 0, out=repeats)
        counts = np.einsum("ij->i", repeats.view(np.uint8), dtype=np.int32)
        stats[:, 6] = counts / np.float32(w - 1)
        return out

    def _band_powers(self, centred: npt.NDArray[np.float32], out: npt.NDArray[np.float32]) -> None:
        """Log mean power of equal groups of bins, from bin 1 to just under Nyquist
        (DC is zero after centring). The FFT runs in float64 (numpy's pocketfft is
        about 3x faster on it than on float32 here); the spectrum is read as
        interleaved (re, im) pairs, so a band's power is a sum of strided columns
        (reductions along a short axis are slow in numpy); the log runs in float32."""
        n = centred.shape[0]
        tapered, spectrum, squares = self._tapered[:n], self._spectrum[:n], self._power[:n]
        band = self._pairs[:n]
        np.multiply(centred, self._hann, out=tapered)
        np.fft.rfft(tapered, axis=1, out=spectrum)
        interleaved = spectrum.view(np.float64)[:, 2 : 2 + squares.shape[1]]
        np.multiply(interleaved, interleaved, out=squares)
        step = squares.shape[1] // self.bands
        np.copyto(band, squares[:, 0::step])
        for k in range(1, step):
            band += squares[:, k::step]
        band *= 2.0 / step  # mean power per bin: (re^2 + im^2) summed over step/2 bins
        band += _FLOOR
        np.log(band.astype(np.float32), out=out)

    def __repr__(self) -> str:
        return f"FeatureExtractor(window={self.window}, rows={self.rows})"
