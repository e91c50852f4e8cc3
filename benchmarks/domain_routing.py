"""How well does the MiniLM domain classifier route queries to the registered expert domains?

    python benchmarks/domain_routing.py [--registry DIR] [--floors 0.2,0.25,...] [--k 5]

Domains: the two default recipes, ``python`` (pydoc text) and ``chitchat`` (chitchat-dataset). Exemplar
sources compared side by side: ``examples`` (MiniLM embeddings of the recipe's example queries), ``data``
(snippets sampled from the training data), ``both`` (their union, what ``pet expert register --examples``
stores), and ``registry`` (the exemplars actually registered, when both domains are registered).

Held-out queries (never in the data or the exemplars):
- python: docstring questions about stdlib modules that are not in the data, plus natural questions written
  here;
- chitchat: turns of conversations that are not in the data;
- general: general-knowledge questions written here, whose right answer is "none" (go to T).

For each method (nearest centroid, k-NN with k=1 and k, centroid relative to the domain's spread) and floor
it reports per-set accuracy (in-domain: the right domain; general: None), the none-rate, and the macro
accuracy; writes
``benchmarks/results/domain_routing.json``, ``.md`` and ``.png`` (accuracy vs floor).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, pyplot, save_results  # noqa: E402
from pet.expert.data import load_domain_data, sample_queries  # noqa: E402
from pet.expert.recipes import get_recipe  # noqa: E402
from pet.expert.registry import ExpertRegistry  # noqa: E402
from pet.machine import machine_info  # noqa: E402
from pet.router.domains import DomainClassifier  # noqa: E402

DOMAINS = ("python", "chitchat")

PYTHON_NATURAL = [
    "How do I read a CSV file into a list of dictionaries in Python?",
    "What is the difference between a list and a tuple in Python?",
    "How can I sort a dictionary by its values?",
    "How do I run a shell command from a Python script and capture its output?",
    "Why does my Python function modify the default list argument between calls?",
    "How do I parse command line arguments in a Python program?",
    "How do I format a datetime as an ISO 8601 string in Python?",
    "What does the yield keyword do in a Python function?",
    "How do I merge two dictionaries in Python 3?",
    "How do I write a context manager with the with statement?",
    "How can I remove duplicates from a list while keeping the order?",
    "How do I compile a regular expression and find all matches in a string?",
    "How do I create a temporary directory that is deleted automatically?",
    "What is a dataclass and when should I use one?",
    "How do I log messages to a file with the logging module?",
    "How do I iterate over two lists at the same time in Python?",
    "How do I serialise a Python object to JSON?",
    "How do I measure how long a piece of Python code takes to run?",
    "What is the difference between deepcopy and copy?",
    "How do I get the file extension from a path with pathlib?",
]
GENERAL = [
    "Who painted the Mona Lisa?", "What is the capital of Australia?", "How far is the Moon from the Earth?",
    "When did the Second World War end?", "What causes the seasons on Earth?", "Who wrote Pride and Prejudice?",
    "What is photosynthesis?", "How many bones are in the adult human body?", "What is the tallest mountain "
    "in Africa?", "Why is the sky blue?", "What is the boiling point of water at sea level in Fahrenheit?",
    "Who was the first person to walk on the Moon?", "What is the largest ocean on Earth?",
    "How does a vaccine train the immune system?", "What is inflation in economics?",
    "What language is spoken in Brazil?", "How many players are on a football team?",
    "What is the speed of light?", "Who discovered penicillin?", "What is the chemical symbol for gold?",
    "What is the population of Japan?", "How do tides work?", "What is the Pythagorean theorem?",
    "Which planet is known as the red planet?", "What is the currency of Switzerland?",
    "Who composed the Four Seasons?", "What is the longest river in Europe?", "How do bees make honey?",
    "What year did the Berlin Wall fall?", "What is a black hole?", "How is glass made?",
    "What does DNA stand for?", "Which country has the most time zones?", "What is the Great Barrier Reef?",
    "How do airplanes stay in the air?", "What is the smallest prime number?", "Who invented the telephone?",
    "What are the three branches of the US government?", "What is the freezing point of salt water?",
    "What is the main ingredient of guacamole?",
]


def exemplar_sets(emb, registry: ExpertRegistry | None, tmp: Path) -> tuple[dict, dict]:
    """{source: {domain: [n, 384]}} for sources 'examples' and 'data', and where each came from."""
    sets: dict[str, dict[str, np.ndarray]] = {"examples": {}, "data": {}}
    origin = {}
    for d in DOMAINS:
        recipe = get_recipe(d)
        sets["examples"][d] = emb.encode(recipe.examples(64))
        out = recipe.write(tmp / f"{d}{recipe.suffix}")
        dd = load_domain_data(out.data_path)
        sets["data"][d] = emb.encode(sample_queries(dd.samples, 64, seed=0))
        if registry is not None and d in registry.names():
            rec = registry.get(d)
            src = rec.manifest.get("exemplar_source")
            origin[d] = f"{registry.root / d} ({rec.exemplar_count} exemplars from {src})"
            sets.setdefault("registry", {})[d] = registry.exemplars(d)
    if set(sets.get("registry", {})) != set(DOMAINS):
        sets.pop("registry", None)  # only compare a registry that holds both domains
    return sets, origin


def evaluate(clf: DomainClassifier, vecs: dict[str, np.ndarray]) -> dict:
    """Per-set accuracy and none-rate of one classifier."""
    out = {}
    for name, vs in vecs.items():
        preds = [clf.classify_embedding(v)[0] for v in vs]
        truth = None if name == "general" else name
        out[name] = {"n": len(preds), "accuracy": float(np.mean([p == truth for p in preds])),
                     "none_rate": float(np.mean([p is None for p in preds])),
                     "confusions": {str(p): preds.count(p) for p in set(preds) if p != truth}}
    out["macro_accuracy"] = float(np.mean([out[n]["accuracy"] for n in vecs]))
    return out


def main() -> int:
    """Run the benchmark; print the table; write JSON, Markdown and PNG."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--registry", default=None, help="expert registry (default: <models_dir>/experts)")
    ap.add_argument("--floors", default="0.15,0.2,0.25,0.3,0.35,0.4,0.45,0.5,0.55,0.6",
                    help="cosine floors (centroid, knn)")
    ap.add_argument("--rel-floors", default="0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0",
                    help="floors of the relative method (fraction of a domain's typical exemplar similarity)")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--queries", type=int, default=40, help="held-out queries per recipe set")
    args = ap.parse_args()

    import tempfile

    import torch

    from pet.config.loader import load_config
    from pet.models.embed import embedder_from_config
    from pet.paths import models_dir

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    emb = embedder_from_config(load_config(None))  # the configured embedder, as the gateway's classifier
    reg = ExpertRegistry(args.registry or models_dir() / "experts")
    with tempfile.TemporaryDirectory() as tmp:
        sets, origin = exemplar_sets(emb, reg, Path(tmp))
    queries = {
        "python": get_recipe("python").heldout_queries(args.queries) + PYTHON_NATURAL,
        "chitchat": get_recipe("chitchat").heldout_queries(args.queries),
        "general": GENERAL,
    }
    vecs = {k: emb.encode(v) for k, v in queries.items()}
    floors = [float(f) for f in args.floors.split(",")]
    rel_floors = [float(f) for f in args.rel_floors.split(",")]
    methods = {"centroid": ("centroid", 1), "knn1": ("knn", 1), f"knn{args.k}": ("knn", args.k),
               "relative": ("relative", 1)}
    sets["both"] = {d: np.concatenate([sets["examples"][d], sets["data"][d]]) for d in DOMAINS}
    rows = []
    for source, exemplars in sets.items():
        for mname, (method, k) in methods.items():
            for floor in (rel_floors if method == "relative" else floors):
                clf = DomainClassifier(exemplars, emb, floor=floor, method=method, k=k)
                r = evaluate(clf, vecs)
                rows.append({"source": source, "method": mname, "floor": floor, **r})
    seconds = time.perf_counter() - t0

    best = max(rows, key=lambda r: r["macro_accuracy"])
    hdr = ("| exemplars | method | floor | python acc | chitchat acc | general none-rate | macro acc |\n"
           "|---|---|---|---|---|---|---|\n")
    lines = [f"| {r['source']} | {r['method']} | {r['floor']:.2f} | {r['python']['accuracy']:.2f} | "
             f"{r['chitchat']['accuracy']:.2f} | {r['general']['none_rate']:.2f} | {r['macro_accuracy']:.3f} |"
             for r in rows]
    mach = machine_info(torch_threads=1)
    table = hdr + "\n".join(lines)
    summary = (f"Best: exemplars={best['source']} method={best['method']} floor={best['floor']:.2f} "
               f"macro accuracy {best['macro_accuracy']:.3f} (python {best['python']['accuracy']:.2f}, chitchat "
               f"{best['chitchat']['accuracy']:.2f}, general none-rate {best['general']['none_rate']:.2f}). "
               f"Queries: python {len(queries['python'])}, chitchat {len(queries['chitchat'])}, general "
               f"{len(queries['general'])}. {seconds:.1f} s on {mach['nproc']} cores ({mach['cpu']}, load "
               f"{mach['load_avg_1m']}).")
    print(table)
    print(summary)
    result = {"machine": mach, "seconds": seconds, "exemplar_origin": origin, "queries": queries, "rows": rows,
              "best": best}
    save_results(RESULTS / "domain_routing", result, f"# Domain routing\n\n{table}\n\n{summary}",
                 lambda path: plot(rows, list(sets), list(methods), path))
    return 0


def plot(rows: list[dict], sources: list[str], methods: list[str], path: Path) -> None:
    """Macro accuracy against the similarity floor, one panel per exemplar source, one line per method."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(sources), figsize=(5 * len(sources), 4), sharey=True)
    for ax, source in zip(axes, sources, strict=True):
        for mname in methods:
            if mname == "relative":
                continue  # a different floor scale; in the table and JSON
            rs = [r for r in rows if r["source"] == source and r["method"] == mname]
            ax.plot([r["floor"] for r in rs], [r["macro_accuracy"] for r in rs], marker="o", label=mname)
        rs = [r for r in rows if r["source"] == source and r["method"] == "centroid"]
        ax.plot([r["floor"] for r in rs], [r["general"]["none_rate"] for r in rs], "k--",
                label="general none-rate (centroid)")
        ax.set_title(f"exemplars from {source}")
        ax.set_xlabel("similarity floor")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("macro accuracy (python, chitchat, general)")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
