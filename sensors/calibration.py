"""Alert thresholds, calibrated on healthy windows when a pipeline starts.

A threshold is a high quantile of the scores healthy windows get, times a margin:
the quantile follows the machine (its noise, its rotation speed), the margin
keeps rare healthy windows from raising alerts. The same rule sets the model
card's threshold at training time and a node's threshold at start, so the
card's precision and recall predict what a node sees.

A node keeps its calibration under ``local/`` (it describes this node's machines
and is of no use elsewhere) and reuses it on restart while the model is the
same file; a new model recalibrates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

QUANTILE = 0.995
MARGIN = 1.2
MIN_WINDOWS = 64  # below this the quantile is noise


@dataclass(frozen=True)
class Calibration:
    kind: str
    threshold: float
    windows: int
    model_sha256: str

    @staticmethod
    def from_scores(kind: str, scores: npt.NDArray[np.float32], model_sha256: str) -> Calibration:
        if scores.size < MIN_WINDOWS:
            raise ValueError(f"calibration needs at least {MIN_WINDOWS} windows, got {scores.size}")
        threshold = float(np.quantile(scores.astype(np.float64), QUANTILE)) * MARGIN
        return Calibration(kind, threshold, int(scores.size), model_sha256)

    def to_value(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "threshold": self.threshold,
            "windows": self.windows,
            "model_sha256": self.model_sha256,
            "quantile": QUANTILE,
            "margin": MARGIN,
        }

    @staticmethod
    def from_value(value: Any) -> Calibration | None:
        """A stored calibration, or None if ``value`` is not one."""
        try:
            return Calibration(str(value["kind"]), float(value["threshold"]),
                               int(value["windows"]), str(value["model_sha256"]))  # fmt: skip
        except (KeyError, TypeError, ValueError):
            return None

    def __repr__(self) -> str:
        return f"Calibration({self.kind!r}, threshold={self.threshold:.4g}, windows={self.windows})"
