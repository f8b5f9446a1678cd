"""The shipped TFLite anomaly models and their cards.

One autoencoder per sensor kind, in ``sensors/models/<kind>.tflite`` beside its
card ``<kind>.json``. The model takes a batch of feature rows
(``sensors/features.py``), normalises them with the healthy training data's mean
and variance (baked into the graph), reconstructs them through a narrow code,
and returns one score per row: the mean squared reconstruction error. A healthy
window reconstructs well; a fault moves features the code cannot express.

The interpreter is LiteRT (``ai-edge-litert``), or ``tflite_runtime`` where only
that is installed. Scoring runs the interpreter at one fixed batch size, padding
the last partial batch, because resizing tensors costs a re-allocation; one
model object is for one thread (the interpreter is not re-entrant).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sensors.features import width
from sensors.signals import DEFAULT_SPECS

MODELS = Path(__file__).resolve().parent / "models"  # package data, see pyproject.toml
DEFAULT_BATCH = 256


def load_interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # older boards: the standalone tflite runtime
        from tflite_runtime.interpreter import Interpreter
    return Interpreter


class ModelError(RuntimeError):
    """A model file or card is missing or does not match what the code expects."""


@dataclass(frozen=True)
class ModelCard:
    """What the JSON card beside a model says; see ``scripts/train_model.py``."""

    kind: str
    path: Path
    sha256: str
    threshold: float
    raw: dict[str, Any]

    @staticmethod
    def load(kind: str, models: Path = MODELS) -> ModelCard:
        card_path, model_path = models / f"{kind}.json", models / f"{kind}.tflite"
        try:
            raw = json.loads(card_path.read_text())
            data = model_path.read_bytes()
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load the {kind} model: {exc}") from None
        sha = hashlib.sha256(data).hexdigest()
        if raw.get("sha256") != sha:
            raise ModelError(f"{model_path} does not match its card (sha256 {sha[:12]})")
        if raw.get("inputs", {}).get("width") != width(DEFAULT_SPECS[kind].bands):
            raise ModelError(f"{kind} model expects other features than sensors/features.py")
        return ModelCard(kind, model_path, sha, float(raw["threshold"]), raw)

    def __repr__(self) -> str:
        return (
            f"ModelCard({self.kind!r}, sha256={self.sha256[:12]}, threshold={self.threshold:.4g})"
        )


class AnomalyModel:
    """Scores feature rows with one TFLite interpreter at a fixed batch size."""

    def __init__(self, card: ModelCard, batch: int = DEFAULT_BATCH, threads: int = 1) -> None:
        self.card = card
        self.batch = batch
        self.interpreter = load_interpreter_class()(model_path=str(card.path), num_threads=threads)
        self.width = int(card.raw["inputs"]["width"])
        self._input = self.interpreter.get_input_details()[0]["index"]
        self._output = self.interpreter.get_output_details()[0]["index"]
        self.interpreter.resize_tensor_input(self._input, [batch, self.width])
        self.interpreter.allocate_tensors()
        self._padded = np.zeros((batch, self.width), np.float32)

    @staticmethod
    def for_kind(kind: str, batch: int = DEFAULT_BATCH, models: Path = MODELS) -> AnomalyModel:
        return AnomalyModel(ModelCard.load(kind, models), batch)

    def invoke(self, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """One interpreter call on exactly ``batch`` rows."""
        self.interpreter.set_tensor(self._input, rows)
        self.interpreter.invoke()
        out: npt.NDArray[np.float32] = self.interpreter.get_tensor(self._output)
        return out.reshape(-1)

    def score(self, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """One score per feature row, any number of rows."""
        n = rows.shape[0]
        if n == self.batch and rows.flags.c_contiguous:  # the pipeline's full batch
            return self.invoke(rows)
        scores = np.empty(n, np.float32)
        for start in range(0, n, self.batch):
            chunk = rows[start : start + self.batch]
            if chunk.shape[0] == self.batch:
                scores[start : start + self.batch] = self.invoke(np.ascontiguousarray(chunk))
            else:
                self._padded[: chunk.shape[0]] = chunk
                self._padded[chunk.shape[0] :] = 0.0
                scores[start:] = self.invoke(self._padded)[: chunk.shape[0]]
        return scores

    def __repr__(self) -> str:
        return f"AnomalyModel({self.card!r}, batch={self.batch})"
