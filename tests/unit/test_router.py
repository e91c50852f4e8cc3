"""Router unit tests on synthetic confidence signals: calibrators, policies, threshold selection, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pet.config.schema import PetConfig
from pet.config.schema.tiers import RouterPolicyName
from pet.router.calibrate import CALIBRATORS, IsotonicCalibrator, LogisticCalibrator, calibrator_from_dict, pava
from pet.router.fit import (
    binomial_sf,
    budget_rank,
    fit_router,
    qualities,
    sweep,
    threshold_for_budget,
    threshold_for_quality,
)
from pet.router.policy import POLICIES, Action, RouterFile, RouteState, make_policy, policy_from_config
from pet.router.router import Router


def sig(mean_logprob: float) -> dict[str, float]:
    """Signals whose three features all move with confidence."""
    return {"mean_logprob": mean_logprob, "min_token_prob": float(np.exp(3 * mean_logprob)),
            "mean_entropy": float(-mean_logprob * 2)}


def synthetic_records(n: int = 200, seed: int = 0) -> list[dict]:
    """P is right (copies the reference) with a probability rising in its confidence; T always right."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        lp = float(rng.uniform(-3, 0))
        good = rng.random() < 1 / (1 + np.exp(-(lp + 1.5) * 3))
        ref = f"answer number {i} is here"
        rec = {"id": str(i), "query": f"question {i}", "reference": ref,
               "p": {"text": ref if good else "something else entirely", "signals": sig(lp)},
               "t": {"text": ref, "signals": sig(-0.3)},
               "embedding": [lp, 1.0] + [0.0] * 6}
        if i % 3 == 0:
            e_lp = float(rng.uniform(-2, 0))
            rec["e"] = {"text": ref if e_lp > -1 else "wrong", "signals": sig(e_lp)}
        out.append(rec)
    return out


# ------------------------------------------------------------------------------------------------------------
# Metrics


# ------------------------------------------------------------------------------------------------------------
# Calibrators


def test_pava_fixes_violations_and_keeps_mean():
    y = np.array([0.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    fit = pava(y)
    assert np.all(np.diff(fit) >= 0)
    assert fit.mean() == pytest.approx(y.mean())
    assert fit.tolist() == pytest.approx([0, 1 / 3, 1 / 3, 1 / 3, 1, 1])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(-5, 0), st.booleans()), min_size=2, max_size=60))
def test_isotonic_is_monotone_and_in_range(pairs):
    x = np.array([[lp, np.exp(lp), -lp] for lp, _ in pairs])
    y = np.array([float(b) for _, b in pairs])
    cal = IsotonicCalibrator().fit(x, y)
    grid = np.linspace(-6, 1, 50)
    p = cal.predict(np.stack([grid, np.exp(grid), -grid], 1))
    assert np.all(np.diff(p) >= -1e-12)
    assert p.min() >= 0 and p.max() <= 1


def test_logistic_learns_direction_and_round_trips():
    recs = synthetic_records()
    x = np.array([[r["p"]["signals"][k] for k in ("mean_logprob", "min_token_prob", "mean_entropy")] for r in recs])
    y = np.array([r["p"]["text"] == r["reference"] for r in recs], dtype=float)
    cal = LogisticCalibrator().fit(x, y)
    lo, hi = cal(sig(-2.8)), cal(sig(-0.1))
    assert hi > 0.8 and lo < 0.2
    back = calibrator_from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back(sig(-1.0)) == pytest.approx(cal(sig(-1.0)))


