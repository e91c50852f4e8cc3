"""Routing benchmark: quality vs share of queries leaving the device, for every router policy.

    python benchmarks/routing_generate.py     # once: generate P, E and T answers (cached, ~15-40 min here)
    python benchmarks/routing.py              # seconds: fit on the calibration half, sweep on the test half

The labelled query set (benchmarks/data/routing_queries.jsonl, built by routing_queries.py: python stdlib docs,
chitchat-dataset conversations, general knowledge) is cut by hash into a calibration half and a test half that
share no query. Routers are fitted on the calibration half only (the same fit as `pet router calibrate`, whose
input is written to benchmarks/results/routing_calibration.jsonl) and scored on the test half:

- quality = mean ROUGE-L F1 of the answer that would be shown against the reference answer;
- cloud share = share of queries that leave the device (escalated to E or T);
- curves over the whole threshold range for cascade (isotonic, logistic), pregen (logistic on the good-enough
  label; and pregen-gain, ridge on the quality gain of escalating), stacked-good / stacked-gain (one linear
  model over the query embedding and P's confidence signals, deciding after P ran), random routing, plus the
  always-P / always-E / always-T points and an oracle (knows which tier is better);
- APGR-style score: area under PGR(share) = (quality - always-P) / (always-T - always-P) over share in [0, 1];
- the operating point fitted for a 40% budget on calibration data (with BUDGET_CONFIDENCE, and the plain
  calibration quantile for comparison), measured on test data with 95% bootstrap intervals;
- how often that fitting procedure meets the goal over N_SPLITS random calibration/test re-splits (the first
  N_ROUTER_SPLITS for every router, with BUDGET_CONFIDENCE; the isotonic cascade also with the exact quantile);
- router decision overhead (policy.decide only; generation and embedding excluded, embedding timed apart).

Writes benchmarks/results/routing.json and routing.png, and prints a table and the machine.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DATA, RESULTS, pyplot, save_results  # noqa: E402
from benchmarks.routing_queries import Query, split  # noqa: E402
from pet.machine import machine_info  # noqa: E402
from pet.router.fit import (  # noqa: E402
    cloud_quality,
    feature_matrix,
    fit_router,
    oracle_at_budget,
    qualities,
    sweep,
)
from pet.router.label import read_queries, write_labelled  # noqa: E402
from pet.router.policy import Action, RouteState, make_policy  # noqa: E402

BUDGET = 0.4
SUFFIX = ""  # output-name suffix of a P variant (--p-cache)
GOAL_QUALITY = 0.95
# Thresholds keep the share of *new* queries leaving within the budget with this probability
# (pet.router.fit.budget_rank); chosen before looking at any test result, not tuned.
BUDGET_CONFIDENCE = 0.9
N_BOOT = 2000  # bootstrap resamples of the test half for confidence intervals
N_SPLITS = 200  # random calibration/test re-splits to measure how often the fitting procedure meets the goal
# Every router is also refitted on the first N_ROUTER_SPLITS of them (the stacked-good fit cross-validates a
# 388-weight logistic model, ~1.5 s per split on one thread, so all 200 would take minutes per P).
N_ROUTER_SPLITS = 50


def load_records(p_cache: str = "p", queries_file: Path = DATA / "routing_queries.jsonl") -> tuple[list[dict], dict]:
    """Join the query set with the cached generations of every tier (P from ``routing_gen_<p_cache>.json``)."""
    queries = [Query(**q) for q in read_queries(queries_file)]
    from benchmarks.routing_generate import load_generations

    gens = {t: load_generations(p_cache if t == "p" else t) for t in ("p", "e", "t")}
    domains = json.loads((RESULTS / "routing_domains.json").read_text())
    records = []
    for q in queries:
        if not all(q.id in gens[t]["items"] for t in ("p", "e", "t")):
            continue
        rec = {"id": q.id, "kind": q.kind, "query": q.query, "reference": q.reference,
               "domain": domains["domains"].get(q.id)}
        for t in ("p", "e", "t"):
            g = gens[t]["items"][q.id]
            rec[t] = {"text": g["text"], "signals": g["signals"]}
            if g.get("same_as_t"):
                rec[t]["same_as_t"] = True
        records.append(rec)
    models = {t: gens[t]["model"] for t in gens}
    models["experts"] = domains["experts"]
    return records, models


def area(points: list[tuple[float, float]]) -> float:
    """Area under a curve of (x, y) points over x in [0, 1]: upper envelope, step-wise linear interpolation."""
    pts = sorted(points)
    xs = np.linspace(0, 1, 201)
    px, py = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    # For each x, the best quality reachable with at most that share (a router may always escalate less).
    env = np.array([py[px <= x + 1e-12].max() if (px <= x + 1e-12).any() else py[0] for x in xs])
    return float(np.trapezoid(env, xs))


def operating_point(cloud: np.ndarray, q_device: np.ndarray, q_cloud: np.ndarray) -> tuple[float, float]:
    """(share leaving, mean quality) when the queries marked in ``cloud`` leave the device."""
    return float(cloud.mean()), float(np.where(cloud, q_cloud, q_device).mean())


def bootstrap_ci(cloud: np.ndarray, q_device: np.ndarray, q_cloud: np.ndarray, q_t: np.ndarray,
                 seed: int = 0) -> dict[str, list[float]]:
    """95% percentile intervals of the share leaving and of the % of always-T, resampling test queries."""
    rng = np.random.default_rng(seed)
    n = len(cloud)
    q_routed = np.where(cloud, q_cloud, q_device)
    idx = rng.integers(0, n, size=(N_BOOT, n))
    share = cloud[idx].mean(1)
    pct = 100 * q_routed[idx].mean(1) / q_t[idx].mean(1)
    return {"share": np.percentile(share, [2.5, 97.5]).tolist(), "pct_of_t": np.percentile(pct, [2.5, 97.5]).tolist()}


def score_test(fitted, test: list[dict]) -> tuple[np.ndarray, np.ndarray, object]:
    """The fitted cascade's calibrated P scores on test records, the cloud's quality there, and the qualities."""
    qs = qualities(test)
    s_e = fitted.e_calibrator.predict(feature_matrix(test, "e"))
    return fitted.p_calibrator.predict(feature_matrix(test, "p")), cloud_quality(s_e, qs, fitted.e_threshold), qs


def router_scores(fit_good, fit_gain, fit_logistic, test: list[dict], emb: dict) -> dict[str, tuple]:
    """Test scores and fitted thresholds of every fitted router: name -> (scores, threshold)."""
    e = np.array([emb[r["id"]] for r in test])
    xp = feature_matrix(test, "p")
    return {
        "cascade-isotonic": (fit_good.p_calibrator.predict(xp), fit_good.p_threshold),
        "cascade-logistic": (fit_logistic.p_calibrator.predict(xp), fit_logistic.p_threshold),
        "pregen": (fit_good.pregen.predict(e), fit_good.pregen_threshold),
        "pregen-gain": (fit_gain.pregen.predict(e), fit_gain.pregen_threshold),
        "stacked-good": (fit_good.stacked.predict(e, xp), fit_good.stacked_threshold),
        "stacked-gain": (fit_gain.stacked.predict(e, xp), fit_gain.stacked_threshold),
    }


def fit_all(cal: list[dict], emb: dict, confidence: float | None) -> tuple:
    """The three fits every router comes from: isotonic + good target (cascade-isotonic, pregen, stacked-good),
    isotonic + gain target (pregen-gain with cross-validated L2, stacked-gain), logistic cascade."""
    e = np.array([emb[r["id"]] for r in cal])
    common = {"cloud_budget": BUDGET, "budget_confidence": confidence}
    return (fit_router(cal, calibrator="isotonic", embeddings=e, **common),
            fit_router(cal, calibrator="isotonic", embeddings=e, target="gain", pregen_l2=None, **common),
            fit_router(cal, calibrator="logistic", **common))


def summarise(share: np.ndarray, pct: np.ndarray) -> dict:
    """Medians, 5-95% ranges and goal rates of re-split outcomes."""
    return {"share_median": float(np.median(share)), "share_p5_p95": np.percentile(share, [5, 95]).tolist(),
            "pct_of_t_median": float(np.median(pct)), "pct_of_t_p5_p95": np.percentile(pct, [5, 95]).tolist(),
            "rate_share_within_budget": float((share <= BUDGET + 1e-12).mean()),
            "rate_quality_goal": float((pct >= 100 * GOAL_QUALITY - 1e-9).mean()),
            "rate_both": float(((share <= BUDGET + 1e-12) & (pct >= 100 * GOAL_QUALITY - 1e-9)).mean())}


def resplit_study(records: list[dict], emb: dict) -> dict:
    """Re-cut all labelled queries into random halves N_SPLITS times; fit every router on one half (with
    BUDGET_CONFIDENCE; the isotonic cascade also with the exact calibration quantile) and measure it on the
    other half.

    This measures the fitting *procedures* (how often their operating points meet the goal on unseen
    queries), not a router to deploy; nothing is chosen from it.
    """
    rng = np.random.default_rng(1)
    confidences = {"exact quantile": None, f"confidence {BUDGET_CONFIDENCE}": BUDGET_CONFIDENCE}
    out = {name: {"share": [], "pct_of_t": []} for name in confidences}
    per_router: dict[str, dict[str, list]] = {}
    min_share = []
    for split_no in range(N_SPLITS):
        perm = rng.permutation(len(records))
        half = len(records) // 2
        cal, test = [records[i] for i in perm[:half]], [records[i] for i in perm[half:]]
        for name, conf in confidences.items():
            fitted = fit_router(cal, cloud_budget=BUDGET, calibrator="isotonic", budget_confidence=conf)
            s_p, q_cloud, qs = score_test(fitted, test)
            share, qual = operating_point(s_p < fitted.p_threshold, qs.q_p, q_cloud)
            out[name]["share"].append(share)
            out[name]["pct_of_t"].append(100 * qual / float(qs.q_t.mean()))
        goal_q = GOAL_QUALITY * qs.q_t.mean()
        min_share.append(min((p["cloud_share"] for p in sweep(s_p, qs.q_p, q_cloud) if p["quality"] >= goal_q),
                             default=1.0))
        if split_no >= N_ROUTER_SPLITS:
            continue
        fit_good, fit_gain, fit_log = fit_all(cal, emb, BUDGET_CONFIDENCE)
        for name, (s, thr) in router_scores(fit_good, fit_gain, fit_log, test, emb).items():
            share, qual = operating_point(s < thr, qs.q_p, q_cloud)
            v = per_router.setdefault(name, {"share": [], "pct_of_t": [], "min_share": []})
            v["share"].append(share)
            v["pct_of_t"].append(100 * qual / float(qs.q_t.mean()))
            v["min_share"].append(min((p["cloud_share"] for p in sweep(s, qs.q_p, q_cloud)
                                       if p["quality"] >= goal_q), default=1.0))
    summary = {"n_splits": N_SPLITS, "calibration_size": len(records) // 2,
               "test_size": len(records) - len(records) // 2, "n_router_splits": min(N_ROUTER_SPLITS, N_SPLITS),
               "fits": {}, "routers": {}}
    for name, v in out.items():
        summary["fits"][name] = summarise(np.array(v["share"]), np.array(v["pct_of_t"]))
    for name, v in per_router.items():
        ms = np.array(v["min_share"])
        summary["routers"][name] = {**summarise(np.array(v["share"]), np.array(v["pct_of_t"])),
                                    "min_share_for_95pct_t_median": float(np.median(ms)),
                                    "rate_95pct_t_reachable_within_budget": float((ms <= BUDGET + 1e-12).mean())}
    summary["min_share_for_95pct_t_median"] = float(np.median(min_share))
    summary["rate_95pct_t_reachable_within_budget"] = float((np.array(min_share) <= BUDGET + 1e-12).mean())
    return summary


def main() -> int:
    """Fit on calibration data, sweep on test data, print and write results."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--p-cache", default="p", help="P's generation cache: routing_gen_<NAME>.json (default p: the "
                    "int8 bundle of T's model; p-student: the distilled student, see routing_generate.py --p-cache)")
    ap.add_argument("--queries", type=Path, default=DATA / "routing_queries.jsonl",
                    help="the query set (default: the 1500-query set; benchmarks/data/routing_queries_500.jsonl is "
                    "the 500-query set of every result before it)")
    ap.add_argument("--tag", default="", help="appended to the output names (routing<_P><_TAG>.json ...)")
    args = ap.parse_args()
    if not args.queries.is_file():
        ap.error(f"--queries {args.queries}: no such file (routing_queries.py writes the query set)")
    global SUFFIX
    SUFFIX = "" if args.p_cache == "p" else "_" + args.p_cache.removeprefix("p-")
    SUFFIX += f"_{args.tag}" if args.tag else ""
    records, models = load_records(args.p_cache, args.queries)
    by_id = {r["id"]: r for r in records}
    cal_q, test_q = split([Query(r["id"], r["kind"], r["query"], r["reference"]) for r in records])
    cal, test = [by_id[q.id] for q in cal_q], [by_id[q.id] for q in test_q]
    write_labelled(cal, RESULTS / f"routing_calibration{SUFFIX}.jsonl")
    print(f"{len(records)} queries with all tiers cached: {len(cal)} calibration, {len(test)} test", flush=True)

    from pet.config.loader import load_config
    from pet.models.embed import embedder_from_config

    emb_model = embedder_from_config(load_config(None))  # the configured embedder, as `pet router calibrate`
    t0 = time.perf_counter()
    emb = {r["id"]: v for r, v in zip(records, emb_model.encode([r["query"] for r in records]), strict=True)}
    embed_ms = 1000 * (time.perf_counter() - t0) / len(records)
    single = []
    for r in records[:30]:
        t = time.perf_counter()
        emb_model.encode([r["query"]])
        single.append(1000 * (time.perf_counter() - t))
    cal_emb = np.array([emb[r["id"]] for r in cal])

    fits = {kind: fit_router(cal, cloud_budget=BUDGET, calibrator=kind, embeddings=cal_emb,
                             budget_confidence=BUDGET_CONFIDENCE, fit_stacked=kind == "isotonic")
            for kind in ("isotonic", "logistic")}
    exact = {kind: fit_router(cal, cloud_budget=BUDGET, calibrator=kind, embeddings=cal_emb,
                              fit_stacked=kind == "isotonic")
             for kind in ("isotonic", "logistic")}  # the plain calibration quantile, for comparison
    # The gain target (pregen with cross-validated L2, stacked), isotonic E judge as in the scoring below.
    fits["gain"], exact["gain"] = (fit_router(cal, cloud_budget=BUDGET, calibrator="isotonic", embeddings=cal_emb,
                                              target="gain", pregen_l2=None, budget_confidence=conf)
                                   for conf in (BUDGET_CONFIDENCE, None))
    fits["isotonic"].save(RESULTS / f"router{SUFFIX}.yaml")

    fitted = fits["isotonic"]
    _, q_cloud, qs = score_test(fitted, test)
    q_p, q_t = float(qs.q_p.mean()), float(qs.q_t.mean())
    fixed = {"always-P": (0.0, q_p), "always-E": (1.0, float(qs.q_e.mean())), "always-T": (1.0, q_t),
             "cloud (E judged -> T)": (1.0, float(q_cloud.mean())),
             "oracle": (float((qs.q_p < q_cloud).mean()), float(np.maximum(qs.q_p, q_cloud).mean())),
             f"oracle within {BUDGET:.0%}": oracle_at_budget(qs.q_p, q_cloud, BUDGET)}

    scores = {}  # router -> (test scores, fitted threshold, exact-quantile threshold)
    for kind, f in ((k, fits[k]) for k in ("isotonic", "logistic")):
        pol = make_policy("cascade", f)
        scores[f"cascade-{kind}"] = (np.array([pol.p_score(r["p"]["signals"]) for r in test]), f.p_threshold,
                                     exact[kind].p_threshold)
    pre = make_policy("pregen", fits["logistic"])
    scores["pregen"] = (np.array([pre.fitted.pregen(emb[r["id"]]) for r in test]), fits["logistic"].pregen_threshold,
                        exact["logistic"].pregen_threshold)
    pre_gain = make_policy("pregen", fits["gain"])
    scores["pregen-gain"] = (np.array([pre_gain.fitted.pregen(emb[r["id"]]) for r in test]),
                             fits["gain"].pregen_threshold, exact["gain"].pregen_threshold)
    stacked = {"stacked-good": (fits["isotonic"], exact["isotonic"]), "stacked-gain": (fits["gain"], exact["gain"])}
    for name, (f, fx) in stacked.items():
        scores[name] = (np.array([f.stacked(emb[r["id"]], r["p"]["signals"]) for r in test]), f.stacked_threshold,
                        fx.stacked_threshold)
    rng = np.random.default_rng(0)
    scores["random"] = (rng.random(len(test)), BUDGET, BUDGET)  # escalates a random 40% at its "fitted" point

    curves, rows = {}, []
    gap = q_t - q_p
    for name, (s, thr, thr_exact) in scores.items():
        pts = sweep(s, qs.q_p, q_cloud)
        curves[name] = [(p["cloud_share"], p["quality"]) for p in pts]
        apgr = (area(curves[name]) - q_p) / gap if abs(gap) > 1e-9 else float("nan")
        share, qual = operating_point(s < thr, qs.q_p, q_cloud)
        share_x, qual_x = operating_point(s < thr_exact, qs.q_p, q_cloud)
        goal_pts = [p for p in pts if p["quality"] >= GOAL_QUALITY * q_t]
        min_share = min((p["cloud_share"] for p in goal_pts), default=None)
        rows.append({"router": name, "apgr": apgr, "fitted_cloud_share": share, "fitted_quality": qual,
                     "fitted_pct_of_t": 100 * qual / q_t if q_t else None,
                     "fitted_ci95": bootstrap_ci(s < thr, qs.q_p, q_cloud, qs.q_t),
                     "exact_quantile_cloud_share": share_x, "exact_quantile_pct_of_t": 100 * qual_x / q_t,
                     "min_share_for_95pct_t_on_test": min_share})

    # Decision overhead: the policy's decide() alone, on the test signals / embeddings (no generation).
    overhead = {}
    iso, logi = make_policy("cascade", fits["isotonic"]), make_policy("cascade", fits["logistic"])
    for name, pol, make_state in (
        ("cascade-isotonic", iso, lambda r: RouteState(p_signals=r["p"]["signals"])),
        ("cascade-logistic", logi, lambda r: RouteState(p_signals=r["p"]["signals"])),
        ("pregen", pre, lambda r: RouteState(embedding=emb[r["id"]])),
        ("pregen-gain", pre_gain, lambda r: RouteState(embedding=emb[r["id"]])),
        ("stacked-good", make_policy("stacked", fits["isotonic"]),
         lambda r: RouteState(embedding=emb[r["id"]], p_signals=r["p"]["signals"])),
        ("stacked-gain", make_policy("stacked", fits["gain"]),
         lambda r: RouteState(embedding=emb[r["id"]], p_signals=r["p"]["signals"])),
        ("expert-judge (cloud)", iso, lambda r: RouteState(e_signals=r["e"]["signals"])),
    ):
        states = [make_state(r) for r in test] * 20
        times = []
        for st in states:
            t = time.perf_counter()
            d = pol.decide(st)
            times.append(1e6 * (time.perf_counter() - t))
            assert d.action in Action
        overhead[name] = {"median_us": statistics.median(times), "p99_us": float(np.percentile(times, 99))}
    overhead["minilm_embedding_single_query_ms_median"] = statistics.median(single)
    overhead["minilm_embedding_batched_ms_per_query"] = embed_ms

    per_kind = {}
    for kind in sorted({r["kind"] for r in test}):
        m = np.array([r["kind"] == kind for r in test])
        per_kind[kind] = {"n": int(m.sum()), "p": float(qs.q_p[m].mean()), "e": float(qs.q_e[m].mean()),
                          "t": float(qs.q_t[m].mean()), "p_good_enough_rate": float(qs.good_p[m].mean()),
                          "with_expert": int(qs.has_e[m].sum())}

    print(f"re-splitting {len(records)} queries {N_SPLITS} times ...", flush=True)
    out = {"machine": machine_info(threads=1), "models": models, "n_calibration": len(cal), "n_test": len(test),
           "budget": BUDGET, "budget_confidence": BUDGET_CONFIDENCE,
           "goal": f">= {GOAL_QUALITY:.0%} of always-T quality with <= {BUDGET:.0%} leaving",
           "resplits": resplit_study(records, emb),
           "always_p_pct_of_t_ci95": bootstrap_ci(np.zeros(len(test), bool), qs.q_p, q_cloud, qs.q_t)["pct_of_t"],
           "fixed_points": fixed, "routers": rows, "per_kind": per_kind, "overhead": overhead,
           "thresholds": {k: {"p": f.p_threshold, "e": f.e_threshold, "pregen": f.pregen_threshold,
                              "stacked": f.stacked_threshold if f.stacked else None} for k, f in fits.items()},
           "calibration_info": {k: f.info for k, f in fits.items()}, "curves": curves}
    report(out)
    save_results(RESULTS / f"routing{SUFFIX}", out, plot=lambda path: plot(out, path))
    return 0


