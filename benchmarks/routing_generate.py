"""Phase 1 of the routing benchmark: generate every tier's answer to every labelled query once, and cache it.

    python benchmarks/routing_generate.py [--p auto|bundle:DIR|truncated:K] [--max-new-tokens 40]
    python benchmarks/routing_generate.py --tiers p --part rev --reverse   # a 2nd process from the other end

Writes ``benchmarks/results/routing_gen_<tier>.json`` ({"model": description, "items": {query id: {text,
signals}}}) after every batch, so an interrupted run resumes where it stopped. ``benchmarks/routing.py``
then sweeps thresholds over the cache without generating again. The queries are benchmarks/data/routing_queries.jsonl
(``routing_queries.py`` builds it); answers are stored as ``pet router label`` stores them
(:func:`pet.router.label.answer_record`). The models:

- T: SmolLM2-135M-Instruct (torch, fp32).
- E: the registered expert of the domain the DomainClassifier picks (base + LoRA adapter, loaded as
  ``pet router label`` loads it: :func:`pet.calibration.experts_from_config`); queries with no domain, or every
  query when no expert is registered, reuse T's answer (E's base *is* T's model).
- P: a device bundle (onnxruntime, pet.personal.runtime.DeviceModel) when one exists under models/bundles/;
  otherwise a stand-in: SmolLM2 with some middle layers removed (torch), which is what a distilled student
  starts from.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DATA, RESULTS  # noqa: E402
from pet.calibration import experts_from_config  # noqa: E402
from pet.io import atomic_write_json  # noqa: E402
from pet.router.label import answer_record, read_queries  # noqa: E402

QUERY_SET = DATA / "routing_queries.jsonl"
REVERSE = False


PART = ""  # set by --part: a second process writes its own file, merged by load_generations()


def gen_path(tier: str) -> Path:
    """Cache file of one tier's generations (this process's part)."""
    return RESULTS / f"routing_gen_{tier}{'.' + PART if PART else ''}.json"


def _cache_files(tier: str) -> list[Path]:
    """The tier's main cache file (if any) and every part file written by parallel processes."""
    main = RESULTS / f"routing_gen_{tier}.json"
    return ([main] if main.is_file() else []) + sorted(RESULTS.glob(f"routing_gen_{tier}.*.json"))


def load_generations(tier: str) -> dict:
    """The tier's cache merged with every part file written by parallel processes with the same model."""
    main, parts = RESULTS / f"routing_gen_{tier}.json", _cache_files(tier)[1:]
    merged = json.loads(main.read_text())  # FileNotFoundError names the missing cache
    for part in parts:
        data = json.loads(part.read_text())
        if data.get("model") == merged["model"]:
            merged["items"].update({k: v for k, v in data["items"].items() if k not in merged["items"]})
    return merged


def load_cache(tier: str, model: str) -> dict:
    """The cached generations of a tier (emptied when the model description changed)."""
    p = gen_path(tier)
    if p.is_file():
        data = json.loads(p.read_text())
        if data.get("model") == model:
            return data
        print(f"[{tier}] cache was made with {data.get('model')!r}; regenerating for {model!r}", flush=True)
    return {"model": model, "items": {}}


def _done_elsewhere(tier: str, model_desc: str) -> set[str]:
    """Ids another process (the main file or a part file of the same model) has already answered."""
    ids: set[str] = set()
    for path in _cache_files(tier):
        data = json.loads(path.read_text()) if path != gen_path(tier) else {}
        if data.get("model") == model_desc:
            ids.update(data["items"])
    return ids


def run_batched(tier: str, model_desc: str, generate_batch, queries, batch: int, raw: bool = False) -> dict:
    """Generate for the queries missing from the cache, saving after every batch.

    Before every batch it skips what parallel processes (``--part``, ``--reverse``) have finished meanwhile, so
    two processes working from both ends meet in the middle. ``generate_batch`` returns Generations, or ready
    records when ``raw``.
    """
    cache = load_cache(tier, model_desc)
    t0, made = time.time(), 0
    while True:
        others = _done_elsewhere(tier, model_desc)
        todo = [q for q in queries if q["id"] not in cache["items"] and q["id"] not in others]
        if REVERSE:
            todo.reverse()
        if not todo:
            break
        chunk = todo[:batch]
        for q, g in zip(chunk, generate_batch([q["query"] for q in chunk]), strict=True):
            cache["items"][q["id"]] = g if raw else answer_record(g)
        atomic_write_json(gen_path(tier), cache)
        made += len(chunk)
        print(f"[{tier}] {made} generated, {len(todo) - len(chunk)} to go ({time.time() - t0:.0f} s)", flush=True)
    return cache


def truncated_smollm2(keep_layers: int):
    """SmolLM2 with middle layers removed (first ones and last four kept), as a P stand-in."""
    import torch.nn as nn

    from pet.models.lm import CausalLM
    from pet.models.prepare import builtin_path

    lm = CausalLM.load(builtin_path("smollm2-135m-instruct"), threads=1)
    layers = list(lm.model.model.layers)
    tail = 4
    sel = layers[:keep_layers - tail] + layers[-tail:]
    for i, layer in enumerate(sel):
        layer.self_attn.layer_idx = i  # the KV cache is indexed by position in the stack
    lm.model.model.layers = nn.ModuleList(sel)
    lm.model.config.num_hidden_layers = len(sel)
    return lm


