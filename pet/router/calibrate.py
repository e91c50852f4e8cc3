"""Confidence calibrators: map a tier's confidence-signal features to P(its answer is good enough).

Features are ``ConfidenceSignals.features()``: ``[mean_logprob, min_token_prob, mean_entropy]``. A
calibrator is a small class with ``fit`` / ``predict`` / ``to_dict`` and a name in :data:`CALIBRATORS`:

- ``isotonic``: pool-adjacent-violators on one feature (default mean_logprob): the best non-decreasing step
  function, so a more confident answer never gets a lower probability.
- ``logistic``: L2-regularised logistic regression on all three standardised features (Newton steps).
- ``geomean``: no fitting, ``exp(mean_logprob)`` (the per-token geometric-mean probability); the default
  when no calibration file is configured.

Everything is numpy so the device client can load a fitted calibrator without torch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

FEATURES = ("mean_logprob", "min_token_prob", "mean_entropy")


def features_of(signals: dict[str, Any] | Any) -> list[float]:
    """Feature vector from a signals dict (the HTTP/JSON form) or a ConfidenceSignals object."""
    if hasattr(signals, "features"):
        return [float(x) for x in signals.features()]
    try:
        return [float(signals[k]) for k in FEATURES]
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"signals must carry {', '.join(FEATURES)} as numbers: {err}") from None


def _as_2d(x: Any) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != len(FEATURES):
        raise ValueError(f"features must have shape [n, {len(FEATURES)}], got {list(x.shape)}")
    return x


def pava(y: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Pool-adjacent-violators: the weighted least-squares non-decreasing fit to ``y`` (already sorted by x)."""
    y = np.asarray(y, dtype=np.float64)
    w = np.ones_like(y) if w is None else np.asarray(w, dtype=np.float64)
    means: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for yi, wi in zip(y, w, strict=True):
        means.append(float(yi))
        weights.append(float(wi))
        sizes.append(1)
        # Merge backwards while the last block is below the one before it.
        while len(means) > 1 and means[-2] > means[-1]:
            wt = weights[-2] + weights[-1]
            m = (means[-2] * weights[-2] + means[-1] * weights[-1]) / wt
            means[-2:], weights[-2:], sizes[-2:] = [m], [wt], [sizes[-2] + sizes[-1]]
    return np.repeat(np.array(means), sizes)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 50,
                 init: tuple[np.ndarray, float] | None = None) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method; returns (weights, bias). The bias is not penalised.

    ``init``: (weights, bias) to start from (a warm start, e.g. the fit at a neighbouring penalty).
    """
    n, d = x.shape
    xa = np.hstack([x, np.ones((n, 1))])
    theta = np.zeros(d + 1) if init is None else np.append(np.asarray(init[0], dtype=np.float64), init[1])
    reg = np.full(d + 1, l2)
    reg[-1] = 1e-6
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(xa @ theta, -30, 30)))
        grad = xa.T @ (p - y) + reg * theta
        hess = (xa * (p * (1 - p))[:, None]).T @ xa + np.diag(reg)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-8:
            break
    return theta[:-1], float(theta[-1])


def fit_ridge(x: np.ndarray, y: np.ndarray, l2: float = 1.0) -> tuple[np.ndarray, float]:
    """Ridge regression (squared loss + l2 * |w|^2, unpenalised bias); returns (weights, bias).

    Solved in the smaller of the primal (d x d) and dual (n x n) forms, so 384-dim embeddings with a few
    hundred rows cost one small linear solve.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if l2 <= 0:
        raise ValueError("ridge l2 must be positive")
    mx, my = x.mean(0), float(y.mean())
    xc, yc = x - mx, y - my
    n, d = xc.shape
    if d <= n:
        w = np.linalg.solve(xc.T @ xc + l2 * np.eye(d), xc.T @ yc)
    else:
        w = xc.T @ np.linalg.solve(xc @ xc.T + l2 * np.eye(n), yc)
    return w, my - float(mx @ w)


class Calibrator(ABC):
    """Maps feature rows to probabilities in [0, 1]."""

    kind: ClassVar[str] = ""

    @abstractmethod
    def fit(self, x: Any, y: Any) -> Calibrator:
        """Fit on features ``x`` [n, 3] and 0/1 labels ``y`` [n]; returns self."""

    @abstractmethod
    def predict(self, x: Any) -> np.ndarray:
        """Probabilities [n] for feature rows ``x`` [n, 3] (or one row [3])."""

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """JSON/YAML-ready fitted parameters."""

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": ..., **params}``; :func:`calibrator_from_dict` reverses it."""
        return {"kind": self.kind, **self.params()}

    def __call__(self, signals: dict[str, Any] | Any) -> float:
        """Probability for one signals dict / ConfidenceSignals."""
        return float(self.predict(features_of(signals))[0])


class GeomeanCalibrator(Calibrator):
    """exp(mean_logprob): uncalibrated but monotone; needs no data."""

    kind = "geomean"

    def fit(self, x: Any, y: Any) -> GeomeanCalibrator:
        return self

    def predict(self, x: Any) -> np.ndarray:
        return np.exp(np.minimum(_as_2d(x)[:, 0], 0.0))

    def params(self) -> dict[str, Any]:
        return {}


