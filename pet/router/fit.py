"""Fit a router from labelled data: labels, calibrators, thresholds for a cloud budget or a quality target.

Labelled data is JSON Lines, one query per line::

    {"id": "...", "query": "...", "reference": "..." (optional), "domain": "python" | null (optional),
     "p": {"text": "...", "signals": {"mean_logprob": .., "min_token_prob": .., "mean_entropy": ..}},
     "e": {...} (optional: the expert's answer when the query has a domain), "t": {...},
     "embedding": [384 floats] (optional; computed with MiniLM when the pregen model is fitted)}

How "good enough" is labelled (``label`` argument):

- ``reference`` (default when every record has a reference): a tier's quality is ROUGE-L F1 of its answer
  against the reference answer; the answer is good enough when its quality is at least T's quality minus
  ``margin`` -- i.e. sending the query up would not have bought a noticeably better answer.
- ``agreement`` (no references needed): quality is ROUGE-L of the answer against T's answer (T's own
  quality is 1); good enough when that is at least ``tau``.

Thresholds: with ``cloud_budget`` the P threshold is the largest one whose share of calibration queries
leaving the device stays within the budget (with ``budget_confidence``, a lower one that keeps the share of
*new* queries within the budget with that probability: :func:`budget_rank`); with ``target_quality`` (a
fraction of always-T quality) it is the smallest share that reaches the target. The E threshold maximises
the cloud's quality on calibration queries that had a domain (ties go to the lower threshold: fewer calls
to T).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pet.router.calibrate import GeomeanCalibrator, features_of, fit_logistic, make_calibrator
from pet.router.metrics import rouge_l
from pet.router.policy import EmbeddingScorer, RouterFile

LABELS = ("reference", "agreement")


def read_labelled(path: str | Path) -> list[dict[str, Any]]:
    """Read and check a labelled JSONL file; errors name the line and the missing key."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"labelled data {p} does not exist")
    out = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{p}:{n}: not JSON: {err.msg}") from None
        for tier in ("p", "t"):
            if not isinstance(rec.get(tier), dict) or "text" not in rec[tier] or "signals" not in rec[tier]:
                raise ValueError(f"{p}:{n}: needs '{tier}': {{'text': ..., 'signals': {{...}}}}")
            try:
                features_of(rec[tier]["signals"])
            except ValueError as err:
                raise ValueError(f"{p}:{n}: {tier}.signals: {err}") from None
        if rec.get("e") is not None and ("text" not in rec["e"] or "signals" not in rec["e"]):
            raise ValueError(f"{p}:{n}: 'e' must have 'text' and 'signals'")
        out.append(rec)
    if len(out) < 4:
        raise ValueError(f"{p}: {len(out)} labelled records; at least 4 are needed to fit a router")
    return out


@dataclass
class Qualities:
    """Per-record quality of each tier and good-enough labels, as arrays."""

    q_p: np.ndarray
    q_e: np.ndarray  # equals q_t where no expert answered
    q_t: np.ndarray
    has_e: np.ndarray  # bool: an expert answered (the query had a domain)
    good_p: np.ndarray
    good_e: np.ndarray


def qualities(records: Sequence[dict[str, Any]], label: str = "reference", margin: float = 0.05,
              tau: float = 0.5) -> Qualities:
    """Quality of every tier's answer and the good-enough labels (see the module docstring)."""
    if label not in LABELS:
        raise ValueError(f"label must be one of {', '.join(LABELS)}, got {label!r}")
    if label == "reference" and not all(r.get("reference") for r in records):
        raise ValueError("label 'reference' needs a non-empty 'reference' in every record; use label 'agreement'")
    q = {k: [] for k in ("p", "e", "t")}
    has_e = []
    for r in records:
        e = r.get("e") if r.get("e") and not r["e"].get("same_as_t") else None
        has_e.append(e is not None)
        for tier, ans in (("p", r["p"]), ("e", e or r["t"]), ("t", r["t"])):
            if label == "reference":
                q[tier].append(rouge_l(ans["text"], r["reference"]))
            else:
                q[tier].append(1.0 if ans is r["t"] else rouge_l(ans["text"], r["t"]["text"]))
    q_p, q_e, q_t = (np.array(q[k]) for k in ("p", "e", "t"))
    if label == "reference":
        good_p, good_e = q_p >= q_t - margin, q_e >= q_t - margin
    else:
        good_p, good_e = q_p >= tau, q_e >= tau
    return Qualities(q_p, q_e, q_t, np.array(has_e, dtype=bool), good_p, good_e)


