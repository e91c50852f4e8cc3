"""Fit a router from labelled data: labels, calibrators, thresholds for a cloud budget or a quality target.

Labelled data is the JSON Lines file of :mod:`pet.router.label` (one query a line: P's, T's and optionally the
expert's answer with their confidence signals; ``pet router label`` makes one from your own queries).

How "good enough" is labelled (``label`` argument):

- ``reference`` (default when every record has a reference): a tier's quality is ROUGE-L F1 of its answer
  against the reference answer; the answer is good enough when its quality is at least T's quality minus
  ``margin`` -- i.e. sending the query up would not have bought a noticeably better answer.
- ``agreement`` (no references needed): quality is ROUGE-L of the answer against T's answer (T's own
  quality is 1); good enough when that is at least ``tau``.

Scorers on the query embedding (when ``embeddings`` are given): ``pregen`` (embedding only, decides before P
runs) and ``stacked`` (embedding plus P's three confidence features, decides after P ran). ``target``
chooses what they learn: ``good`` -- logistic regression on the good-enough label above; ``gain`` -- ridge
regression on the quality the cloud would add, ``q_cloud - q_p`` (:func:`cloud_quality` with the fitted E
threshold), mapped to a score by :func:`pet.router.scorers.link`. Their L2 penalty is chosen by
``CV_FOLDS``-fold cross-validation on the calibration records over ``L2_GRID`` (criterion: :func:`routed_gain`
of the out-of-fold scores up to the budget share), unless given; their thresholds are then picked on the
out-of-fold scores, which behave like scores of new queries (in-sample scores of a 387-weight model fitted
on a few hundred records are over-confident). The original pregen fit (target ``good`` with a fixed
``pregen_l2``) is unchanged: in-sample scores.

Thresholds: with ``cloud_budget`` the P threshold is the largest one whose share of calibration queries
leaving the device stays within the budget (with ``budget_confidence``, a lower one that keeps the share of
*new* queries within the budget with that probability: :func:`budget_rank`); with ``target_quality`` (a
fraction of always-T quality) it is the smallest share that reaches the target. The E threshold maximises
the cloud's quality on calibration queries that had a domain (ties go to the lower threshold: fewer calls
to T).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pet.metrics import rouge_l
from pet.router.calibrate import Calibrator, GeomeanCalibrator, features_of, fit_logistic, fit_ridge, make_calibrator
from pet.router.policy import RouterFile
from pet.router.scorers import TARGETS, EmbeddingScorer, StackedScorer, link

LABELS = ("reference", "agreement")
L2_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)  # candidate L2 penalties for the embedding / stacked scorers
CV_FOLDS = 5


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


def oracle_at_budget(q_p: np.ndarray, q_cloud: np.ndarray, budget: float) -> tuple[float, float]:
    """(share, quality) of the best any router can do with at most ``budget`` of the queries leaving: escalate the
    queries with the largest positive gain ``q_cloud - q_p`` first. An upper bound for every policy's curve."""
    gain = q_cloud - q_p
    k = int(np.floor(budget * len(gain) + 1e-9))
    top = np.argsort(-gain, kind="stable")[:k]
    top = top[gain[top] > 0]
    return float(len(top) / len(gain)), float((q_p.sum() + gain[top].sum()) / len(gain))


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
# Linear scorers over embeddings (pregen, stacked) with cross-validated L2


def routed_gain(scores: np.ndarray, gain: np.ndarray, max_share: float) -> float:
    """Mean quality gained over always-P when the lowest-scored queries leave first, averaged over every share
    from 0 to ``max_share`` (a partial area under the quality-vs-share curve; higher is better)."""
    order = np.argsort(np.asarray(scores, dtype=np.float64), kind="mergesort")
    n = len(order)
    cum = np.concatenate([[0.0], np.cumsum(np.asarray(gain, dtype=np.float64)[order])]) / n
    return float(cum[: int(np.floor(max_share * n + 1e-9)) + 1].mean())


def _fit_linear(x: np.ndarray, y: np.ndarray, target: str, l2: float,
                init: tuple[np.ndarray, float] | None = None) -> tuple[np.ndarray, float]:
    return fit_logistic(x, y, l2=l2, init=init) if target == "good" else fit_ridge(x, y, l2=l2)


@dataclass
class LinearFit:
    """A fitted linear scorer's weights, its L2, its out-of-fold scores and the cross-validation table."""

    w: np.ndarray
    b: float
    l2: float
    oof: np.ndarray
    cv: dict[float, float]


