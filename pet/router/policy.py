"""Router policies: one decision method, a name -> class table, and the fitted router file they read.

A policy looks at what is known about a query so far (:class:`RouteState`) and returns the next step
(:class:`Decision`). The caller -- the device client, the gateway or the benchmark -- performs the step and
asks again, so the same policy drives every place that routes:

    state = RouteState(query="...")                 # nothing generated yet
    policy.decide(state).action                     # cascade: RUN_P ; pregen: ANSWER_P or ESCALATE
    state.p_signals = gen.signals.to_dict()         # after P generated
    policy.decide(state).action                     # ANSWER_P or ESCALATE (cloud: expert if a domain, else T)
    state.e_signals = expert_reply["signals"]       # in the cloud, after the expert answered
    policy.decide(state).action                     # ANSWER_E or RUN_T

Policies (:data:`POLICIES`):

- ``cascade``: P answers; its calibrated confidence below ``p_threshold`` escalates.
- ``pregen``: decides from the query's MiniLM embedding alone before anything generates (a logistic model
  predicting whether P will be good enough), so no P generation is wasted on queries that leave anyway.

Both judge an expert's answer the same way: calibrated E confidence below ``e_threshold`` -> T.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pet.router.calibrate import Calibrator, GeomeanCalibrator, calibrator_from_dict

ROUTER_FILE_VERSION = 1


class Action(StrEnum):
    """The next step a policy asks for."""

    RUN_P = "run_p"  # generate with P, then decide again
    ANSWER_P = "answer_p"  # P's answer is final (generate it first if not done yet)
    ESCALATE = "escalate"  # send to the cloud: the domain's expert, or T when no domain matches
    ANSWER_E = "answer_e"  # the expert's answer is final
    RUN_T = "run_t"  # T answers


@dataclass
class RouteState:
    """What is known about one query so far. Signals are dicts with mean_logprob, min_token_prob, mean_entropy."""

    query: str = ""
    embedding: np.ndarray | None = None
    p_signals: dict[str, float] | None = None
    e_signals: dict[str, float] | None = None


@dataclass
class Decision:
    """A policy's answer: the action, the calibrated score it was based on, the threshold, and why."""

    action: Action
    score: float | None = None
    threshold: float | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"action": self.action.value, "score": self.score, "threshold": self.threshold, "reason": self.reason}


# ----------------------------------------------------------------------------------------------------------------
# The fitted router file (written by `pet router calibrate`)