def test_every_calibrator_round_trips_and_bad_entries_are_named():
    for kind, cls in CALIBRATORS.items():
        cal = cls().fit(np.array([[-1.0, 0.3, 1.0], [-0.1, 0.9, 0.2]]), np.array([0.0, 1.0]))
        back = calibrator_from_dict(cal.to_dict())
        assert back.kind == kind
        assert back(sig(-0.5)) == pytest.approx(cal(sig(-0.5)))
    with pytest.raises(ValueError, match="unknown calibrator 'nope'"):
        calibrator_from_dict({"kind": "nope"})
    with pytest.raises(ValueError, match="sorted and non-decreasing"):
        calibrator_from_dict({"kind": "isotonic", "x": [0, 1], "y": [1, 0]})
    with pytest.raises(ValueError, match="mean_logprob"):
        IsotonicCalibrator()({"mean_logprob": "x"})


# ------------------------------------------------------------------------------------------------------------
# Policies


def test_name_table_matches_config_enum():
    assert set(POLICIES) == {p.value for p in RouterPolicyName}
    for name, cls in POLICIES.items():
        assert cls.name == name and callable(cls.decide)


@pytest.mark.parametrize("kind", ["isotonic", "logistic"])
def test_cascade_is_monotone_in_confidence(kind):
    fitted = fit_router(synthetic_records(), cloud_budget=0.3, calibrator=kind)
    policy = make_policy("cascade", fitted)
    assert policy.decide(RouteState(query="q")).action is Action.RUN_P
    actions = [policy.decide(RouteState(p_signals=sig(lp))).action for lp in np.linspace(-4, 0, 81)]
    assert set(actions) == {Action.ESCALATE, Action.ANSWER_P}
    first_answer = actions.index(Action.ANSWER_P)
    assert all(a is Action.ANSWER_P for a in actions[first_answer:])  # once confident enough, stays on device
    e_actions = [policy.decide(RouteState(e_signals=sig(lp))).action for lp in np.linspace(-4, 0, 41)]
    assert set(e_actions) <= {Action.ANSWER_E, Action.RUN_T}
    if Action.ANSWER_E in e_actions:
        assert all(a is Action.ANSWER_E for a in e_actions[e_actions.index(Action.ANSWER_E):])


