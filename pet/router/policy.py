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
  predicting whether P will be good enough, or a ridge model predicting the quality gain of escalating), so no
  P generation is wasted on queries that leave anyway.
- ``stacked``: P answers first, then one linear model over [query embedding, P's confidence features] scores
  the answer (:class:`~pet.router.scorers.StackedScorer`; trained on the good-enough label or on the gain of
  escalating).

All judge an expert's answer the same way: calibrated E confidence below ``e_threshold`` -> T.

Score convention for every scorer: higher = keep on the device, in [0, 1]; a query escalates when its score is
below the threshold (the embedding scorers' two targets: :mod:`pet.router.scorers`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pet.router.calibrate import Calibrator, GeomeanCalibrator, calibrator_from_dict
from pet.router.scorers import EmbeddingScorer, StackedScorer

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
    stacked: StackedScorer | None = None
    stacked_threshold: float = 0.5
    p_bundle: dict[str, Any] | None = None  # the recipe of the P whose answers the file was fitted on

    def to_dict(self) -> dict[str, Any]:
        """The YAML document."""
        return {
            "version": ROUTER_FILE_VERSION, "policy": self.policy,
            "p_threshold": float(self.p_threshold), "e_threshold": float(self.e_threshold),
            "pregen_threshold": float(self.pregen_threshold),
            "calibrators": {"p": self.p_calibrator.to_dict(), "e": self.e_calibrator.to_dict()},
            "pregen": self.pregen.to_dict() if self.pregen else None,
            # Optional keys (still version 1: files without them load, with no stacked model).
            **({"stacked_threshold": float(self.stacked_threshold), "stacked": self.stacked.to_dict()}
               if self.stacked else {}),
            **({"p_bundle": self.p_bundle} if self.p_bundle else {}),
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
        if d.get("p_bundle") is not None:
            if not isinstance(d["p_bundle"], dict):
                raise ValueError(f"{source}: p_bundle must be a mapping (the P recipe the file was fitted for)")
            out.p_bundle = dict(d["p_bundle"])
        for key in ("p_threshold", "e_threshold", "pregen_threshold", "stacked_threshold"):
            v = d.get(key, 0.5)
            if not isinstance(v, int | float) or not 0 <= v <= 1:
                raise ValueError(f"{source}: {key} must be a number in [0, 1], got {v!r}")
            setattr(out, key, float(v))
        cals = d.get("calibrators") or {}
        try:
            for tier in ("p", "e"):
                if tier in cals:
                    setattr(out, f"{tier}_calibrator", calibrator_from_dict(cals[tier]))
        except ValueError as err:
            raise ValueError(f"{source}: calibrators: {err}") from None
        try:
            if d.get("pregen"):
                out.pregen = EmbeddingScorer.from_dict(d["pregen"])
            if d.get("stacked"):
                out.stacked = StackedScorer.from_dict(d["stacked"])
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None
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


def _scored(score: float, thr: float, what: str) -> Decision:
    """ANSWER_P when ``score >= thr``, else ESCALATE, with the reason."""
    if score >= thr:
        return Decision(Action.ANSWER_P, score, thr, f"{what} {score:.2f} >= {thr:.2f}")
    return Decision(Action.ESCALATE, score, thr, f"{what} {score:.2f} < {thr:.2f}: escalate")


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
        return _scored(self.p_score(state.p_signals), self.fitted.p_threshold, "P confidence")


class _EmbeddingPolicy(RouterPolicy):
    """A policy reading a fitted embedding model: the RouterFile attribute ``model`` and ``<model>_threshold``."""

    needs_embedding = True
    model: ClassVar[str] = ""

    def __init__(self, fitted: RouterFile):
        if getattr(fitted, self.model) is None:
            raise ValueError(f"the {self.name} policy needs a fitted {self.model} model: run `pet router calibrate` "
                             "(without --no-pregen, which skips the embedding models) and set router.calibration")
        super().__init__(fitted)

    def decide(self, state: RouteState) -> Decision:
        if state.e_signals is not None:
            return self._judge_expert(state.e_signals)
        if state.embedding is None:
            raise ValueError(f"the {self.name} policy needs the query embedding (RouteState.embedding)")
        return self._decide_on_device(state)

    @abstractmethod
    def _decide_on_device(self, state: RouteState) -> Decision:
        """The device step, with ``state.embedding`` set."""

    def _from_score(self, score: float) -> Decision:
        target = getattr(self.fitted, self.model).target
        what = "predicted P quality" if target == "good" else "score (1 - predicted gain) / 2"
        what = f"{self.model} {what}"
        return _scored(score, getattr(self.fitted, f"{self.model}_threshold"), what)


class PregenPolicy(_EmbeddingPolicy):
    """Decides P vs cloud from the query embedding before any generation; E -> T as in the cascade."""

    name = "pregen"
    model = "pregen"

    def _decide_on_device(self, state: RouteState) -> Decision:
        return self._from_score(self.fitted.pregen(state.embedding))


class StackedPolicy(_EmbeddingPolicy):
    """P answers first; a linear model on [query embedding, P's signals] keeps it or escalates; E -> T as usual."""

    name = "stacked"
    model = "stacked"

    def _decide_on_device(self, state: RouteState) -> Decision:
        if state.p_signals is None:
            return Decision(Action.RUN_P, reason="stacked: P answers first")
        return self._from_score(self.fitted.stacked(state.embedding, state.p_signals))


POLICIES: dict[str, type[RouterPolicy]] = {c.name: c for c in (CascadePolicy, PregenPolicy, StackedPolicy)}


def make_policy(name: str, fitted: RouterFile) -> RouterPolicy:
    """A policy by name over fitted parameters."""
    if name not in POLICIES:
        raise ValueError(f"unknown router policy {name!r}; known: {', '.join(sorted(POLICIES))}")
    return POLICIES[name](fitted)


def policy_from_config(router_cfg: Any) -> RouterPolicy:
    """The policy a RouterConfig describes.

    With ``calibration`` set (``default``: the file shipped for the default P), calibrators and thresholds come
    from that file (the fitted thresholds);
    without it the thresholds of the config apply to the uncalibrated ``geomean`` score.
    """
    from pet.router.defaults import resolve_calibration

    name = getattr(router_cfg.policy, "value", router_cfg.policy)
    if router_cfg.calibration:
        fitted = RouterFile.load(resolve_calibration(router_cfg.calibration))
    else:
        fitted = RouterFile(p_threshold=router_cfg.p_threshold, e_threshold=router_cfg.e_threshold, policy=name)
    return make_policy(name, fitted)
