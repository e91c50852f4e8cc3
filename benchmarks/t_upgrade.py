"""T absorbs the experts: held-out perplexity of base T, each expert alone, and T merged by each method.

    python benchmarks/t_upgrade.py                            # python + chitchat, 32 texts per set, 4 methods
    python benchmarks/t_upgrade.py --samples 12 --methods ties,svd

For every merge method of ``pet traditional upgrade`` (peft ``add_weighted_adapter``: linear, ties, dare_ties, svd;
weights 1 each, density ``traditional.upgrade.density``) the registered experts are merged into the base T with
:func:`pet.traditional.upgrade.merge_experts` and scored on each domain's held-out text (the registration's own
held-out split, rebuilt by :mod:`pet.expert.absorb`) and on general text (the general QA pairs, answers scored).
Base T and each expert alone (base + its adapter) are scored on the same texts. Each set holds at most
``--samples`` texts (a seeded sample; 32 is the experts' whole held-out split and a 32-pair sample of the 300
general pairs; about 5 minutes on 2 cores). The gate column applies the default gate
(:func:`pet.traditional.upgrade.gate`) to each merged model. Nothing is written under models/.
Writes benchmarks/results/t_upgrade.{json,md,png}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, pyplot, save_results, utc_now  # noqa: E402
from pet.config.loader import load_config  # noqa: E402
from pet.config.schema.tiers import MergeMethod  # noqa: E402
from pet.expert.absorb import heldout_sets  # noqa: E402
from pet.expert.registry import ExpertRegistry  # noqa: E402
from pet.machine import machine_info  # noqa: E402
from pet.traditional.upgrade import ExpertSource, gate, merge_experts, score_sets  # noqa: E402
from pet.traditional.versions import in_force  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experts", default="python,chitchat")
    ap.add_argument("--methods", default=",".join(m.value for m in MergeMethod))
    ap.add_argument("--samples", type=int, default=32, help="held-out texts per set (default 32)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--config", default=None)
    ap.add_argument("--out", default=str(RESULTS / "t_upgrade"))
    args = ap.parse_args()
    methods = [MergeMethod(m.strip()) for m in args.methods.split(",") if m.strip()]
    names = [n.strip() for n in args.experts.split(",") if n.strip()]

    from pet.models.lora import load_base

    t_start = time.perf_counter()
    cfg = load_config(args.config)
    ucfg = cfg.traditional.upgrade.updated(eval_samples=args.samples)
    cfg = cfg.model_copy(update={"traditional": cfg.traditional.updated(upgrade=ucfg.model_dump())})
    reg = ExpertRegistry.from_config(cfg)
    records = [reg.get(n) for n in names]
    experts = [ExpertSource(r.name, reg.adapter_dir(r.name), r.fingerprint, "") for r in records]
    t = in_force(cfg)
    log = lambda m: print(f"  {m}", flush=True)  # noqa: E731

    model, tok = load_base(t.path, args.threads)
    sets = heldout_sets(records, cfg, tok)
    rows = [{"model": "base T", **score_sets(model, tok, sets, ucfg.max_seq_len, log, "base T")}]
    for e in experts:
        from peft import PeftModel

        pm = PeftModel.from_pretrained(load_base(t.path, args.threads)[0], str(e.adapter_dir))
        rows.append({"model": f"expert {e.name}", **score_sets(pm, tok, sets, ucfg.max_seq_len, log, e.name)})
    for m in methods:
        t0 = time.perf_counter()
        merged = merge_experts(load_base(t.path, args.threads)[0], experts, [1.0] * len(experts), m, ucfg.density)
        merge_s = time.perf_counter() - t0
        scores = score_sets(merged, tok, sets, ucfg.max_seq_len, log, f"merged {m.value}")
        _, failures = gate({k: rows[0][k] for k in sets}, scores, ucfg)
        rows.append({"model": f"merged {m.value}", **scores, "merge_s": round(merge_s, 2),
                     "gate": "refused" if failures else "accepted", "failures": failures})
        del merged

    result = {"created": utc_now(), "machine": machine_info(torch_threads=args.threads), "t": t.name,
              "experts": names, "sets": list(sets), "samples_per_set": args.samples, "max_seq_len": ucfg.max_seq_len,
              "density": ucfg.density, "max_general_loss": ucfg.max_general_loss, "rows": rows,
              "seconds": round(time.perf_counter() - t_start, 1)}
    md = markdown(result)
    print(md)
    save_results(args.out, result, md, lambda p: plot(result, p))
    return 0


def markdown(result: dict) -> str:
    """The table: perplexity per held-out set and model, change against base T, merge time and gate."""
    sets, base = result["sets"], result["rows"][0]
    head = "| model | " + " | ".join(f"{s} ppl" for s in sets) + " | merge s | gate |"
    lines = [head, "|" + "---|" * (len(sets) + 3)]
    for r in result["rows"]:
        cells = [f"{r[s]:.3f} ({r[s] / base[s] - 1:+.1%})" if r is not base else f"{r[s]:.3f}" for s in sets]
        lines.append(f"| {r['model']} | " + " | ".join(cells) + f" | {r.get('merge_s', '')} | {r.get('gate', '')} |")
    m = result["machine"]
    lines.append(f"\n{result['samples_per_set']} held-out texts per set (<= {result['max_seq_len']} tokens), "
                 f"T = {result['t']}; {m['cpu']}, {m['nproc']} cores, load {m['load_avg_1m']}; "
                 f"total {result['seconds']} s.")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """Grouped bars: perplexity relative to base T per held-out set, one group per model."""
    plt = pyplot()
    sets, rows = result["sets"], result["rows"]
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(sets)
    for i, s in enumerate(sets):
        ax.bar([j + i * width for j in range(len(rows))], [r[s] / rows[0][s] for r in rows], width, label=s)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.axhline(1.0 + result["max_general_loss"], color="grey", ls="--", lw=0.8, label="general-loss margin")
    ax.set_xticks([j + width * (len(sets) - 1) / 2 for j in range(len(rows))], [r["model"] for r in rows],
                  rotation=20, ha="right")
    ax.set_ylabel("held-out perplexity / base T")
    ax.set_title(f"T absorbs the experts ({', '.join(result['experts'])}): lower is better")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