class IsotonicCalibrator(Calibrator):
    """Non-decreasing step function of one feature fitted by PAVA; linear interpolation between knots."""

    kind = "isotonic"

    def __init__(self, feature: str = "mean_logprob", x: list[float] | None = None, y: list[float] | None = None):
        if feature not in FEATURES:
            raise ValueError(f"isotonic feature must be one of {', '.join(FEATURES)}, got {feature!r}")
        # Entropy goes down as confidence goes up, so fit on its negative to stay non-decreasing.
        self.feature = feature
        self.sign = -1.0 if feature == "mean_entropy" else 1.0
        self.x = np.asarray(x if x is not None else [0.0], dtype=np.float64)
        self.y = np.asarray(y if y is not None else [0.5], dtype=np.float64)
        if self.x.shape != self.y.shape or self.x.ndim != 1 or len(self.x) == 0:
            raise ValueError("isotonic knots x and y must be equal-length non-empty lists")
        if np.any(np.diff(self.x) < 0) or np.any(np.diff(self.y) < -1e-12):
            raise ValueError("isotonic knots must be sorted and non-decreasing")

    def _col(self, x: Any) -> np.ndarray:
        return self.sign * _as_2d(x)[:, FEATURES.index(self.feature)]

    def fit(self, x: Any, y: Any) -> IsotonicCalibrator:
        v = self._col(x)
        y = np.asarray(y, dtype=np.float64)
        if len(v) != len(y) or len(v) == 0:
            raise ValueError("isotonic fit needs as many labels as feature rows, and at least one")
        order = np.argsort(v, kind="mergesort")
        v, yy = v[order], y[order]
        # Ties in x must share one value: pool them first (weights = counts), then run PAVA on the pools.
        ux, start, counts = np.unique(v, return_index=True, return_counts=True)
        means = np.add.reduceat(yy, start) / counts
        fitted = pava(means, counts)
        self.x, self.y = ux, np.clip(fitted, 0.0, 1.0)
        return self

    def predict(self, x: Any) -> np.ndarray:
        v = self._col(x)
        # PAVA blocks make many scores tie, which makes a cloud budget coarse (a big block cannot be split).
        # Break ties by the raw feature at a 1e-6 scale: still monotone, calibration unchanged to 1e-6.
        tie = 1e-6 * (np.arctan(v) / np.pi + 0.5)
        return np.clip(np.interp(v, self.x, self.y) * (1 - 1e-6) + tie, 0.0, 1.0)

    def params(self) -> dict[str, Any]:
        return {"feature": self.feature, "x": [float(v) for v in self.x], "y": [float(v) for v in self.y]}


class LogisticCalibrator(Calibrator):
    """sigmoid(w . standardised(features) + b), fitted with an L2 penalty."""

    kind = "logistic"

    def __init__(self, l2: float = 1.0, w: list[float] | None = None, b: float = 0.0,
                 mean: list[float] | None = None, scale: list[float] | None = None):
        d = len(FEATURES)
        self.l2 = float(l2)
        self.w = np.asarray(w if w is not None else [1.0, 0.0, 0.0], dtype=np.float64)
        self.b = float(b)
        self.mean = np.asarray(mean if mean is not None else [0.0] * d, dtype=np.float64)
        self.scale = np.asarray(scale if scale is not None else [1.0] * d, dtype=np.float64)
        if not (self.w.shape == self.mean.shape == self.scale.shape == (d,)):
            raise ValueError(f"logistic w, mean and scale must each have {d} numbers")

    def fit(self, x: Any, y: Any) -> LogisticCalibrator:
        x = _as_2d(x)
        y = np.asarray(y, dtype=np.float64)
        if len(x) != len(y) or len(x) == 0:
            raise ValueError("logistic fit needs as many labels as feature rows, and at least one")
        self.mean = x.mean(0)
        self.scale = np.where(x.std(0) > 1e-9, x.std(0), 1.0)
        self.w, self.b = fit_logistic((x - self.mean) / self.scale, y, self.l2)
        return self

    def predict(self, x: Any) -> np.ndarray:
        z = ((_as_2d(x) - self.mean) / self.scale) @ self.w + self.b
        return 1 / (1 + np.exp(-np.clip(z, -30, 30)))

    def params(self) -> dict[str, Any]:
        return {"l2": self.l2, "w": self.w.tolist(), "b": self.b, "mean": self.mean.tolist(),
                "scale": self.scale.tolist()}


CALIBRATORS: dict[str, type[Calibrator]] = {
    c.kind: c for c in (IsotonicCalibrator, LogisticCalibrator, GeomeanCalibrator)
}


def make_calibrator(kind: str, **kwargs: Any) -> Calibrator:
    """An unfitted calibrator by name."""
    if kind not in CALIBRATORS:
        raise ValueError(f"unknown calibrator {kind!r}; known: {', '.join(sorted(CALIBRATORS))}")
    return CALIBRATORS[kind](**kwargs)


def calibrator_from_dict(d: dict[str, Any]) -> Calibrator:
    """Rebuild a fitted calibrator from :meth:`Calibrator.to_dict` output."""
    if not isinstance(d, dict) or "kind" not in d:
        raise ValueError("a calibrator entry must be a mapping with a 'kind'")
    params = {k: v for k, v in d.items() if k != "kind"}
    try:
        return make_calibrator(d["kind"], **params)
    except TypeError as err:
        raise ValueError(f"bad parameters for calibrator {d['kind']!r}: {err}") from None