def fit_linear_cv(x: np.ndarray, y: np.ndarray, target: str, gain: np.ndarray, max_share: float,
                  l2: float | None = None, folds: int = CV_FOLDS, seed: int = 0) -> LinearFit:
    """Fit ``link(x @ w + b, target)`` (logistic on 0/1 ``y`` for ``good``, ridge on ``y`` for ``gain``).

    ``l2=None``: the penalty in :data:`L2_GRID` whose out-of-fold scores route best (:func:`routed_gain`
    of ``gain`` up to ``max_share``; ties go to the stronger penalty). The out-of-fold scores of the chosen
    penalty are returned for threshold picking; the weights are refitted on all rows.
    """
    n = len(y)
    k = max(2, min(folds, n))
    fold = np.random.default_rng(seed).permutation(n) % k
    cv, oofs = {}, {}
    warm: dict[int, tuple[np.ndarray, float]] = {}  # per fold: the fit at the previous (stronger) penalty
    for lam in sorted(L2_GRID if l2 is None else (l2,), reverse=True):
        z = np.empty(n)
        for f in range(k):
            tr = fold != f
            w, b = warm[f] = _fit_linear(x[tr], y[tr], target, lam, warm.get(f))
            z[~tr] = x[~tr] @ w + b
        oofs[lam] = link(z, target)
        cv[lam] = routed_gain(oofs[lam], gain, max_share)
    best = max(cv, key=lambda lam: (round(cv[lam], 12), lam))
    w, b = _fit_linear(x, y, target, best)  # from scratch, so the weights do not depend on the grid
    return LinearFit(w, b, float(best), oofs[best], {float(k_): v for k_, v in cv.items()})


# ----------------------------------------------------------------------------------------------------------------
# The whole fit


def _fit_tier(kind: str, x: np.ndarray, y: np.ndarray) -> Calibrator:
    if len(np.unique(y)) < 2:
        # One class only: nothing to separate; a constant isotonic fit keeps "always/never good" honest.
        return make_calibrator("isotonic").fit(x, y) if kind == "isotonic" else GeomeanCalibrator()
    return make_calibrator(kind).fit(x, y)


def _fit_calibrators(kind: str, xp: np.ndarray, xe: np.ndarray, qs: Qualities) -> tuple[Calibrator, Calibrator]:
    """P's calibrator on every record; E's on the records an expert answered (geomean when fewer than 4)."""
    cal_e = (_fit_tier(kind, xe[qs.has_e], qs.good_e[qs.has_e].astype(float))
             if qs.has_e.sum() >= 4 else GeomeanCalibrator())
    return _fit_tier(kind, xp, qs.good_p.astype(float)), cal_e


def _threshold_rule(qs: Qualities, q_cloud: np.ndarray, cloud_budget: float | None,
                    budget_confidence: float | None, target_quality: float | None) -> Callable[[np.ndarray], float]:
    """Scores -> threshold: the largest within the cloud budget, or the smallest share reaching the quality target."""
    if cloud_budget is not None:
        return lambda scores: threshold_for_budget(scores, cloud_budget, budget_confidence)
    target_abs = target_quality * float(qs.q_t.mean())
    return lambda scores: threshold_for_quality(scores, qs.q_p, q_cloud, target_abs)


@dataclass
class _EmbeddingScorers:
    """The fitted pregen (and stacked) scorers, the scores their thresholds were picked on, the CV tables."""

    pregen: EmbeddingScorer
    scored: dict[str, np.ndarray]
    cv_info: dict[str, Any]
    stacked: StackedScorer | None = None


def _fit_embedding_scorers(emb: np.ndarray, xp: np.ndarray, qs: Qualities, q_cloud: np.ndarray, target: str,
                           max_share: float, pregen_l2: float | None, stacked_l2: float | None,
                           fit_stacked: bool) -> _EmbeddingScorers:
    """The pregen scorer on the embedding and (``fit_stacked``) the stacked one on [embedding, P's features]."""
    gain = q_cloud - qs.q_p
    y = qs.good_p.astype(float) if target == "good" else gain
    if target == "good" and pregen_l2 is not None:  # the original pregen fit: fixed L2, in-sample scores
        pregen = EmbeddingScorer(*fit_logistic(emb, y, l2=pregen_l2))
        out = _EmbeddingScorers(pregen, {"pregen": np.array([pregen(v) for v in emb])}, {})
    else:
        lf = fit_linear_cv(emb, y, target, gain, max_share, pregen_l2)
        out = _EmbeddingScorers(EmbeddingScorer(lf.w, lf.b, target), {"pregen": lf.oof},
                                {"pregen": {"l2": lf.l2, "routed_gain_by_l2": lf.cv}})
    if fit_stacked:
        # Signals standardised; the unit-norm MiniLM embedding is used as it is (mean 0, scale 1).
        d = emb.shape[1]
        mean = np.concatenate([np.zeros(d), xp.mean(0)])
        sd = xp.std(0)
        scale = np.concatenate([np.ones(d), np.where(sd > 1e-9, sd, 1.0)])
        lf = fit_linear_cv((np.hstack([emb, xp]) - mean) / scale, y, target, gain, max_share, stacked_l2)
        out.stacked, out.scored["stacked"] = StackedScorer(lf.w, lf.b, mean, scale, target), lf.oof
        out.cv_info["stacked"] = {"l2": lf.l2, "routed_gain_by_l2": lf.cv}
    return out


