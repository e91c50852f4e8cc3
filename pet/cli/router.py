"""``pet router label`` makes labelled data from your own queries; ``pet router calibrate`` fits the router's
calibrators and thresholds from it.

    pet router label --queries my_queries.txt --out labelled.jsonl     # P, E and T answer each query, locally
    pet router calibrate --data LABELLED.jsonl --cloud-budget 0.3 --out router.yaml
    pet router calibrate --data LABELLED.jsonl --target-quality 0.95 --out router.yaml --calibrator logistic
    pet router calibrate --data LABELLED.jsonl --cloud-budget 0.4 --target gain --policy stacked --out router.yaml

Then set ``router.calibration: router.yaml`` in the deployment YAML. The labelled format and how "good
enough" is labelled are described in :mod:`pet.router.label`, :mod:`pet.router.fit` and docs/router.md.
"""

from __future__ import annotations

import argparse

from pet.cli import CLIError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``router`` command group."""
    p = sub.add_parser("router", help="fit and inspect the P -> E -> T router")
    rs = p.add_subparsers(dest="router_command", metavar="ACTION", required=True)
    lab = rs.add_parser("label", help="answer your own queries with P, E and T (locally) into labelled JSONL")
    lab.add_argument("--queries", required=True,
                     help="one query per line, or JSONL with 'query' and optional 'reference' (and 'id')")
    lab.add_argument("--out", required=True, help="labelled JSONL to write (the input of `pet router calibrate`)")
    lab.add_argument("--config", default=None, help="deployment YAML: P's bundle, T's model, the experts")
    lab.add_argument("--bundle", default=None, help="device bundle folder for P (default: personal.bundle)")
    lab.add_argument("--runtime", default=None, choices=["ort", "genai"], help="P's runtime (default ort)")
    lab.add_argument("--max-new-tokens", type=int, default=None,
                     help="tokens each tier may write (default: personal.generation.max_new_tokens)")
    lab.add_argument("--batch", type=int, default=8, help="queries per generation batch")
    lab.set_defaults(func=_label)
    c = rs.add_parser("calibrate", help="fit calibrators and thresholds from labelled JSONL")
    c.add_argument("--data", required=True, help="labelled JSONL (query, reference, p/e/t answers with signals)")
    goal = c.add_mutually_exclusive_group()
    goal.add_argument("--cloud-budget", type=float, default=None,
                      help="largest share of queries that may leave the device (default 0.3)")
    goal.add_argument("--target-quality", type=float, default=None,
                      help="fraction of always-T quality to reach with the fewest queries leaving the device")
    c.add_argument("--budget-confidence", type=float, default=None,
                   help="with --cloud-budget: pick the threshold so that new queries stay within the budget with "
                        "this probability (exact binomial bound, e.g. 0.9); default: the calibration quantile")
    c.add_argument("--out", required=True, help="router YAML to write (atomically)")
    c.add_argument("--calibrator", default="isotonic", help="isotonic | logistic | geomean")
    c.add_argument("--label", default="reference", choices=["reference", "agreement"],
                   help="good enough = ROUGE-L vs reference within --margin of T's, or agreement with T >= --tau")
    c.add_argument("--margin", type=float, default=0.05)
    c.add_argument("--tau", type=float, default=0.5)
    c.add_argument("--policy", default="cascade", help="policy written into the file (cascade | pregen | stacked)")
    c.add_argument("--target", default="good", choices=["good", "gain"],
                   help="what the pregen and stacked models learn: good = logistic on the good-enough label; "
                        "gain = ridge on the quality escalating would add (q_cloud - q_p); L2 cross-validated "
                        "for gain, fixed 1.0 for the good pregen model (default good)")
    c.add_argument("--for-default-p", action="store_true",
                   help="record the default P's recipe in the file (the data must hold answers of that bundle); "
                        "how the shipped router.calibration: default is made")
    c.add_argument("--config", default=None,
                   help="deployment YAML (the embedding model; with --for-default-p: the models folder)")
    c.add_argument("--no-pregen", action="store_true",
                   help="do not fit the embedding models (pregen and stacked; no MiniLM needed)")
    c.set_defaults(func=_calibrate)


def _label(args: argparse.Namespace) -> int:
    from pet.calibration import label_file
    from pet.config.loader import load_config
    from pet.personal.runtime import BundleError

    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise CLIError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.batch < 1:
        raise CLIError(f"--batch must be >= 1, got {args.batch}")
    cfg = load_config(args.config)
    try:
        records = label_file(args.queries, args.out, cfg, bundle=args.bundle, runtime=args.runtime,
                             max_new_tokens=args.max_new_tokens, batch=args.batch,
                             log=lambda m: print(m, flush=True))
    except (ValueError, BundleError) as err:
        raise CLIError(str(err)) from None
    with_ref = sum(bool(r.get("reference")) for r in records)
    label = "reference" if with_ref == len(records) else "agreement"
    print(f"labelled {len(records)} queries ({sum('e' in r for r in records)} with an expert answer, {with_ref} "
          f"with a reference); wrote {args.out}")
    print(f"next: pet router calibrate --data {args.out} --label {label} --cloud-budget 0.3 --out router.yaml")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from pet.calibration import fit_router_file
    from pet.config.loader import load_config
    from pet.router.calibrate import CALIBRATORS
    from pet.router.policy import POLICIES

    if args.calibrator not in CALIBRATORS:
        raise CLIError(f"--calibrator must be one of {', '.join(sorted(CALIBRATORS))}")
    if args.policy not in POLICIES:
        raise CLIError(f"--policy must be one of {', '.join(sorted(POLICIES))}")
    budget = args.cloud_budget if args.target_quality is None else None
    if budget is None and args.target_quality is None:
        budget = 0.3
    for name, v in (("--cloud-budget", budget), ("--target-quality", args.target_quality)):
        if v is not None and not 0 <= v <= 1:
            raise CLIError(f"{name} must be in [0, 1], got {v}")
    if args.budget_confidence is not None:
        if budget is None:
            raise CLIError("--budget-confidence applies to --cloud-budget, not --target-quality")
        if not 0 < args.budget_confidence < 1:
            raise CLIError(f"--budget-confidence must be in (0, 1), got {args.budget_confidence}")
    if args.policy in ("pregen", "stacked") and args.no_pregen:
        raise CLIError(f"--policy {args.policy} needs the query embedding model; drop --no-pregen")
    cfg = load_config(args.config)
    try:
        fitted = fit_router_file(args.data, cfg, embed=not args.no_pregen, for_default_p=args.for_default_p,
                                 log=lambda m: print(m, flush=True), cloud_budget=budget,
                                 target_quality=args.target_quality, calibrator=args.calibrator, label=args.label,
                                 margin=args.margin, tau=args.tau, policy=args.policy,
                                 budget_confidence=args.budget_confidence, target=args.target,
                                 pregen_l2=1.0 if args.target == "good" else None)
    except ValueError as err:
        raise CLIError(str(err)) from None
    out = fitted.save(args.out)
    info = fitted.info
    print(f"fitted on {info['records']} records ({info['records_with_expert']} with an expert answer); "
          f"label={info['label']}, P good-enough rate {info['good_p_rate']:.2f}")
    q = info["quality_always"]
    print(f"always-P {q['p']:.3f}  always-E {q['e']:.3f}  always-T {q['t']:.3f}  (mean ROUGE-L)")
    print(f"{'policy':<8} {'threshold':>9} {'cloud share':>11} {'quality':>8} {'% of T':>7}")
    rows = [("cascade", fitted.p_threshold, info["cascade_on_calibration"])]
    if "pregen_on_calibration" in info:
        rows.append(("pregen", fitted.pregen_threshold, info["pregen_on_calibration"]))
    if "stacked_on_calibration" in info:
        rows.append(("stacked", fitted.stacked_threshold, info["stacked_on_calibration"]))
    for name, thr, s in rows:
        pct = 100 * s["quality"] / q["t"] if q["t"] > 0 else float("nan")
        print(f"{name:<8} {thr:>9.3f} {s['cloud_share']:>11.2f} {s['quality']:>8.3f} {pct:>6.1f}%")
    print(f"E threshold {fitted.e_threshold:.3f}")
    if "target" in info:
        cv = ", ".join(f"{k} L2 {v['l2']:g}" for k, v in info["cross_validation"].items())
        print(f"embedding models trained on target {info['target']}"
              + (f" (cross-validated: {cv}; thresholds on out-of-fold scores)" if cv else ""))
    print(f"wrote {out}; set router.calibration: {out} in your deployment YAML")
    return 0
