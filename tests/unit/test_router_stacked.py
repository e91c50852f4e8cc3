"""The stacked router (query embedding + P's signals) and the gain target: decisions, budget, file, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pet.router.calibrate import fit_ridge
from pet.router.fit import fit_router, routed_gain
from pet.router.policy import Action, RouterFile, RouteState, make_policy
from pet.router.scorers import EmbeddingScorer, StackedScorer
from tests.unit.test_router import sig, synthetic_records


def embeddings_of(recs: list[dict]) -> np.ndarray:
    return np.array([r["embedding"] for r in recs], dtype=np.float64)


def two_group_records(n: int = 120, seed: int = 0) -> list[dict]:
    """Two query groups with the same good-enough rate (half of P's answers are good in each) but different
    gains from escalating: in group "high" T is exact and P's bad answers are empty of the reference (gain 1);
    in group "low" T only half matches and P's bad answers are a little worse (gain 0.1). The embedding tells
    the groups apart; P's signals carry no information."""
    rng = np.random.default_rng(seed)
    ref = "a b c d e f g h i j"
    out = []
    for i in range(n):
        high, p_good = i % 2 == 0, (i // 2) % 2 == 0
        t_text = ref if high else "a b c d e x x x x x"  # ROUGE-L 1.0 or 0.5
        p_bad = "z z z z z z z z z z" if high else "a b c d x x x x x x"  # 0.0 or 0.4 (< 0.5 - margin)
        emb = [1.0 if high else 0.0, 0.0 if high else 1.0, *rng.normal(0, 0.05, 4)]
        out.append({"id": str(i), "query": f"q{i}", "reference": ref, "group": "high" if high else "low",
                    "p": {"text": t_text if p_good else p_bad, "signals": sig(float(rng.uniform(-3, 0)))},
                    "t": {"text": t_text, "signals": sig(-0.3)}, "embedding": emb})
    return out


# ------------------------------------------------------------------------------------------------------------
# Fitting


def test_fit_ridge_primal_equals_dual_and_recovers_weights():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    w, b = fit_ridge(x, x @ [1.0, -2.0, 0.5] + 3.0, l2=1e-6)
    assert w == pytest.approx([1.0, -2.0, 0.5], abs=1e-4) and b == pytest.approx(3.0, abs=1e-4)
    wide = rng.normal(size=(10, 30))  # d > n: solved in the dual form
    y = rng.normal(size=10)
    w_dual, b_dual = fit_ridge(wide, y, l2=0.7)
    xc = wide - wide.mean(0)
    w_primal = np.linalg.solve(xc.T @ xc + 0.7 * np.eye(30), xc.T @ (y - y.mean()))
    assert w_dual == pytest.approx(w_primal, abs=1e-9) and b_dual == pytest.approx(y.mean() - wide.mean(0) @ w_primal)
    with pytest.raises(ValueError, match="positive"):
        fit_ridge(x, x[:, 0], l2=0)


def test_routed_gain_prefers_escalating_the_big_gains_first():
    gain = np.array([0.9, 0.0, 0.0, 0.1])
    assert routed_gain(np.array([0.1, 0.9, 0.8, 0.5]), gain, 0.5) > routed_gain(np.array([0.9, 0.1, 0.2, 0.5]),
                                                                                   gain, 0.5)
    assert routed_gain(np.zeros(4), gain, 0.0) == 0.0


def test_gain_target_ranks_high_gain_group_first():
    recs = two_group_records()
    emb = embeddings_of(recs)
    high = np.array([r["group"] == "high" for r in recs])
    gain_fit = fit_router(recs, cloud_budget=0.5, embeddings=emb, target="gain", pregen_l2=None)
    assert gain_fit.pregen.target == "gain" and gain_fit.stacked.target == "gain"
    xp = np.array([[r["p"]["signals"][k] for k in ("mean_logprob", "min_token_prob", "mean_entropy")] for r in recs])
    for scores in (gain_fit.pregen.predict(emb), gain_fit.stacked.predict(emb, xp)):
        first_half = np.argsort(scores)[: high.sum()]  # the queries that leave first
        assert high[first_half].mean() >= 0.9 and scores[high].mean() < scores[~high].mean() - 0.1
    # The good-enough label cannot tell the groups apart (half good in each), so it escalates far worse.
    good_fit = fit_router(recs, cloud_budget=0.5, embeddings=emb, target="good")
    budget = high.mean()
    left = {name: f.stacked.predict(emb, xp) < f.stacked_threshold for name, f in (("gain", gain_fit),
                                                                                  ("good", good_fit))}
    assert left["gain"].mean() <= budget + 1e-9
    assert (left["gain"] & high).sum() > (left["good"] & high).sum()
    assert gain_fit.info["stacked_on_calibration"]["quality"] > good_fit.info["stacked_on_calibration"]["quality"]


@pytest.mark.parametrize("target", ["good", "gain"])
@pytest.mark.parametrize("budget", [0.0, 0.3, 1.0])
def test_stacked_budget_respected_on_calibration_scores(target, budget):
    """Thresholds are picked on the out-of-fold calibration scores: their share leaving is within the budget;
    on new queries from the same distribution the share stays near it."""
    recs = synthetic_records(seed=1)
    fitted = fit_router(recs, cloud_budget=budget, embeddings=embeddings_of(recs), target=target, pregen_l2=None)
    for name in ("stacked", "pregen"):
        share = fitted.info[f"{name}_on_calibration"]["cloud_share"]
        assert share <= budget + 1e-9, (name, share)
        if 0 < budget < 1:
            assert share >= budget - 0.05, (name, share)
    assert fitted.info["cross_validation"]["stacked"]["l2"] in fitted.info["cross_validation"]["stacked"][
        "routed_gain_by_l2"]
    new = synthetic_records(seed=7)
    policy = make_policy("stacked", fitted)
    left = np.mean([policy.decide(RouteState(embedding=np.array(r["embedding"]), p_signals=r["p"]["signals"]))
                    .action is Action.ESCALATE for r in new])
    assert abs(left - budget) <= 0.12


def test_fixed_l2_and_bad_target():
    recs = synthetic_records(60)
    fitted = fit_router(recs, embeddings=embeddings_of(recs), target="gain", pregen_l2=0.5, stacked_l2=2.0)
    assert fitted.info["cross_validation"]["stacked"]["l2"] == 2.0 and fitted.info["cross_validation"]["pregen"][
        "l2"] == 0.5
    assert fit_router(recs, embeddings=embeddings_of(recs), fit_stacked=False).stacked is None
    with pytest.raises(ValueError, match="target must be one of good, gain"):
        fit_router(recs, embeddings=embeddings_of(recs), target="quality")


# ------------------------------------------------------------------------------------------------------------
# Policy


@pytest.mark.parametrize("target", ["good", "gain"])
def test_stacked_policy_steps_and_monotone_in_score(target):
    recs = synthetic_records()
    fitted = fit_router(recs, cloud_budget=0.3, embeddings=embeddings_of(recs), target=target)
    policy = make_policy("stacked", fitted)
    assert policy.needs_embedding
    emb = np.array(recs[0]["embedding"])
    assert policy.decide(RouteState(query="q", embedding=emb)).action is Action.RUN_P
    with pytest.raises(ValueError, match="needs the query embedding"):
        policy.decide(RouteState(query="q", p_signals=sig(-1.0)))
    assert policy.decide(RouteState(embedding=emb, e_signals=sig(-0.05))).action in (Action.ANSWER_E, Action.RUN_T)
    states = [RouteState(embedding=np.array(r["embedding"]), p_signals=sig(lp))
              for r in recs[:20] for lp in np.linspace(-3, 0, 7)]
    decisions = sorted((policy.decide(s) for s in states), key=lambda d: d.score)
    actions = [d.action for d in decisions]
    assert set(actions) == {Action.ESCALATE, Action.ANSWER_P}
    first = actions.index(Action.ANSWER_P)
    assert all(a is Action.ANSWER_P for a in actions[first:]) and all(a is Action.ESCALATE for a in actions[:first])
    assert all(0 <= d.score <= 1 and d.threshold == fitted.stacked_threshold for d in decisions)
    assert "stacked" in decisions[0].reason
    # More confident P (same query) never lowers the stacked score when the good-enough label follows confidence.
    if target == "good":
        s = [fitted.stacked(emb, sig(lp)) for lp in np.linspace(-3, 0, 13)]
        assert np.all(np.diff(s) >= -1e-12)


def test_stacked_needs_fitted_model():
    with pytest.raises(ValueError, match="needs a fitted stacked model"):
        make_policy("stacked", RouterFile())


# ------------------------------------------------------------------------------------------------------------
# File format


def test_stacked_round_trip_and_old_files_load(tmp_path):
    recs = synthetic_records()
    fitted = fit_router(recs, cloud_budget=0.3, embeddings=embeddings_of(recs), target="gain", pregen_l2=None,
                        policy="stacked")
    back = RouterFile.load(fitted.save(tmp_path / "router.yaml"))
    assert back.policy == "stacked" and back.stacked_threshold == pytest.approx(fitted.stacked_threshold)
    emb = np.array(recs[3]["embedding"])
    assert back.stacked(emb, sig(-1.1)) == pytest.approx(fitted.stacked(emb, sig(-1.1)))
    assert back.pregen.target == "gain" and back.pregen(emb) == pytest.approx(fitted.pregen(emb))
    again = StackedScorer.from_dict(json.loads(json.dumps(fitted.stacked.to_dict())))
    assert again.target == "gain" and again.embedding_dim == len(emb)
    # A version-1 file from before the stacked model: no stacked keys, a pregen entry without 'target'.
    old = fitted.to_dict()
    del old["stacked"], old["stacked_threshold"]
    old["pregen"] = {"kind": "logistic-embedding", "w": [0.5] * len(emb), "b": 0.1}
    loaded = RouterFile.from_dict(old)
    assert loaded.stacked is None and loaded.pregen.target == "good"
    assert loaded.pregen(emb) == pytest.approx(1 / (1 + np.exp(-(0.5 * emb.sum() + 0.1))))
    with pytest.raises(ValueError, match="needs a fitted stacked model"):
        make_policy("stacked", loaded)


def test_stacked_bad_entries_name_the_key():
    good = StackedScorer(np.ones(5), 0.0, np.zeros(5), np.ones(5)).to_dict()
    cases = [
        ({k: v for k, v in good.items() if k != "w"}, "stacked entry needs 'w'"),
        ({**good, "mean": ["x"] * 5}, "'mean' must be a list of numbers"),
        ({**good, "scale": [1.0] * 4}, "same length"),
        ({**good, "scale": [1.0, 1.0, 0.0, 1.0, 1.0]}, "'scale' must be positive"),
        ({**good, "b": "one"}, "'b' must be a finite number"),
        ({**good, "target": "best"}, "'target' must be one of good, gain"),
        ({**good, "embedding_dim": 7}, "'embedding_dim' 7 does not match"),
        ({**good, "signal_features": ["mean_logprob"]}, "'signal_features' must be"),
    ]
    for entry, msg in cases:
        with pytest.raises(ValueError, match=msg):
            StackedScorer.from_dict(entry)
    doc = RouterFile(stacked=StackedScorer.from_dict(good)).to_dict()
    doc["stacked"]["w"] = [1.0, float("nan"), 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match=r"router file: stacked entry: 'w' must be a non-empty list of finite"):
        RouterFile.from_dict(doc)
    doc["stacked_threshold"] = 2
    with pytest.raises(ValueError, match=r"stacked_threshold must be a number in \[0, 1\]"):
        RouterFile.from_dict(doc)
    with pytest.raises(ValueError, match="'target' must be one of"):
        EmbeddingScorer.from_dict({"w": [1.0], "b": 0.0, "target": "x"})
    with pytest.raises(ValueError, match="expects a 2-dim embedding, got 3"):
        StackedScorer.from_dict(good)(np.zeros(3), sig(-1.0))


# ------------------------------------------------------------------------------------------------------------
# CLI


def test_cli_calibrate_stacked_gain(tmp_path, capsys):
    from pet.cli.main import main

    data = tmp_path / "labelled.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in synthetic_records()) + "\n")
    out = tmp_path / "router.yaml"
    assert main(["router", "calibrate", "--data", str(data), "--cloud-budget", "0.3", "--target", "gain",
                 "--policy", "stacked", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "stacked" in text and "target gain" in text and "cross-validated" in text
    fitted = RouterFile.load(out)
    assert fitted.policy == "stacked" and fitted.stacked.target == "gain" and fitted.pregen.target == "gain"
    assert fitted.info["stacked_on_calibration"]["cloud_share"] <= 0.3
    out2 = tmp_path / "r2.yaml"
    assert main(["router", "calibrate", "--data", str(data), "--policy", "stacked", "--no-pregen",
                 "--out", str(out2)]) == 2
    assert "--policy stacked needs the query embedding model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["router", "calibrate", "--data", str(data), "--target", "best", "--out", str(out2)])
    assert not out2.exists()
