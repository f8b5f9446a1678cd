"""Detection quality of the shipped models on held-out labelled simulated windows.

    python -m sensors.evaluate [--seed N] [--kind vibration|temperature] [--json]

For each sensor kind, as a node would: draw ``MACHINES`` simulated machines
(seed ``N``; not the machines the model was trained on), calibrate a threshold
on healthy windows of theirs, then score a held-out set of other windows of
theirs (other times, other noise) holding, for every anomaly kind, ``per_kind``
anomalous windows and as many healthy ones of its own. A kind's precision and
recall are measured on its own half-and-half set; ``all`` is the whole set
(healthy windows once, every kind's anomalies). Exit status 1 if any precision
or recall is under ``BAR``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from sensors.calibration import Calibration
from sensors.features import features
from sensors.model import AnomalyModel
from sensors.signals import ANOMALY_KINDS, DEFAULT_SPECS, LABELS, Machine, labelled_windows

BAR = 0.9
EVAL_SEED = 7001
CALIBRATION_WINDOWS = 2048
PER_KIND = 1000
MACHINES = 8


@dataclass(frozen=True)
class Quality:
    precision: float
    recall: float
    anomalies: int
    healthy: int

    @staticmethod
    def measure(flagged: npt.NDArray[np.bool_], anomalous: npt.NDArray[np.bool_]) -> Quality:
        tp = int((flagged & anomalous).sum())
        fp = int((flagged & ~anomalous).sum())
        fn = int((~flagged & anomalous).sum())
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        return Quality(precision, recall, int(anomalous.sum()), int((~anomalous).sum()))

    def meets(self, bar: float = BAR) -> bool:
        return self.precision >= bar and self.recall >= bar

    def __repr__(self) -> str:
        return f"Quality(precision={self.precision:.4f}, recall={self.recall:.4f})"


def calibrate(
    model: AnomalyModel, rng: np.random.Generator, machines: Sequence[Machine]
) -> Calibration:
    """A threshold from healthy windows of ``machines``, as a node calibrates at start."""
    spec = DEFAULT_SPECS[model.card.kind]
    healthy = labelled_windows(spec, rng, CALIBRATION_WINDOWS, 0, machines)
    rows = features(healthy.windows, spec.bands)
    return Calibration.from_scores(spec.kind, model.score(rows), model.card.sha256)


def evaluate(
    model: AnomalyModel, seed: int = EVAL_SEED, per_kind: int = PER_KIND
) -> dict[str, Any]:
    """Draw machines, calibrate on their healthy windows, measure on other windows of
    theirs, all from ``seed``; a JSON-ready report."""
    kind = model.card.kind
    spec = DEFAULT_SPECS[kind]
    draw, cal_rng, test_rng = np.random.default_rng(seed).spawn(3)
    machines = [Machine.draw(kind, draw) for _ in range(MACHINES)]
    calibration = calibrate(model, cal_rng, machines)
    kinds = ANOMALY_KINDS[kind]
    held_out = labelled_windows(spec, test_rng, per_kind * len(kinds), per_kind, machines)
    flagged = model.score(features(held_out.windows, spec.bands)) > calibration.threshold
    labels = held_out.labels
    healthy_rows = np.flatnonzero(labels == 0)
    report: dict[str, Any] = {"kind": kind, "seed": seed, "threshold": calibration.threshold}
    per: dict[str, Quality] = {}
    for i, anomaly in enumerate(kinds):
        own_healthy = healthy_rows[i * per_kind : (i + 1) * per_kind]
        rows = np.concatenate([own_healthy, np.flatnonzero(labels == LABELS.index(anomaly))])
        per[anomaly] = Quality.measure(flagged[rows], labels[rows] != 0)
    per["all"] = Quality.measure(flagged, labels != 0)
    report["quality"] = {
        k: {"precision": round(q.precision, 4), "recall": round(q.recall, 4),
            "anomalies": q.anomalies, "healthy": q.healthy}
        for k, q in per.items()
    }  # fmt: skip
    report["meets_bar"] = all(q.meets() for q in per.values())
    return report


def print_report(report: dict[str, Any]) -> None:
    print(
        f"{report['kind']}: threshold {report['threshold']:.4g} (calibrated, seed {report['seed']})"
    )
    print(f"  {'anomaly':<10} {'precision':>9} {'recall':>7} {'anomalous':>9} {'healthy':>8}")
    for name, q in report["quality"].items():
        print(f"  {name:<10} {q['precision']:>9.4f} {q['recall']:>7.4f} "
              f"{q['anomalies']:>9} {q['healthy']:>8}")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sensors.evaluate", description=__doc__)
    parser.add_argument("--seed", type=int, default=EVAL_SEED)
    parser.add_argument("--kind", choices=sorted(ANOMALY_KINDS), action="append")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    reports = [evaluate(AnomalyModel.for_kind(k), args.seed) for k in args.kind or ANOMALY_KINDS]
    if args.json:
        print(json.dumps(reports, sort_keys=True))
    else:
        for report in reports:
            print_report(report)
        ok = all(r["meets_bar"] for r in reports)
        print(f"bar: precision and recall >= {BAR} for every kind: {'met' if ok else 'NOT met'}")
    return 0 if all(r["meets_bar"] for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
