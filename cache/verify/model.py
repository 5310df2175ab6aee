"""The learned part of the verifier: logistic regression over standardised features (or a
one-hidden-layer perceptron), read from plain JSON (cache/verify/verifier.json, written
by bench/train_verifier.py; no pickle)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cache.verify.results import VerifierError

DEFAULT_WEIGHTS = Path(__file__).with_name("verifier.json")


@dataclass(frozen=True)
class Model:
    """Logistic regression over standardised features, or, when `hidden` is given, a
    one-hidden-layer perceptron (tanh units, then the logistic output)."""

    names: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    threshold: float
    hidden: tuple[np.ndarray, np.ndarray] | None = None  # (weights (h, n), biases (h,))

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Model:
        try:
            names = tuple(raw["features"])
            mean, scale, coef = (
                np.asarray(raw[k], dtype=np.float64) for k in ("mean", "scale", "coef")
            )
            hidden = None
            if raw.get("hidden") is not None:
                w = np.asarray(raw["hidden"]["w"], dtype=np.float64)
                b = np.asarray(raw["hidden"]["b"], dtype=np.float64)
                hidden = (w, b)
            model = cls(names, mean, scale, coef, float(raw["intercept"]),
                        float(raw["threshold"]), hidden)  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise VerifierError(f"bad model entry: {exc}") from exc
        if not len(mean) == len(scale) == len(names):
            raise VerifierError("feature, mean and scale lengths differ")
        if hidden is None and len(coef) != len(names):
            raise VerifierError("feature and coef lengths differ")
        if hidden is not None and not (
            hidden[0].shape == (len(coef), len(names)) and hidden[1].shape == (len(coef),)
        ):
            raise VerifierError("hidden layer shapes do not match features and coef")
        return model

    def with_threshold(self, threshold: float) -> Model:
        return Model(self.names, self.mean, self.scale, self.coef, self.intercept, threshold,
                      self.hidden)  # fmt: skip

    def score(self, feats: Mapping[str, float]) -> float:
        x = np.array([feats.get(n, 0.0) for n in self.names], dtype=np.float64) - self.mean
        x /= self.scale
        if self.hidden is not None:
            x = np.tanh(self.hidden[0] @ x + self.hidden[1])
        z = float(x @ self.coef) + self.intercept
        return 1.0 / (1.0 + math.exp(-max(min(z, 40.0), -40.0)))