def find_bundle() -> Path | None:
    """The newest complete device bundle under models/bundles/, if any."""
    from pet.paths import models_dir

    root = models_dir() / "bundles"
    found = [p for p in root.glob("*") if not p.name.startswith(".") and (p / "bundle.json").is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def main() -> int:
    """Generate and cache P, T and E answers."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--p", default="auto", help="auto | bundle:DIR | truncated:K (default: a bundle if any)")
    ap.add_argument("--p-cache", default="p", help="cache name of P's answers (routing_gen_<NAME>.json): another "
                    "name keeps a second P (e.g. p-student with --p bundle:models/bundles/p10-int8) beside the first")
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tiers", default="t,p,e", help="which tiers to generate, in order")
    ap.add_argument("--part", default="", help="write a separate part file (to run a second process in parallel)")
    ap.add_argument("--reverse", action="store_true", help="work through the queries from the end")
    ap.add_argument("--queries", type=Path, default=QUERY_SET, help="the query set (JSON Lines)")
    args = ap.parse_args()
    global PART, REVERSE
    PART, REVERSE = args.part, args.reverse

    import torch

    torch.set_num_threads(1)
    from pet.paths import set_offline

    set_offline()
    RESULTS.mkdir(parents=True, exist_ok=True)
    queries = read_queries(args.queries)
    mnt = args.max_new_tokens
    print(f"{len(queries)} queries, max_new_tokens={mnt}", flush=True)
    for tier in args.tiers.split(","):
        if tier == "t":
            from pet.models.lm import CausalLM
            from pet.models.prepare import builtin_path

            lm = CausalLM.load(builtin_path("smollm2-135m-instruct"), threads=1)
            run_batched("t", f"smollm2-135m-instruct fp32 torch mnt={mnt}",
                        lambda ps, lm=lm: lm.generate_batch(ps, max_new_tokens=mnt), queries, args.batch)
            del lm
        elif tier == "p":
            spec = args.p
            if spec == "auto":
                b = find_bundle()
                spec = f"bundle:{b}" if b else "truncated:26"
            if spec.startswith("bundle:"):
                from pet.personal.runtime import DeviceModel

                dm = DeviceModel.load(spec.split(":", 1)[1], num_threads=1)
                desc = f"device bundle {Path(spec.split(':', 1)[1]).name} (onnxruntime) mnt={mnt}"
                run_batched(args.p_cache, desc, lambda ps, dm=dm: [dm.generate(p, max_new_tokens=mnt) for p in ps],
                            queries, args.batch)
            else:
                k = int(spec.split(":", 1)[1])
                lm = truncated_smollm2(k)
                run_batched(args.p_cache, f"smollm2-135m-instruct truncated to {k} of 30 layers (torch) mnt={mnt}",
                            lambda ps, lm=lm: lm.generate_batch(ps, max_new_tokens=mnt), queries, args.batch)
                del lm
        elif tier == "e":
            generate_experts(queries, mnt, args.batch)
    return 0


def generate_experts(queries: list[dict], mnt: int, batch: int) -> None:
    """E answers: each query goes to the expert its domain classifier picks; the rest reuse T's answers."""
    from pet.config.loader import load_config
    from pet.expert.registry import ExpertRegistry

    cfg = load_config(None)
    reg = ExpertRegistry.from_config(cfg)
    names = reg.names()
    experts = experts_from_config(cfg)
    domains = experts.domain_of([q["query"] for q in queries]) if experts else [None] * len(queries)
    # Tag each answer with the expert (and its adapter fingerprint) that wrote it, so registering another
    # domain or replacing an adapter regenerates only the answers that change.
    tags = {n: f"{n}@{reg.get(n).fingerprint[:12]}" for n in names}
    want = {q["id"]: (tags[d] if d else "t") for q, d in zip(queries, domains, strict=True)}
    desc = f"experts over smollm2-135m-instruct mnt={mnt}"
    atomic_write_json(RESULTS / "routing_domains.json",
                      {"experts": names, "domains": {q["id"]: d for q, d in zip(queries, domains, strict=True)}})
    t_items = load_generations("t")["items"]  # the merged T cache, also in a --part process
    cache = load_cache("e", desc)
    cache["items"] = {k: v for k, v in cache["items"].items() if v.get("expert") == want.get(k)}
    for q, d in zip(queries, domains, strict=True):
        if d is None and q["id"] not in cache["items"]:
            cache["items"][q["id"]] = dict(t_items[q["id"]], same_as_t=True, expert="t")
    atomic_write_json(gen_path("e"), cache)
    for name in sorted({d for d in domains if d}):
        mine = [q for q, d in zip(queries, domains, strict=True) if d == name and q["id"] not in cache["items"]]
        if not mine:
            continue
        lm = experts.load(name)

        def gen(ps, lm=lm, tag=tags[name]):
            return [dict(g, expert=tag) for g in map(answer_record, lm.generate_batch(ps, max_new_tokens=mnt))]

        run_batched("e", desc, gen, mine, batch, raw=True)
    print(f"[e] experts: {names or 'none registered'}; {sum(d is not None for d in domains)} queries in a domain")


if __name__ == "__main__":
    raise SystemExit(main())