def fit_router(records: Sequence[dict[str, Any]], cloud_budget: float | None = 0.3,
               target_quality: float | None = None, calibrator: str = "isotonic", label: str = "reference",
               margin: float = 0.05, tau: float = 0.5, embeddings: np.ndarray | None = None,
               policy: str = "cascade", pregen_l2: float | None = 1.0,
               budget_confidence: float | None = None, target: str = "good", stacked_l2: float | None = None,
               fit_stacked: bool = True) -> RouterFile:
    """Fit calibrators, the pregen and stacked scorers (when ``embeddings`` are given) and thresholds.

    ``budget_confidence`` (with ``cloud_budget``): pick the P, pregen and stacked thresholds so that new
    queries stay within the budget with this probability (:func:`budget_rank`), not just the calibration
    queries. ``target`` (``good`` | ``gain``): what the pregen and stacked scorers learn (module docstring);
    ``pregen_l2`` / ``stacked_l2``: their L2 penalty, ``None`` = cross-validated. The cascade calibrators
    always learn the good-enough label.
    """
    if (cloud_budget is None) == (target_quality is None):
        raise ValueError("give exactly one of cloud_budget or target_quality")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    qs = qualities(records, label, margin, tau)
    xp, xe = feature_matrix(records, "p"), feature_matrix(records, "e")
    cal_p, cal_e = _fit_calibrators(calibrator, xp, xe, qs)
    s_p, s_e = cal_p.predict(xp), cal_e.predict(xe)
    e_thr = best_e_threshold(s_e, qs)
    q_cloud = cloud_quality(s_e, qs, e_thr)
    pick = _threshold_rule(qs, q_cloud, cloud_budget, budget_confidence, target_quality)
    out = RouterFile(cal_p, cal_e, float(np.clip(pick(s_p), 0.0, 1.0)), e_thr, policy=policy)
    info = {
        "records": len(records), "label": label, "margin": margin, "tau": tau, "calibrator": calibrator,
        "cloud_budget": cloud_budget, "budget_confidence": budget_confidence, "target_quality": target_quality,
        "good_p_rate": float(qs.good_p.mean()), "good_e_rate": float(qs.good_e[qs.has_e].mean()) if qs.has_e.any()
        else None, "records_with_expert": int(qs.has_e.sum()),
        "quality_always": {"p": float(qs.q_p.mean()), "e": float(qs.q_e.mean()), "t": float(qs.q_t.mean())},
    }

    def summary(scores: np.ndarray, thr: float) -> dict[str, float]:
        cloud = scores < thr
        return {"cloud_share": float(cloud.mean()), "quality": float(np.where(cloud, q_cloud, qs.q_p).mean())}

    info["cascade_on_calibration"] = summary(s_p, out.p_threshold)
    if embeddings is not None:
        emb = np.asarray(embeddings, dtype=np.float64)
        if emb.ndim != 2 or emb.shape[0] != len(records):
            raise ValueError(f"{emb.shape[0]} embeddings for {len(records)} records")
        fit = _fit_embedding_scorers(emb, xp, qs, q_cloud, target, 1.0 if cloud_budget is None else cloud_budget,
                                     pregen_l2, stacked_l2, fit_stacked)
        out.pregen, out.stacked = fit.pregen, fit.stacked
        out.pregen_threshold = float(np.clip(pick(fit.scored["pregen"]), 0.0, 1.0))
        info.update(target=target, cross_validation=fit.cv_info,
                    pregen_on_calibration=summary(fit.scored["pregen"], out.pregen_threshold))
        if fit.stacked is not None:
            out.stacked_threshold = float(np.clip(pick(fit.scored["stacked"]), 0.0, 1.0))
            info["stacked_on_calibration"] = summary(fit.scored["stacked"], out.stacked_threshold)
    out.info = info
    return out
