"""Train the shipped anomaly models on simulated healthy windows and export them.

    pip install -e '.[train]'        # TensorFlow: only here, never at run time
    python scripts/train_model.py [--kind vibration] [--out sensors/models]

For each sensor kind: draw healthy windows from the simulator (seed
``TRAIN_SEED``), compute features, fit an autoencoder whose first layer holds
the features' mean and variance, wrap it so the exported graph returns one
score (mean squared reconstruction error) per row, convert it to TFLite with a
dynamic batch dimension, and write ``<kind>.tflite`` and the card
``<kind>.json``. The card's precision and recall are measured by
``sensors.evaluate`` on the exported file, so ``python -m sensors.evaluate``
prints the same numbers. Seeds are fixed and TensorFlow's ops are made
deterministic, so a rerun on the same versions reproduces the model and card.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from sensors.calibration import MARGIN, QUANTILE
from sensors.evaluate import EVAL_SEED, calibrate, evaluate
from sensors.features import features, names, width
from sensors.model import MODELS, AnomalyModel, ModelCard
from sensors.signals import ANOMALY_KINDS, DEFAULT_SPECS, Machine, labelled_windows

TRAIN_SEED = 20261122
TRAIN_WINDOWS = 24_000
# (hidden, code) per kind: the vibration model reads a 64-band spectrum, the
# temperature model an 8-band one.
SIZES = {"vibration": (512, 32), "temperature": (64, 8)}
EPOCHS, BATCH = 60, 256
VARIANCE_FLOOR = 1e-4


def train(kind: str, seed: int) -> Any:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    spec = DEFAULT_SPECS[kind]
    healthy = labelled_windows(spec, np.random.default_rng(seed), TRAIN_WINDOWS, 0)
    rows = features(healthy.windows, spec.bands)
    # A feature constant on healthy data (repeated samples) gets a floor under its
    # variance: TFLite folds the division into rsqrt, and rsqrt(0) * 0 is NaN.
    variance = np.maximum(rows.var(axis=0), VARIANCE_FLOOR)
    normalise = tf.keras.layers.Normalization(axis=-1, mean=rows.mean(axis=0), variance=variance)
    hidden, code = SIZES[kind]
    inputs = tf.keras.Input((rows.shape[1],), dtype=tf.float32)
    z = normalise(inputs)
    h = tf.keras.layers.Dense(hidden, activation="relu")(z)
    h = tf.keras.layers.Dense(code, activation="relu")(h)
    h = tf.keras.layers.Dense(hidden, activation="relu")(h)
    recon = tf.keras.layers.Dense(rows.shape[1])(h)
    autoencoder = tf.keras.Model(inputs, recon - z)  # trained towards zero error
    autoencoder.compile(optimizer=tf.keras.optimizers.Adam(1e-3), loss="mse")
    autoencoder.fit(rows, np.zeros_like(rows), epochs=EPOCHS, batch_size=BATCH, shuffle=True,
                    verbose=0)  # fmt: skip
    return autoencoder


def export(autoencoder: Any, path: Path) -> bytes:
    """The scoring graph (error -> mean square per row) as TFLite, variables frozen."""
    import keras
    import tensorflow as tf

    error = autoencoder.output
    scorer = keras.Model(autoencoder.input, keras.ops.mean(keras.ops.square(error), axis=1))
    data: bytes = tf.lite.TFLiteConverter.from_keras_model(scorer).convert()
    path.write_bytes(data)
    return data


def write_card(kind: str, out: Path, data: bytes, seed: int, extra: dict[str, Any]) -> None:
    import tensorflow as tf

    spec = DEFAULT_SPECS[kind]
    hidden, code = SIZES[kind]
    n = width(spec.bands)
    card = {
        "kind": kind,
        "file": f"{kind}.tflite",
        "sha256": hashlib.sha256(data).hexdigest(),
        "inputs": {"width": n, "features": list(names(spec.bands)), "dtype": "float32",
                   "shape": ["batch", n], "made_by": "sensors/features.py"},
        "output": "score per row: mean squared reconstruction error of the normalised features",
        "sensor": {"rate_hz": spec.rate_hz, "window": spec.window, "bands": spec.bands},
        "architecture": f"normalise -> dense {hidden} -> {code} -> {hidden} -> {n} (relu)",
        "training": {"seed": seed, "windows": TRAIN_WINDOWS, "epochs": EPOCHS, "batch": BATCH,
                     "data": f"simulated healthy {kind} windows, sensors/signals.py, 8 machines",
                     "tensorflow": tf.__version__},
        "calibration": {"quantile": QUANTILE, "margin": MARGIN},
        **extra,
    }  # fmt: skip
    (out / f"{kind}.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")


def build(kind: str, out: Path, seed: int) -> dict[str, Any]:
    data = export(train(kind, seed), out / f"{kind}.tflite")
    # A first card names the file, so the model can be loaded to measure itself.
    write_card(kind, out, data, seed, {"threshold": 0.0})
    model = AnomalyModel(ModelCard.load(kind, out))
    rng = np.random.default_rng(seed + 1)
    threshold = calibrate(model, rng, [Machine.draw(kind, rng) for _ in range(8)]).threshold
    report = evaluate(model, EVAL_SEED)
    quality = {"seed": EVAL_SEED, "command": "python -m sensors.evaluate", **report["quality"]}
    write_card(kind, out, data, seed, {"threshold": threshold, "measured": quality})
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=sorted(ANOMALY_KINDS), action="append")
    parser.add_argument("--out", type=Path, default=MODELS)
    parser.add_argument("--seed", type=int, default=TRAIN_SEED)
    args = parser.parse_args()
    ok = True
    for kind in args.kind or ANOMALY_KINDS:
        report = build(kind, args.out, args.seed)
        print(json.dumps(report, sort_keys=True))
        ok = ok and report["meets_bar"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