@dataclass
class EmbeddingScorer:
    """Logistic model on a query embedding: P(P's answer will be good enough)."""

    w: np.ndarray
    b: float

    def __call__(self, embedding: np.ndarray) -> float:
        z = float(np.asarray(embedding, dtype=np.float64).reshape(-1) @ self.w + self.b)
        return float(1 / (1 + np.exp(-np.clip(z, -30, 30))))

    def to_dict(self) -> dict[str, Any]:
        """YAML-ready parameters."""
        return {"kind": "logistic-embedding", "w": [float(v) for v in self.w], "b": float(self.b)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EmbeddingScorer:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(np.asarray(d["w"], dtype=np.float64), float(d["b"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"pregen entry needs numeric 'w' (list) and 'b': {err}") from None


@dataclass
class RouterFile:
    """Everything a policy needs: calibrators, thresholds, the pregen scorer, and how they were fitted."""

    p_calibrator: Calibrator = field(default_factory=GeomeanCalibrator)
    e_calibrator: Calibrator = field(default_factory=GeomeanCalibrator)
    p_threshold: float = 0.5
    e_threshold: float = 0.5
    pregen: EmbeddingScorer | None = None
    pregen_threshold: float = 0.5
    policy: str = "cascade"
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The YAML document."""
        return {
            "version": ROUTER_FILE_VERSION, "policy": self.policy,
            "p_threshold": float(self.p_threshold), "e_threshold": float(self.e_threshold),
            "pregen_threshold": float(self.pregen_threshold),
            "calibrators": {"p": self.p_calibrator.to_dict(), "e": self.e_calibrator.to_dict()},
            "pregen": self.pregen.to_dict() if self.pregen else None,
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "router file") -> RouterFile:
        """Validate and load; errors name the source and the key."""
        if not isinstance(d, dict):
            raise ValueError(f"{source}: must be a mapping")
        if d.get("version") != ROUTER_FILE_VERSION:
            raise ValueError(f"{source}: version must be {ROUTER_FILE_VERSION}, got {d.get('version')!r}")
        out = cls(policy=str(d.get("policy", "cascade")), info=dict(d.get("info") or {}))
        for key in ("p_threshold", "e_threshold", "pregen_threshold"):
            v = d.get(key, 0.5)
            if not isinstance(v, int | float) or not 0 <= v <= 1:
                raise ValueError(f"{source}: {key} must be a number in [0, 1], got {v!r}")
            setattr(out, key, float(v))
        cals = d.get("calibrators") or {}
        try:
            for tier in ("p", "e"):
                if tier in cals:
                    setattr(out, f"{tier}_calibrator", calibrator_from_dict(cals[tier]))
            if d.get("pregen"):
                out.pregen = EmbeddingScorer.from_dict(d["pregen"])
        except ValueError as err:
            raise ValueError(f"{source}: calibrators: {err}") from None
        if out.policy not in POLICIES:
            raise ValueError(f"{source}: policy must be one of {', '.join(POLICIES)}, got {out.policy!r}")
        return out

    def save(self, path: str | Path) -> Path:
        """Write atomically as YAML."""
        import yaml

        from pet.io import atomic_write_text

        text = "# fitted by `pet router calibrate`; point router.calibration at this file\n"
        atomic_write_text(path, text + yaml.safe_dump(self.to_dict(), sort_keys=False))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> RouterFile:
        """Read and validate a router YAML file."""
        import yaml

        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"router calibration file {p} does not exist; run: pet router calibrate")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ValueError(f"{p}: not valid YAML: {err}") from None
        return cls.from_dict(data, str(p))


# ----------------------------------------------------------------------------------------------------------------
# Policies


class RouterPolicy(ABC):
    """A router: one decision method over a :class:`RouteState`."""

    name: ClassVar[str] = ""
    needs_embedding: ClassVar[bool] = False

    def __init__(self, fitted: RouterFile):
        self.fitted = fitted

    @abstractmethod
    def decide(self, state: RouteState) -> Decision:
        """The next step for this query."""

    def p_score(self, p_signals: dict[str, float]) -> float:
        """Calibrated probability that P's answer is good enough."""
        return self.fitted.p_calibrator(p_signals)

    def _judge_expert(self, e_signals: dict[str, float]) -> Decision:
        score, thr = self.fitted.e_calibrator(e_signals), self.fitted.e_threshold
        if score >= thr:
            return Decision(Action.ANSWER_E, score, thr, f"expert confidence {score:.2f} >= {thr:.2f}")
        return Decision(Action.RUN_T, score, thr, f"expert confidence {score:.2f} < {thr:.2f}: escalate to T")


class CascadePolicy(RouterPolicy):
    """P answers first; low calibrated confidence escalates to the cloud (expert or T), then E -> T."""

    name = "cascade"

    def decide(self, state: RouteState) -> Decision:
        if state.e_signals is not None:
            return self._judge_expert(state.e_signals)
        if state.p_signals is None:
            return Decision(Action.RUN_P, reason="cascade: P answers first")
        score, thr = self.p_score(state.p_signals), self.fitted.p_threshold
        if score >= thr:
            return Decision(Action.ANSWER_P, score, thr, f"P confidence {score:.2f} >= {thr:.2f}")
        return Decision(Action.ESCALATE, score, thr, f"P confidence {score:.2f} < {thr:.2f}: escalate")


class PregenPolicy(RouterPolicy):
    """Decides P vs cloud from the query embedding before any generation; E -> T as in the cascade."""

    name = "pregen"
    needs_embedding = True

    def __init__(self, fitted: RouterFile):
        if fitted.pregen is None:
            raise ValueError("the pregen policy needs a fitted pregen model: run `pet router calibrate` "
                             "(without --no-pregen) and set router.calibration")
        super().__init__(fitted)

    def decide(self, state: RouteState) -> Decision:
        if state.e_signals is not None:
            return self._judge_expert(state.e_signals)
        if state.embedding is None:
            raise ValueError("the pregen policy needs the query embedding (RouteState.embedding)")
        assert self.fitted.pregen is not None
        score, thr = self.fitted.pregen(state.embedding), self.fitted.pregen_threshold
        if score >= thr:
            return Decision(Action.ANSWER_P, score, thr, f"predicted P quality {score:.2f} >= {thr:.2f}")
        return Decision(Action.ESCALATE, score, thr, f"predicted P quality {score:.2f} < {thr:.2f}: escalate")


POLICIES: dict[str, type[RouterPolicy]] = {c.name: c for c in (CascadePolicy, PregenPolicy)}


def make_policy(name: str, fitted: RouterFile) -> RouterPolicy:
    """A policy by name over fitted parameters."""
    if name not in POLICIES:
        raise ValueError(f"unknown router policy {name!r}; known: {', '.join(sorted(POLICIES))}")
    return POLICIES[name](fitted)


def policy_from_config(router_cfg: Any) -> RouterPolicy:
    """The policy a RouterConfig describes.

    With ``calibration`` set, calibrators and thresholds come from that file (the fitted thresholds);
    without it the thresholds of the config apply to the uncalibrated ``geomean`` score.
    """
    name = getattr(router_cfg.policy, "value", router_cfg.policy)
    if router_cfg.calibration:
        fitted = RouterFile.load(router_cfg.calibration)
    else:
        fitted = RouterFile(p_threshold=router_cfg.p_threshold, e_threshold=router_cfg.e_threshold, policy=name)
    return make_policy(name, fitted)