def feature_matrix(records: Sequence[dict[str, Any]], tier: str) -> np.ndarray:
    """[n, 3] features of one tier's answers (T's answer stands in where a record has no expert answer)."""
    return np.array([features_of((r.get(tier) or r["t"])["signals"]) for r in records], dtype=np.float64)


# ----------------------------------------------------------------------------------------------------------------
# Threshold selection


def cloud_quality(scores_e: np.ndarray, qs: Qualities, e_threshold: float) -> np.ndarray:
    """Per-record quality if the query goes to the cloud: the expert's answer if judged good enough, else T's."""
    keep_e = qs.has_e & (scores_e >= e_threshold)
    return np.where(keep_e, qs.q_e, qs.q_t)


def binomial_sf(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) >= k), summed in log space (numpy only; exact for the n of a calibration set)."""
    if k <= 0:
        return 1.0
    if k > n or p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    j = np.arange(k, n + 1)
    lg = np.vectorize(math.lgamma)
    logpmf = lg(n + 1) - lg(j + 1) - lg(n - j + 1) + j * math.log(p) + (n - j) * math.log1p(-p)
    return float(min(1.0, np.exp(logpmf).sum()))


def budget_rank(n: int, budget: float, confidence: float | None = None) -> int:
    """How many of ``n`` calibration queries may leave the device for a cloud ``budget``.

    ``confidence=None``: floor(budget * n), the exact calibration quantile; the share on new queries then
    exceeds the budget about half the time. With a ``confidence`` c in (0, 1): the largest k such that, with
    the threshold at the (k+1)-th smallest calibration score, the share of *new* queries leaving stays within
    the budget with probability >= c. For continuous scores that share is F(s_(k+1)) ~ Beta(k+1, n-k)
    (an order statistic of uniforms, whatever the score distribution), and P(Beta(k+1, n-k) <= B) =
    P(Binomial(n, B) >= k+1) -- a distribution-free bound. Never more than floor(budget * n).
    """
    k = int(np.floor(budget * n + 1e-9))
    if confidence is None or k >= n:
        return k
    if not 0 < confidence < 1:
        raise ValueError("budget confidence must be in (0, 1)")
    while k > 0 and binomial_sf(k + 1, n, budget) < confidence:
        k -= 1
    return k


def threshold_for_budget(scores: np.ndarray, budget: float, confidence: float | None = None) -> float:
    """Largest threshold t with mean(scores < t) <= budget (queries below t leave the device).

    With ``confidence``, the rank comes from :func:`budget_rank`: the share of new queries leaving stays
    within the budget with that probability, rather than just on the calibration set.
    """
    if not 0 <= budget <= 1:
        raise ValueError("cloud budget must be in [0, 1]")
    s = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(s)
    k = budget_rank(n, budget, confidence)  # at most k queries may leave
    if k >= n:
        return 1.0 + 1e-9 if s[-1] >= 1.0 else float(np.nextafter(s[-1], np.inf))
    # Every score strictly below s[k] leaves; ties at s[k] stay, so the share is <= k/n. The 1e-9 margin keeps
    # s[k] itself on the device when one query's score is recomputed with a last-bit rounding difference.
    return float(s[k]) - 1e-9


def sweep(scores: np.ndarray, q_device: np.ndarray, q_cloud: np.ndarray) -> list[dict[str, float]]:
    """Quality and cloud share at every distinct threshold (plus all-device and all-cloud ends)."""
    s = np.asarray(scores, dtype=np.float64)
    cuts = np.unique(np.concatenate([[-np.inf], s, [np.inf]]))
    out = []
    for t in cuts:
        cloud = s < t
        out.append({"threshold": float(t), "cloud_share": float(cloud.mean()),
                    "quality": float(np.where(cloud, q_cloud, q_device).mean())})
    return out


def threshold_for_quality(scores: np.ndarray, q_device: np.ndarray, q_cloud: np.ndarray, target: float) -> float:
    """Smallest-share threshold whose mean quality reaches ``target`` (absolute); the all-cloud one if none does."""
    best = None
    for pt in sweep(scores, q_device, q_cloud):
        if pt["quality"] >= target - 1e-12 and (best is None or pt["cloud_share"] < best["cloud_share"]):
            best = pt
    t = best["threshold"] if best else np.inf
    return float(min(max(t, 0.0), 1.0 + 1e-9)) if np.isfinite(t) else 1.0 + 1e-9


def best_e_threshold(scores_e: np.ndarray, qs: Qualities) -> float:
    """E threshold that maximises cloud quality on records with an expert answer (lowest among ties)."""
    if not qs.has_e.any():
        return 0.5
    cands = np.unique(np.concatenate([[0.0], scores_e[qs.has_e]]))
    vals = [cloud_quality(scores_e, qs, t)[qs.has_e].mean() for t in cands]
    return float(cands[int(np.argmax(vals))])


# ----------------------------------------------------------------------------------------------------------------
# The whole fit


def _fit_tier(kind: str, x: np.ndarray, y: np.ndarray):
    if len(np.unique(y)) < 2:
        # One class only: nothing to separate; a constant isotonic fit keeps "always/never good" honest.
        return make_calibrator("isotonic").fit(x, y) if kind == "isotonic" else GeomeanCalibrator()
    return make_calibrator(kind).fit(x, y)


def fit_router(records: Sequence[dict[str, Any]], cloud_budget: float | None = 0.3,
               target_quality: float | None = None, calibrator: str = "isotonic", label: str = "reference",
               margin: float = 0.05, tau: float = 0.5, embeddings: np.ndarray | None = None,
               policy: str = "cascade", pregen_l2: float = 1.0,
               budget_confidence: float | None = None) -> RouterFile:
    """Fit calibrators, the pregen scorer (when ``embeddings`` are given) and thresholds.

    ``budget_confidence`` (with ``cloud_budget``): pick the P and pregen thresholds so that new queries stay
    within the budget with this probability (:func:`budget_rank`), not just the calibration queries.
    """
    if (cloud_budget is None) == (target_quality is None):
        raise ValueError("give exactly one of cloud_budget or target_quality")
    qs = qualities(records, label, margin, tau)
    xp, xe = feature_matrix(records, "p"), feature_matrix(records, "e")
    cal_p = _fit_tier(calibrator, xp, qs.good_p.astype(float))
    cal_e = (_fit_tier(calibrator, xe[qs.has_e], qs.good_e[qs.has_e].astype(float))
             if qs.has_e.sum() >= 4 else GeomeanCalibrator())
    s_p, s_e = cal_p.predict(xp), cal_e.predict(xe)
    e_thr = best_e_threshold(s_e, qs)
    q_cloud = cloud_quality(s_e, qs, e_thr)
    target_abs = None if target_quality is None else target_quality * float(qs.q_t.mean())

    def pick(scores: np.ndarray) -> float:
        if cloud_budget is not None:
            return threshold_for_budget(scores, cloud_budget, budget_confidence)
        return threshold_for_quality(scores, qs.q_p, q_cloud, target_abs)

    p_thr = pick(s_p)
    pregen, pregen_thr = None, 0.5
    if embeddings is not None:
        emb = np.asarray(embeddings, dtype=np.float64)
        if emb.shape[0] != len(records):
            raise ValueError(f"{emb.shape[0]} embeddings for {len(records)} records")
        w, b = fit_logistic(emb, qs.good_p.astype(float), l2=pregen_l2)
        pregen = EmbeddingScorer(w, b)
        pregen_thr = pick(np.array([pregen(v) for v in emb]))
    p_thr, pregen_thr = (float(np.clip(t, 0.0, 1.0)) for t in (p_thr, pregen_thr))

    def summary(scores: np.ndarray, thr: float) -> dict[str, float]:
        cloud = scores < thr
        return {"cloud_share": float(cloud.mean()), "quality": float(np.where(cloud, q_cloud, qs.q_p).mean())}

    info = {
        "records": len(records), "label": label, "margin": margin, "tau": tau, "calibrator": calibrator,
        "cloud_budget": cloud_budget, "budget_confidence": budget_confidence, "target_quality": target_quality,
        "good_p_rate": float(qs.good_p.mean()), "good_e_rate": float(qs.good_e[qs.has_e].mean()) if qs.has_e.any()
        else None, "records_with_expert": int(qs.has_e.sum()),
        "quality_always": {"p": float(qs.q_p.mean()), "e": float(qs.q_e.mean()), "t": float(qs.q_t.mean())},
        "cascade_on_calibration": summary(s_p, p_thr),
    }
    if pregen is not None:
        info["pregen_on_calibration"] = summary(np.array([pregen(v) for v in emb]), pregen_thr)
    return RouterFile(cal_p, cal_e, p_thr, e_thr, pregen, pregen_thr, policy, info)