@pytest.mark.parametrize("budget", [0.0, 0.1, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("kind", ["isotonic", "logistic"])
def test_budget_respected_on_calibration_set(budget, kind):
    recs = synthetic_records(seed=1)
    emb = np.array([r["embedding"] for r in recs])
    fitted = fit_router(recs, cloud_budget=budget, calibrator=kind, embeddings=emb)
    for name in ("cascade", "pregen"):
        policy = make_policy(name, fitted)
        left = np.mean([policy.decide(RouteState(p_signals=r["p"]["signals"], embedding=np.array(r["embedding"])))
                        .action is Action.ESCALATE for r in recs])
        assert left <= budget + 1e-9, (name, left, budget)
        if 0 < budget < 1:  # scores have no ties (isotonic breaks them): the budget is used, not wasted
            assert left >= budget - 0.05, (name, left, budget)


def test_threshold_for_budget_with_ties():
    scores = np.array([0.2, 0.2, 0.2, 0.5, 0.9])
    t = threshold_for_budget(scores, 0.5)
    assert np.mean(scores < t) <= 0.5
    assert threshold_for_budget(scores, 1.0) > 0.9


def test_binomial_sf_matches_exact_sum():
    from math import comb

    for n, k, p in ((10, 3, 0.4), (250, 90, 0.4), (60, 0, 0.2), (60, 61, 0.2), (30, 12, 0.5)):
        exact = sum(comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(max(k, 0), n + 1))
        assert binomial_sf(k, n, p) == pytest.approx(exact, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("n", [10, 107, 250])
def test_budget_rank_is_conservative_and_monotone(n):
    assert budget_rank(n, 0.4) == int(np.floor(0.4 * n))
    ranks = [budget_rank(n, 0.4, c) for c in (0.5, 0.8, 0.9, 0.95)]
    assert ranks == sorted(ranks, reverse=True) and ranks[0] <= budget_rank(n, 0.4)
    assert budget_rank(n, 1.0, 0.9) == n and budget_rank(n, 0.0, 0.9) == 0
    with pytest.raises(ValueError):
        budget_rank(n, 0.4, 1.0)


def test_budget_confidence_keeps_new_queries_within_budget():
    """Fit on 100 uniform scores, measure the share of *new* uniform scores below the threshold (= threshold):
    the exact quantile exceeds a 40% budget about half the time, the 0.9-confidence threshold about 10%."""
    rng = np.random.default_rng(0)
    over = {None: 0, 0.9: 0}
    trials = 2000
    for _ in range(trials):
        s = rng.random(100)
        for c in over:
            over[c] += threshold_for_budget(s, 0.4, c) > 0.4
    assert 0.35 < over[None] / trials < 0.65
    assert 0.05 < over[0.9] / trials <= 0.12


def test_fit_router_with_budget_confidence():
    recs = synthetic_records(seed=1)
    plain = fit_router(recs, cloud_budget=0.4)
    safe = fit_router(recs, cloud_budget=0.4, budget_confidence=0.9)
    share = {k: f.info["cascade_on_calibration"]["cloud_share"] for k, f in (("plain", plain), ("safe", safe))}
    k = budget_rank(len(recs), 0.4, 0.9)
    assert k / len(recs) - 0.02 <= share["safe"] <= k / len(recs) < share["plain"] <= 0.4
    assert safe.info["budget_confidence"] == 0.9 and plain.info["budget_confidence"] is None


def test_target_quality_mode_reaches_target_with_fewer_escalations():
    recs = synthetic_records(seed=2)
    fitted = fit_router(recs, cloud_budget=None, target_quality=0.9)
    assert fitted.info["cascade_on_calibration"]["quality"] >= 0.9 * fitted.info["quality_always"]["t"] - 1e-9
    full = fit_router(recs, cloud_budget=None, target_quality=1.0)
    assert fitted.info["cascade_on_calibration"]["cloud_share"] <= full.info["cascade_on_calibration"]["cloud_share"]
    s = np.array([0.1, 0.5, 0.9])
    assert threshold_for_quality(s, np.array([0.0, 1.0, 1.0]), np.ones(3), 1.0) == pytest.approx(0.5)
    pts = sweep(s, np.zeros(3), np.ones(3))
    assert pts[0]["cloud_share"] == 0 and pts[-1]["cloud_share"] == 1 and pts[-1]["quality"] == 1


def test_agreement_labels_need_no_reference():
    recs = synthetic_records(20)
    for r in recs:
        del r["reference"]
    qs = qualities(recs, label="agreement", tau=0.5)
    assert qs.q_t.tolist() == [1.0] * 20
    assert qs.good_p.tolist() == [r["p"]["text"] == r["t"]["text"] for r in recs]
    with pytest.raises(ValueError, match="needs a non-empty 'reference'"):
        qualities(recs, label="reference")


def test_pregen_needs_fitted_model_and_embedding():
    with pytest.raises(ValueError, match="needs a fitted pregen model"):
        make_policy("pregen", RouterFile())
    fitted = fit_router(synthetic_records(), embeddings=np.array([r["embedding"] for r in synthetic_records()]))
    with pytest.raises(ValueError, match="needs the query embedding"):
        make_policy("pregen", fitted).decide(RouteState(query="q"))


# ------------------------------------------------------------------------------------------------------------
# Router file, config, Router, CLI


def test_router_file_round_trip_and_errors(tmp_path):
    recs = synthetic_records()
    fitted = fit_router(recs, cloud_budget=0.3, embeddings=np.array([r["embedding"] for r in recs]))
    path = fitted.save(tmp_path / "router.yaml")
    back = RouterFile.load(path)
    assert back.p_threshold == pytest.approx(fitted.p_threshold)
    assert back.p_calibrator(sig(-1.2)) == pytest.approx(fitted.p_calibrator(sig(-1.2)))
    assert back.pregen(np.array(recs[0]["embedding"])) == pytest.approx(fitted.pregen(np.array(recs[0]["embedding"])))
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\np_threshold: 3\n")
    with pytest.raises(ValueError, match=r"bad.yaml: p_threshold must be a number in \[0, 1\]"):
        RouterFile.load(bad)
    with pytest.raises(FileNotFoundError, match="pet router calibrate"):
        RouterFile.load(tmp_path / "missing.yaml")


class WordEmbedder:
    """A deterministic bag-of-words embedder for the domain classifier (stands in for MiniLM in unit tests)."""

    VOCAB = ("python", "list", "function", "hello", "weekend", "music")

    def encode(self, texts):
        v = np.array([[float(w in t.lower().split()) for w in self.VOCAB] for t in texts], dtype=np.float32)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)


def test_cloud_router_from_config(tmp_path):
    from pet.router.domains import DomainClassifier

    fitted = fit_router(synthetic_records(), cloud_budget=0.3)
    fitted.save(tmp_path / "router.yaml")
    cfg = PetConfig()
    cfg.router.calibration = str(tmp_path / "router.yaml")
    clf = DomainClassifier({"python": WordEmbedder().encode(["python list function"])}, WordEmbedder(), floor=0.5)
    r = Router.from_config(cfg, clf)
    assert r.choose_domain("what does a python function return").domain == "python"
    assert r.choose_domain("what does a python function return", registered=["law"]).domain is None
    assert r.choose_domain("hello how was your weekend").domain is None
    assert Router.from_config(cfg, None).choose_domain("python list").domain is None
    assert r.expert_good_enough(sig(-0.05)) is True
    assert r.expert_good_enough(sig(-3.9)) is False
    assert r.expert_good_enough({"mean_logprob": None}) is False  # malformed: escalate, never crash
    # Without a calibration file the config thresholds apply to exp(mean_logprob).
    plain = policy_from_config(PetConfig().router)
    assert plain.decide(RouteState(p_signals=sig(-0.1))).action is Action.ANSWER_P  # exp(-0.1)=0.90 >= 0.5
    assert plain.decide(RouteState(p_signals=sig(-2.0))).action is Action.ESCALATE


def test_cli_calibrate(tmp_path, capsys):
    from pet.cli.main import main

    data = tmp_path / "labelled.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in synthetic_records()) + "\n")
    out = tmp_path / "router.yaml"
    assert main(["router", "calibrate", "--data", str(data), "--cloud-budget", "0.3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "cascade" in text and "pregen" in text and str(out) in text
    fitted = RouterFile.load(out)
    assert fitted.info["cascade_on_calibration"]["cloud_share"] <= 0.3
    assert fitted.pregen is not None
    # Bad input: a clear error, exit 2, nothing written.
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"p": {"text": "x"}}\n')
    out2 = tmp_path / "r2.yaml"
    assert main(["router", "calibrate", "--data", str(bad), "--out", str(out2)]) == 2
    assert "bad.jsonl:1: needs 'p'" in capsys.readouterr().err
    assert not out2.exists()
    assert main(["router", "calibrate", "--data", str(data), "--cloud-budget", "1.5", "--out", str(out2)]) == 2
    assert main(["router", "calibrate", "--data", str(data), "--cloud-budget", "0.3", "--budget-confidence", "1",
                 "--out", str(out2)]) == 2
    assert not out2.exists()
    # --budget-confidence: a more conservative threshold (never more queries leaving than the plain quantile)
    out3 = tmp_path / "r3.yaml"
    assert main(["router", "calibrate", "--data", str(data), "--cloud-budget", "0.3", "--budget-confidence", "0.9",
                 "--out", str(out3)]) == 0
    assert (RouterFile.load(out3).info["cascade_on_calibration"]["cloud_share"]
            <= fitted.info["cascade_on_calibration"]["cloud_share"])
    assert main(["router", "calibrate", "--data", str(tmp_path / "none.jsonl"), "--out", str(out2)]) == 2
    assert not out2.exists()
