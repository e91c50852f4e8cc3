"""Questioner-aware answers on chitchat-dataset: does T predict the partner's real reply better from a profile?

    python benchmarks/questioner.py                         # trains the encoder, then scores (~30 min, one core)
    python benchmarks/questioner.py --encoder DIR           # score an encoder from `pet questioner train`

Questioners (senders with >= 8 conversations) are split by a seeded shuffle into train and held-out sets; no
held-out questioner is seen in training (checked against the encoder's manifest). Each questioner's profile comes
from the earlier half of their conversations (their own messages, as their device store would hold them); the
scored dialogues come from the later half: the questioner's turn (with ``questioner.train.context_turns`` earlier
turns, 0 by default) and the partner's real reply. For up to ``--per-questioner`` dialogues of every held-out
questioner, T (frozen) scores the reply teacher-forced with:

- ``none``: today's prompt; ``in_context`` / ``in_context_wrong``: exemplars of the questioner (or of another
  held-out questioner) in a system message; ``learned`` / ``learned_wrong``: the encoder's soft prompt from the
  questioner's (or the other's) profile; ``learned_mean``: from the mean training profile (the encoder's domain
  adaptation alone). The wrong questioner is a seeded derangement of the held-out set.

Judging rule (fixed before the first run): per held-out questioner, perplexity = exp(summed reply NLL / reply
tokens) over their scored dialogues. A questioner is *improved* when learned < none, and *contrast-correct* when
learned < learned_wrong (strictly). The goal holds when both shares are >= 0.70. Means and shares get 95 %
percentile intervals from 1000 bootstrap resamples of questioners. ROUGE-L (rouge-score, as LaMP) of greedy
``--max-new-tokens`` (24) answers is measured on the first ``--rouge-per-questioner`` dialogues of each held-out
questioner.
Writes benchmarks/results/questioner.{json,md}.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, ROOT, save_results, utc_now  # noqa: E402
from pet.config.loader import load_config  # noqa: E402
from pet.machine import machine_info  # noqa: E402
from pet.questioner.condition import in_context_messages  # noqa: E402
from pet.questioner.profile import make_profile, unit  # noqa: E402
from pet.questioner.score import encode_row, reply_nll  # noqa: E402
from pet.questioner.train import (  # noqa: E402
    examples_for,
    pick_dialogues,
    prepare,
    profile_for,
    train_encoder,
)

VARIANTS = ("none", "in_context", "in_context_wrong", "learned", "learned_wrong", "learned_mean")
IN_CONTEXT_EXTRA_TOKENS = 192  # room for the exemplars' system message on top of max_prompt_tokens


def stage(what: str, t0: float) -> None:
    print(f"[{time.perf_counter() - t0:7.1f}s] {what}", flush=True)


def derangement(ids: list[str], seed: int) -> dict[str, str]:
    """Each held-out questioner -> another one (a seeded shuffle, then each to the next: no fixed point)."""
    order = list(ids)
    np.random.default_rng(seed).shuffle(order)
    return {order[i]: order[(i + 1) % len(order)] for i in range(len(order))}


def bootstrap(values: np.ndarray, stat, n: int = 1000, seed: int = 0) -> list[float]:
    """95 % percentile interval of ``stat`` over resamples of the rows of ``values``."""
    rng = np.random.default_rng(seed)
    stats = [stat(values[rng.integers(0, len(values), len(values))]) for _ in range(n)]
    return [float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))]


def held_items(lm, qcfg, prep, embedder, cache, wrong, per_q, seed):
    """Held-out dialogues with their rows (plain and with right / wrong exemplars) and right / wrong profiles."""
    tc = qcfg.train
    k, chars = qcfg.exemplars, qcfg.max_exemplar_chars
    items = []
    for qid in prep.heldout_ids:
        for ex in examples_for(pick_dialogues(prep.profiled[qid].q, per_q, seed), embedder, cache):
            d = ex.dialogue
            right = profile_for(prep.profiled[qid], d.query, ex.query_vec, k, chars)
            other = profile_for(prep.profiled[wrong[qid]], d.query, ex.query_vec, k, chars)
            row = encode_row(lm, d.messages(), d.reply, tc.max_prompt_tokens, tc.max_reply_tokens)
            if not row.reply:
                continue
            ic = [encode_row(lm, in_context_messages(d.messages(), p), d.reply,
                             tc.max_prompt_tokens + IN_CONTEXT_EXTRA_TOKENS, tc.max_reply_tokens)
                  for p in (right, other)]
            items.append({"q": qid, "dialogue": d, "row": row, "ic": ic[0], "ic_wrong": ic[1], "right": right,
                          "wrong": other})
    return items


def score_variants(lm, items, held, encoder, mean_profile, t0, bs=8):
    """Per variant and held-out questioner: [summed reply NLL, reply tokens]."""
    from pet.questioner.condition import soft_prompts

    sums = {v: {q: [0.0, 0.0] for q in held} for v in VARIANTS}
    for start in range(0, len(items), bs):
        batch = items[start:start + bs]
        plain = [b["row"] for b in batch]
        runs = {"none": (plain, None), "in_context": ([b["ic"] for b in batch], None),
                "in_context_wrong": ([b["ic_wrong"] for b in batch], None),
                "learned": (plain, soft_prompts(encoder, [b["right"] for b in batch])),
                "learned_wrong": (plain, soft_prompts(encoder, [b["wrong"] for b in batch])),
                "learned_mean": (plain, soft_prompts(encoder, [mean_profile] * len(batch)))}
        for v, (rows, soft) in runs.items():
            s, n = reply_nll(lm, rows, soft=soft)
            for b, si, ni in zip(batch, s.tolist(), n.tolist(), strict=True):
                sums[v][b["q"]][0] += si
                sums[v][b["q"]][1] += ni
        if (start // bs) % 5 == 0 or start + bs >= len(items):
            stage(f"scored {min(start + bs, len(items))}/{len(items)} dialogues x {len(VARIANTS)} variants", t0)
    return sums


def rouge_variants(lm, items, per_q, encoder, max_new, t0, bs=8):
    """ROUGE-L of greedy answers (none, in_context, learned) on the first ``per_q`` dialogues per questioner."""
    from pet.metrics import rouge_l
    from pet.questioner.condition import soft_prompts

    seen: dict[str, int] = {}
    subset = []
    for it in items:
        if seen.get(it["q"], 0) < per_q:
            seen[it["q"]] = seen.get(it["q"], 0) + 1
            subset.append(it)
    out = {v: {} for v in ("none", "in_context", "learned")}
    for start in range(0, len(subset), bs):
        batch = subset[start:start + bs]
        msgs = [b["dialogue"].messages() for b in batch]
        gens = {"none": lm.generate_batch(msgs, max_new_tokens=max_new),
                "in_context": lm.generate_batch([in_context_messages(m, b["right"]) for m, b in zip(msgs, batch,
                                                                                                    strict=True)],
                                                max_new_tokens=max_new),
                "learned": lm.generate_batch(msgs, max_new_tokens=max_new,
                                             soft_prompts=list(soft_prompts(encoder, [b["right"] for b in batch])))}
        for v, gs in gens.items():
            for b, g in zip(batch, gs, strict=True):
                out[v].setdefault(b["q"], []).append(rouge_l(g.text, b["dialogue"].reply))
        stage(f"generated {min(start + bs, len(subset))}/{len(subset)} x 3", t0)
    return out, len(subset)


def summarize(sums, rouge, held, boot):
    """Per-variant mean perplexity over questioners with CIs, the shares and ROUGE-L."""
    ppl = {v: np.array([math.exp(sums[v][q][0] / max(1.0, sums[v][q][1])) for q in held]) for v in VARIANTS}
    out = {"perplexity": {}, "shares": {}, "rouge_l": {}}
    for v, arr in ppl.items():
        out["perplexity"][v] = {"mean": float(arr.mean()), "median": float(np.median(arr)),
                                "ci95": bootstrap(arr, np.mean, boot)}
    pairs = {"learned_vs_none": ("learned", "none"), "learned_vs_wrong": ("learned", "learned_wrong"),
             "learned_vs_mean": ("learned", "learned_mean"), "in_context_vs_none": ("in_context", "none"),
             "in_context_vs_wrong": ("in_context", "in_context_wrong")}
    for name, (a, b) in pairs.items():
        wins = (ppl[a] < ppl[b]).astype(float)
        out["shares"][name] = {"share": float(wins.mean()), "ci95": bootstrap(wins, np.mean, boot),
                               "questioners": int(wins.sum()), "of": len(wins),
                               "mean_ratio": float(np.mean(ppl[a] / ppl[b]))}
    for v, per_q in rouge.items():
        arr = np.array([np.mean(per_q[q]) for q in held if q in per_q])
        out["rouge_l"][v] = {"mean": float(arr.mean()), "ci95": bootstrap(arr, np.mean, boot), "questioners": len(arr)}
    out["per_questioner_perplexity"] = {v: [round(float(x), 4) for x in arr] for v, arr in ppl.items()}
    return out


def table(res) -> str:
    s = res["summary"]
    lines = ["| variant | mean ppl (95 % CI) | median ppl | ROUGE-L (95 % CI) |", "|---|---|---|---|"]
    for v in VARIANTS:
        p = s["perplexity"][v]
        r = s["rouge_l"].get(v)
        rl = f"{r['mean']:.4f} [{r['ci95'][0]:.4f}, {r['ci95'][1]:.4f}]" if r else "-"
        lines.append(f"| {v} | {p['mean']:.2f} [{p['ci95'][0]:.2f}, {p['ci95'][1]:.2f}] | {p['median']:.2f} | {rl} |")
    lines += ["", "| comparison (per held-out questioner) | share better (95 % CI) | questioners | mean ppl ratio |",
              "|---|---|---|---|"]
    for name, sh in s["shares"].items():
        lines.append(f"| {name} | {sh['share']:.3f} [{sh['ci95'][0]:.3f}, {sh['ci95'][1]:.3f}] | "
                     f"{sh['questioners']}/{sh['of']} | {sh['mean_ratio']:.4f} |")
    g = res["goal"]
    lines += ["", f"Goal (learned beats none on >= 70 % and beats a wrong questioner on >= 70 % of held-out "
                  f"questioners): {'MET' if g['met'] else 'NOT MET'} (none {g['vs_none']:.3f}, wrong "
                  f"{g['vs_wrong']:.3f})."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=None)
    ap.add_argument("--encoder", default=None, help="encoder folder from `pet questioner train` (default: train one)")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default questioner.train.steps)")
    ap.add_argument("--per-questioner", type=int, default=4, help="scored dialogues per held-out questioner")
    ap.add_argument("--rouge-per-questioner", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--cache", default=str(ROOT / "runs" / "questioner_cache"), help="embedding cache folder")
    ap.add_argument("--out", default=str(RESULTS / "questioner"))
    args = ap.parse_args()
    import torch

    from pet.models.embed import embedder_from_config
    from pet.models.lm import CausalLM
    from pet.paths import resolve_model
    from pet.questioner.encoder import load_encoder, save_encoder
    from pet.traditional.versions import model_fingerprint

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cfg = load_config(args.config)
    if args.steps:
        cfg.questioner.train.steps = args.steps
    qcfg, cache = cfg.questioner, Path(args.cache)
    folder = resolve_model(cfg.traditional.model, cfg.models_dir)
    lm = CausalLM.load(folder, threads=1)
    embedder = embedder_from_config(cfg)
    prep = prepare(lm, embedder, qcfg, cache=cache, progress=lambda m: stage(m, t0))
    fp = model_fingerprint(folder)
    if args.encoder:
        encoder, manifest = load_encoder(args.encoder, fp)
        facts = {k: manifest.get(k) for k in ("steps", "train_examples", "seconds", "final_lm_loss",
                                              "final_contrastive_loss", "fingerprint")}
        trained_on = set(manifest.get("train_questioners") or [])
    else:
        encoder, facts = train_encoder(lm, prep.train_examples, prep.profiled, qcfg, lambda m: stage(m, t0))
        manifest = save_encoder(encoder, ROOT / "runs" / "questioner" / "bench-encoder", fp,
                                {**facts, "train_questioners": sorted(prep.train_ids)}, replace=True)
        facts["fingerprint"] = manifest["fingerprint"]
        trained_on = set(prep.train_ids)
    leaked = trained_on & set(prep.heldout_ids)
    if leaked:
        raise SystemExit(f"{len(leaked)} held-out questioners were trained on: refusing to score")
    held = prep.heldout_ids
    wrong = derangement(held, qcfg.train.seed)
    mean_profile = make_profile(unit(np.mean([prep.profiled[i].embedding for i in prep.train_ids], axis=0)), [],
                                None, qcfg.max_exemplar_chars)
    items = held_items(lm, qcfg, prep, embedder, cache, wrong, args.per_questioner, qcfg.train.seed)
    stage(f"{len(items)} held-out dialogues of {len(held)} questioners", t0)
    sums = score_variants(lm, items, held, encoder, mean_profile, t0)
    rouge, n_rouge = rouge_variants(lm, items, args.rouge_per_questioner, encoder, args.max_new_tokens, t0)
    summary = summarize(sums, rouge, held, args.bootstrap)
    vs_none, vs_wrong = summary["shares"]["learned_vs_none"]["share"], summary["shares"]["learned_vs_wrong"]["share"]
    res = {"benchmark": "questioner", "when": utc_now(), "machine": machine_info(torch_threads=1),
           "model": str(cfg.traditional.model), "heldout_questioners": len(held),
           "train_questioners": len(prep.train_ids), "train_examples": len(prep.train_examples),
           "scored_dialogues": len(items), "rouge_dialogues": n_rouge, "exemplars": qcfg.exemplars,
           "soft_tokens": qcfg.soft_tokens, "encoder": facts, "train_config": qcfg.train.model_dump(),
           "summary": summary, "seconds": round(time.perf_counter() - t0, 1),
           "goal": {"vs_none": vs_none, "vs_wrong": vs_wrong, "met": vs_none >= 0.7 and vs_wrong >= 0.7}}
    md = "# Questioner-aware answers (benchmarks/questioner.py)\n\n" + table(res)
    print(md)
    save_results(args.out, res, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
