"""Personalisation benchmark (CDCDA-PLM shape) on real per-user text from ``chitchat-dataset``.

For users with at least 100 messages, each user's messages are ordered by time; the last 20% are held out.
Each held-out message is predicted from its conversation context (the previous ``context_turns`` turns; the
user's own turns are ``assistant``). Two training settings:

- ``full``: the user's messages before the split (the most recent ``--max-train`` of them, for time);
- ``low``: only the 20 most recent messages before the split.

The user shares the 20 most recent training messages with the cloud in both settings; T writes ``--synthetic``
samples in their style (the in-process Augmenter: same prompts and MiniLM filter as the Serve deployment).
Variants, per user and setting: (a) P base, (b) P + LoRA on real data, (c) P + LoRA on real + synthetic,
(d) T zero-shot (T prompted with the context and an instruction). Metrics: held-out perplexity of the
message tokens, and ROUGE-1/ROUGE-L F1 of the generated next message with its length, repetition and empty
share (:mod:`pet.personal.personalize.evaluate`), for each ``--decode`` setting (default: the config's
``personalization.generation``). Summaries with 95% bootstrap intervals: :mod:`benchmarks.personalization_report`.
Evaluation is torch-side (PyTorch models, not ONNX bundles).

T's synthetic samples and the base / T zero-shot results do not depend on the LoRA knobs: they are cached per
user under ``runs/personalization_cache/`` (git-ignored), so controlled runs on the same users only train and
evaluate the LoRA variants.

    python benchmarks/personalization.py --users 20 --minutes 40
    python benchmarks/personalization.py --users 8 --set steps=30 --set learning_rate=1e-3 --out /tmp/x
    python benchmarks/personalization.py --users 8 --decode greedy= --decode norep=no_repeat_ngram_size:3

Writes ``<out>.{json,md,png}`` (default ``benchmarks/results/personalization``) after every user, so a stopped
run keeps what it measured.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, ROOT, save_results  # noqa: E402
from benchmarks.personalization_report import plot, summarize, table  # noqa: E402
from pet.machine import machine_info  # noqa: E402
from pet.paths import set_offline  # noqa: E402

CACHE = ROOT / "runs" / "personalization_cache"
CACHE_VERSION = 2


def user_records(min_messages: int, context_turns: int) -> dict[str, list[dict]]:
    """Per sender: time-ordered records ``{"text", "context", "ts"}`` (context as chat turns)."""
    import chitchat_dataset

    data = chitchat_dataset.Dataset()
    by_user: dict[str, list[dict]] = defaultdict(list)
    for conv in data.values():
        flat = [m for group in conv["messages"] for m in group]
        for i, m in enumerate(flat):
            text = m["text"].strip()
            if not text:
                continue
            ctx = [{"role": "assistant" if p["sender"] == m["sender"] else "user", "content": p["text"].strip()}
                   for p in flat[max(0, i - context_turns):i] if p["text"].strip()]
            by_user[m["sender"]].append({"text": text, "context": ctx, "ts": m["timestamp"]})
    return {u: sorted(r, key=lambda x: x["ts"]) for u, r in by_user.items() if len(r) >= min_messages}


def t_prompt(record: dict) -> list[dict]:
    """T zero-shot: the conversation as text plus an instruction (T's own default system prompt)."""
    lines = [f"{'Me' if t['role'] == 'assistant' else 'Them'}: {t['content']}" for t in record.get("context") or []]
    convo = "\n".join(lines) if lines else "(no earlier messages)"
    return [{"role": "user", "content": f"Chat so far:\n{convo}\n\nWrite my next chat message. "
                                        "Reply with the message only, in a casual chat style."}]


# ----------------------------------------------------------------------------------------------------------------
# Cache and options


def cached(key: dict[str, Any], compute: Callable[[], Any], use: bool = True) -> Any:
    """``compute()``'s JSON result, stored under a hash of ``key`` in :data:`CACHE` (results only, no text keys)."""
    digest = hashlib.sha256(json.dumps({**key, "v": CACHE_VERSION}, sort_keys=True).encode()).hexdigest()[:24]
    path = CACHE / f"{key.get('kind', 'x')}-{digest}.json"
    if use and path.is_file():
        return json.loads(path.read_text())
    value = compute()
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    tmp.replace(path)
    return value


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_decodes(specs: list[str] | None, default: Any) -> dict[str, Any]:
    """``NAME=key:value,key:value`` -> {NAME: PersonalGenerationConfig} (fields over ``default``)."""
    if not specs:
        return {"config": default}
    out = {}
    for spec in specs:
        name, _, body = spec.partition("=")
        fields = dict(kv.split(":", 1) for kv in body.split(",") if kv)
        out[name] = type(default).model_validate({**default.model_dump(), **{k: _value(v) for k, v in fields.items()}})
    return out


def apply_sets(pcfg: Any, sets: list[str] | None) -> Any:
    """``key=value`` overrides of the personalization config (validated; e.g. ``steps=30``)."""
    updates = {k: _value(v) for k, v in (s.split("=", 1) for s in sets or [])}
    return type(pcfg).model_validate({**pcfg.model_dump(), **updates}) if updates else pcfg


def merge(files: list[str], out: Path) -> int:
    """Combine shard result files (same settings) into one report with a fresh summary, table and plot."""
    reports = [json.loads(Path(f).read_text()) for f in files]
    rows = [u for r in reports for u in r["users"]]
    merged = dict(reports[0])
    decodes = list(reports[0]["decodes"])
    summary = summarize(rows, decodes)
    merged.update(users=rows, summary=summary, shards=files, minutes=max(r["minutes"] for r in reports))
    print(table(summary, len(rows)))
    save_results(out, merged, table(summary, len(rows)), lambda path: plot(summary, len(rows), path))
    return 0


def brief(res: dict[str, dict]) -> str:
    """One variant's numbers per decoding setting, for a progress line."""
    return "; ".join(f"{d}: ppl {r['ppl']:.1f} R-L {r['rouge_l']:.3f} words {r['words']:.1f} "
                     f"rep {r['repetition']:.2f} empty {r['empty']:.2f}" for d, r in res.items())


def stage(k: int, what: str, t0: float) -> None:
    """A progress line (no text of any user)."""
    print(f"  user {k + 1}: {what} (+{time.perf_counter() - t0:.0f} s)", flush=True)


# ----------------------------------------------------------------------------------------------------------------
# One user


def evaluate_decodes(model: Any, tok: Any, heldout: list[dict], pcfg: Any, decodes: dict[str, Any],
                     prompt_fn: Any = None) -> dict[str, dict]:
    """{decode: metrics}: perplexity once, then generation and ROUGE per decoding setting."""
    from pet.personal.personalize.evaluate import generate_next, heldout_perplexity, heldout_prompts, score_generations

    ppl = heldout_perplexity(model, tok, heldout, pcfg, prompt_fn)
    prompts = heldout_prompts(heldout, pcfg, prompt_fn)
    refs = [r["text"] for r in heldout]
    return {name: {"ppl": ppl, **score_generations(generate_next(model, tok, prompts, gen), refs)}
            for name, gen in decodes.items()}


def run_user(k: int, user: str, recs: list[dict], ctx: dict[str, Any], args: argparse.Namespace) -> dict:
    """All variants and settings of one user; a JSON-ready row (numbers only)."""
    from pet.personal.personalize.augment import augment_local
    from pet.personal.personalize.lora import tokenize_examples, train_lora

    pcfg, decodes, t_user = ctx["pcfg"], ctx["decodes"], time.perf_counter()
    split = int(len(recs) * 0.8)
    heldout = recs[split:][:args.heldout_cap]
    train = {"full": recs[:split][-args.max_train:], "low": recs[:split][-args.low:]}
    uid = hashlib.sha256(user.encode()).hexdigest()[:16]
    common = {"user": uid, "split": split, "heldout": len(heldout), "context_turns": pcfg.context_turns,
              "max_seq_len": pcfg.max_seq_len}
    aug_cfg = {k: v for k, v in pcfg.model_dump(mode="json").items()
               if k in ("oversample", "gen_max_new_tokens", "gen_temperature", "gen_top_p", "filter",
                        "examples_per_prompt")}
    aug = cached({"kind": "synth", **common, "low": args.low, "n": args.synthetic, "seed": args.seed + k,
                  "t": ctx["t_name"], **aug_cfg},
                 lambda: augment_local({"shared": [r["text"] for r in train["low"]], "n": args.synthetic,
                                        "seed": args.seed + k}, ctx["t_lm"], ctx["emb"], pcfg, rounds=1),
                 use=not args.no_cache)
    synth = aug["samples"][:args.synthetic]
    stage(k, f"synthetic: {len(synth)} kept of {aug['stats'].get('candidates', 0)}", t_user)
    fixed = {}
    for v, model, tok, pf, name in (("a_base", ctx["base"], ctx["tok"], None, ctx["p_name"]),
                                    ("d_t_zero_shot", ctx["t_lm"].model, ctx["t_lm"].tokenizer, t_prompt,
                                     ctx["t_name"])):
        fixed[v] = {}
        for dname, gen in decodes.items():
            fixed[v].update(cached({"kind": v, **common, "model": name, "gen": gen.model_dump(mode="json")},
                                   lambda m=model, t=tok, p=pf, d=dname, g=gen: evaluate_decodes(
                                       m, t, heldout, pcfg, {d: g}, p), use=not args.no_cache))
    stage(k, f"base (a) {brief(fixed['a_base'])}; T zero-shot (d) {brief(fixed['d_t_zero_shot'])}", t_user)
    row: dict = {"user": f"user{args.skip + k:03d}", "messages": len(recs), "heldout": len(heldout),
                 "train_full": len(train["full"]), "train_low": len(train["low"]), "synthetic": len(synth),
                 "augment_stats": aug["stats"], "train": {}}
    for setting in args.settings:
        row[setting] = dict(fixed)
        for v, extra in (("b_lora_real", []), ("c_lora_real_synth", synth)):
            if v not in args.variants:
                continue
            examples = tokenize_examples(ctx["tok"], train[setting], pcfg, extra)
            tr = train_lora(ctx["base"], ctx["tok"], examples, pcfg, progress=False)
            row[setting][v] = evaluate_decodes(tr.model, ctx["tok"], heldout, pcfg, decodes)
            row["train"][f"{setting}/{v}"] = tr.summary()
            ctx["base"] = tr.model.unload()  # drop the adapter: the next variant starts from the same base
            stage(k, f"{setting}/{v}: {tr.steps} steps in {tr.seconds:.0f} s; {brief(row[setting][v])}", t_user)
    row["seconds"] = round(time.perf_counter() - t_user, 1)
    return row


# ----------------------------------------------------------------------------------------------------------------
# Main


def parse_args() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=20, help="users to evaluate (sampled with --seed)")
    ap.add_argument("--minutes", type=float, default=40.0, help="start no new user after this many minutes")
    ap.add_argument("--max-train", type=int, default=80, help="most recent training messages in the full setting")
    ap.add_argument("--low", type=int, default=20, help="training messages in the low-data setting")
    ap.add_argument("--heldout-cap", type=int, default=32, help="held-out messages scored (perplexity and ROUGE)")
    ap.add_argument("--synthetic", type=int, default=None, help="synthetic samples per user (default: config)")
    ap.add_argument("--set", dest="sets", action="append", help="personalization config override KEY=VALUE")
    ap.add_argument("--decode", dest="decodes", action="append",
                    help="NAME=key:value,... decoding setting over personalization.generation (repeatable)")
    ap.add_argument("--settings", nargs="+", default=["full", "low"], choices=["full", "low"])
    ap.add_argument("--variants", nargs="+", default=["b_lora_real", "c_lora_real_synth"],
                    choices=["b_lora_real", "c_lora_real_synth"], help="LoRA variants to train")
    ap.add_argument("--p-model", default=None, help="P model folder (default: personalization.base_model)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", type=int, default=0, help="skip the first N sampled users (to run shards in parallel)")
    ap.add_argument("--no-cache", action="store_true", help="recompute synthetic data and base / T results")
    ap.add_argument("--merge", nargs="+", default=None, help="merge shard JSON files into --out and exit")
    ap.add_argument("--out", default=str(RESULTS / "personalization"))
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    if args.merge:
        return merge(args.merge, Path(args.out))
    set_offline()
    import torch

    torch.set_num_threads(1)
    from pet.config.loader import load_config
    from pet.models.embed import embedder_from_config
    from pet.models.lm import CausalLM
    from pet.models.lora import load_base
    from pet.paths import resolve_model

    cfg = load_config()
    pcfg = apply_sets(cfg.personalization, args.sets)
    args.synthetic = pcfg.synthetic_default if args.synthetic is None else args.synthetic
    decodes = parse_decodes(args.decodes, pcfg.generation)
    t_start = time.perf_counter()
    info = machine_info(torch_threads=1)
    p_dir = Path(args.p_model) if args.p_model else resolve_model(pcfg.base_model, cfg.models_dir)
    t_dir = resolve_model(cfg.traditional.model, cfg.models_dir)
    print(f"machine: {info}", flush=True)
    users = user_records(100, pcfg.context_turns)
    chosen = sorted(users)
    random.Random(args.seed).shuffle(chosen)
    chosen = chosen[args.skip:args.skip + args.users]
    print(f"{len(users)} users with >= 100 messages; evaluating {len(chosen)}", flush=True)
    base, tok = load_base(p_dir)
    ctx = {"pcfg": pcfg, "decodes": decodes, "base": base, "tok": tok, "t_lm": CausalLM.load(t_dir, threads=1),
           "emb": embedder_from_config(cfg), "p_name": str(p_dir), "t_name": str(t_dir)}
    rows: list[dict] = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for k, user in enumerate(chosen):
        elapsed = time.perf_counter() - t_start
        est = statistics.fmean(r["seconds"] for r in rows) if rows else 0.0
        if elapsed + est > args.minutes * 60:
            print(f"time budget reached after {len(rows)} users ({elapsed / 60:.1f} min)", flush=True)
            break
        rows.append(run_user(k, user, users[user], ctx, args))
        summary = summarize(rows, list(decodes))
        print(f"[{k + 1}/{len(chosen)}] {rows[-1]['user']} done in {rows[-1]['seconds']:.0f} s; running means:",
              flush=True)
        print(table({next(iter(decodes)): summary[next(iter(decodes))]}, len(rows)), flush=True)
        info["loadavg_end"] = os.getloadavg()[0]
        report = {"machine": info, "args": vars(args), "config": pcfg.model_dump(mode="json"),
                  "decodes": {n: g.model_dump(mode="json") for n, g in decodes.items()},
                  "p_model": p_dir.name, "t_model": t_dir.name, "users": rows, "summary": summary,
                  "minutes": round((time.perf_counter() - t_start) / 60, 2)}
        save_results(out, report, table(summary, len(rows)),
                     lambda path, s=summary, n=len(rows): plot(s, n, path))
    if not rows:
        print("no user finished", flush=True)
        return 1
    print(table(summarize(rows, list(decodes)), len(rows)))
    print(f"{(time.perf_counter() - t_start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