def resplit_line(name: str, v: dict) -> str:
    """One line of the re-split summary."""
    return (f"  {name:<16} share median {v['share_median']:.2f} (5-95% {v['share_p5_p95'][0]:.2f}-"
            f"{v['share_p5_p95'][1]:.2f}), % of T median {v['pct_of_t_median']:.1f}; within budget "
            f"{v['rate_share_within_budget']:.0%}, >= 95% of T {v['rate_quality_goal']:.0%}, "
            f"both {v['rate_both']:.0%}")


def report(out: dict) -> None:
    """Print the tables."""
    m = out["machine"]
    print(f"\nmachine: {m['nproc']} cores, {m['cpu']}, 1 thread, load {m['load_avg_1m']:.1f} (shared; noisy)")
    for t in ("p", "e", "t"):
        print(f"  {t.upper()}: {out['models'][t]}")
    print(f"  experts registered: {out['models']['experts'] or 'none'}")
    print(f"calibration {out['n_calibration']} / test {out['n_test']} queries; quality = mean ROUGE-L vs reference")
    print(f"\n{'fixed point':<24} {'cloud share':>11} {'quality':>8} {'% of T':>7}")
    for name, (share, q) in out["fixed_points"].items():
        print(f"{name:<24} {share:>11.2f} {q:>8.3f} {100 * q / out['fixed_points']['always-T'][1]:>6.1f}%")
    lo, hi = out["always_p_pct_of_t_ci95"]
    t = out["fixed_points"]["always-T"][1]
    print(f"always-P is {100 * out['fixed_points']['always-P'][1] / t:.1f}% of always-T (95% CI {lo:.1f}-{hi:.1f}%)")
    print(f"\nthresholds fitted for a {out['budget']:.0%} budget at confidence {out['budget_confidence']} "
          "(exact calibration quantile in brackets); 95% bootstrap intervals over test queries")
    print(f"{'router':<18} {'APGR':>6} {'share@fit':>20} {'% of T':>22} {'exact q.':>14} {'min share 95% T':>16}")
    for r in out["routers"]:
        ms = "-" if r["min_share_for_95pct_t_on_test"] is None else f"{r['min_share_for_95pct_t_on_test']:.2f}"
        ci = r["fitted_ci95"]
        print(f"{r['router']:<18} {r['apgr']:>6.3f} {r['fitted_cloud_share']:>6.2f} [{ci['share'][0]:.2f}, "
              f"{ci['share'][1]:.2f}] {r['fitted_pct_of_t']:>7.1f}% "
              f"[{ci['pct_of_t'][0]:.1f}, {ci['pct_of_t'][1]:.1f}] "
              f"({r['exact_quantile_cloud_share']:.2f}, {r['exact_quantile_pct_of_t']:.1f}%) {ms:>16}")
    rs = out["resplits"]
    print(f"\nisotonic cascade over {rs['n_splits']} random {rs['calibration_size']}/{rs['test_size']} re-splits "
          f"(median min share for 95% of T on the test half {rs['min_share_for_95pct_t_median']:.2f}; reachable "
          f"within the budget in {rs['rate_95pct_t_reachable_within_budget']:.0%}):")
    for name, v in rs["fits"].items():
        print(resplit_line(name, v))
    print(f"every router with confidence {out['budget_confidence']} over the first {rs.get('n_router_splits')} "
          "of these re-splits:")
    for name, v in rs.get("routers", {}).items():
        print(resplit_line(name, v) + f"; min share for 95% median {v['min_share_for_95pct_t_median']:.2f}")
    print(f"\n{'kind':<10} {'n':>4} {'P':>6} {'E':>6} {'T':>6} {'P good':>7} {'w/ expert':>9}")
    for k, v in out["per_kind"].items():
        print(f"{k:<10} {v['n']:>4} {v['p']:>6.3f} {v['e']:>6.3f} {v['t']:>6.3f} {v['p_good_enough_rate']:>7.2f} "
              f"{v['with_expert']:>9}")
    print("\ndecision overhead (policy.decide only):")
    for k, v in out["overhead"].items():
        if isinstance(v, dict):
            print(f"  {k:<22} median {v['median_us']:.1f} us, p99 {v['p99_us']:.1f} us")
        else:
            print(f"  {k:<44} {v:.2f} ms")


def plot(out: dict, path: Path) -> None:
    """Quality vs cloud share, one curve per router, fixed points as markers."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, pts in out["curves"].items():
        xs, ys = zip(*sorted(pts), strict=True)
        ax.step(xs, ys, where="post", label=name, linestyle="--" if name == "random" else "-")
    for name, (x, y) in out["fixed_points"].items():
        ax.plot([x], [y], "o", label=name)
    t = out["fixed_points"]["always-T"][1]
    ax.axhline(GOAL_QUALITY * t, color="grey", lw=0.8, ls=":", label="95% of always-T")
    ax.axvline(BUDGET, color="grey", lw=0.8, ls="-.", label="40% budget")
    ax.set_xlabel("share of queries leaving the device")
    ax.set_ylabel("quality (mean ROUGE-L vs reference)")
    ax.set_title(f"routing on {out['n_test']} held-out queries")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
