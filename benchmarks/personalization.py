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
message tokens and ROUGE-L F1 of the greedy next message (first ``--rouge-n`` held-out messages).
Evaluation is torch-side (PyTorch models, not ONNX bundles).

    python benchmarks/personalization.py --users 6 --minutes 25

Writes ``benchmarks/results/personalization.{json,md,png}`` (after every user, so a stopped run keeps
what it measured).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, pyplot, save_results  # noqa: E402
from pet.machine import machine_info  # noqa: E402
from pet.paths import set_offline  # noqa: E402

VARIANTS = ("a_base", "b_lora_real", "c_lora_real_synth", "d_t_zero_shot")


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


def summarize(rows: list[dict]) -> dict:
    """Mean metrics per setting and variant, and the share of users each variant beats (a) on."""
    out: dict = {}
    for setting in ("full", "low"):
        block = {}
        for v in VARIANTS:
            vals = [r[setting][v] for r in rows if v in r.get(setting, {})]
            if not vals:
                continue
            base = [r[setting]["a_base"] for r in rows if v in r.get(setting, {})]
            block[v] = {
                "ppl_mean": statistics.fmean(x["ppl"] for x in vals),
                "rouge_l_mean": statistics.fmean(x["rouge_l"] for x in vals),
                "share_ppl_better_than_a": sum(x["ppl"] < b["ppl"] for x, b in zip(vals, base, strict=True))
                / len(vals),
                "share_rouge_better_than_a": sum(x["rouge_l"] > b["rouge_l"] for x, b in zip(vals, base, strict=True))
                / len(vals),
            }
        both = [r[setting] for r in rows if "c_lora_real_synth" in r.get(setting, {})]
        if both:
            block["c_vs_b"] = {
                "share_ppl_c_better": sum(x["c_lora_real_synth"]["ppl"] < x["b_lora_real"]["ppl"] for x in both)
                / len(both),
                "share_rouge_c_better": sum(x["c_lora_real_synth"]["rouge_l"] > x["b_lora_real"]["rouge_l"]
                                            for x in both) / len(both),
            }
        out[setting] = block
    return out


def table(summary: dict, n_users: int) -> str:
    """Markdown table of the summary."""
    lines = [f"users: {n_users}", "",
             "| setting | variant | mean ppl | mean ROUGE-L | users ppl < (a) | users ROUGE-L > (a) |",
             "|---|---|---:|---:|---:|---:|"]
    for setting, block in summary.items():
        for v in VARIANTS:
            if v in block:
                b = block[v]
                lines.append(f"| {setting} | {v} | {b['ppl_mean']:.2f} | {b['rouge_l_mean']:.4f} | "
                             f"{b['share_ppl_better_than_a']:.0%} | {b['share_rouge_better_than_a']:.0%} |")
        if "c_vs_b" in block:
            cb = block["c_vs_b"]
            lines.append(f"| {setting} | (c) vs (b) | | | ppl: (c) better on {cb['share_ppl_c_better']:.0%} | "
                         f"ROUGE-L: (c) better on {cb['share_rouge_c_better']:.0%} |")
    return "\n".join(lines)


def plot(summary: dict, rows: list[dict], path: Path) -> None:
    """Bars of mean perplexity and ROUGE-L per variant and setting."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.2
    for k, metric in enumerate(("ppl_mean", "rouge_l_mean")):
        ax = axes[k]
        for j, v in enumerate(VARIANTS):
            xs, ys = [], []
            for i, setting in enumerate(("full", "low")):
                if v in summary.get(setting, {}):
                    xs.append(i + (j - 1.5) * width)
                    ys.append(summary[setting][v][metric])
            ax.bar(xs, ys, width, label=v)
        ax.set_xticks([0, 1], ["full history", "low data (20 msgs)"])
        ax.set_title(("held-out perplexity (lower is better)", "ROUGE-L of next message (higher is better)")[k])
    axes[0].legend(fontsize=8, loc="lower center")
    fig.suptitle(f"Personalisation on chitchat-dataset, {len(rows)} users (SmolLM2-135M, CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def merge(files: list[str], out: Path) -> int:
    """Combine shard result files (same settings) into one report with a fresh summary, table and plot."""
    reports = [json.loads(Path(f).read_text()) for f in files]
    rows = [u for r in reports for u in r["users"]]
    merged = dict(reports[0])
    merged.update(users=rows, summary=summarize(rows), shards=files,
                  minutes=max(r["minutes"] for r in reports), machine=reports[0]["machine"])
    print(table(merged["summary"], len(rows)))
    save_results(out, merged, table(merged["summary"], len(rows)), lambda path: plot(merged["summary"], rows, path))
    return 0


def stage(k: int, what: str, t0: float) -> None:
    """A progress line (no text of any user)."""
    print(f"  user {k + 1}: {what} (+{time.perf_counter() - t0:.0f} s)", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=6, help="users to evaluate (sampled with --seed)")
    ap.add_argument("--minutes", type=float, default=25.0, help="start no new user after this many minutes")
    ap.add_argument("--max-train", type=int, default=80, help="most recent training messages in the full setting")
    ap.add_argument("--low", type=int, default=20, help="training messages in the low-data setting")
    ap.add_argument("--heldout-cap", type=int, default=24, help="held-out messages scored for perplexity")
    ap.add_argument("--rouge-n", type=int, default=8, help="held-out messages generated for ROUGE-L")
    ap.add_argument("--synthetic", type=int, default=24, help="synthetic samples asked for per user")
    ap.add_argument("--steps", type=int, default=None, help="LoRA steps (default: config)")
    ap.add_argument("--lr", type=float, default=None, help="LoRA learning rate (default: config)")
    ap.add_argument("--oversample", type=float, default=None, help="T candidates per synthetic sample")
    ap.add_argument("--p-model", default=None, help="P model folder (default: personalization.base_model)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", type=int, default=0, help="skip the first N sampled users (to run shards in parallel)")
    ap.add_argument("--merge", nargs="+", default=None, help="merge shard JSON files into --out and exit")
    ap.add_argument("--out", default=str(RESULTS / "personalization"))
    args = ap.parse_args()
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
    from pet.personal.personalize.augment import augment_local
    from pet.personal.personalize.evaluate import evaluate
    from pet.personal.personalize.lora import tokenize_examples, train_lora

    cfg = load_config()
    pcfg = cfg.personalization
    if args.steps:
        pcfg.steps = args.steps
    if args.lr:
        pcfg.learning_rate = args.lr
    if args.oversample:
        pcfg.oversample = args.oversample
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
    t_lm = CausalLM.load(t_dir, threads=1)
    emb = embedder_from_config(cfg)
    rows: list[dict] = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    per_user_s: list[float] = []
    for k, user in enumerate(chosen):
        elapsed = time.perf_counter() - t_start
        est = statistics.fmean(per_user_s) if per_user_s else 0.0
        if elapsed + est > args.minutes * 60:
            print(f"time budget reached after {len(rows)} users ({elapsed / 60:.1f} min)", flush=True)
            break
        t_user = time.perf_counter()
        recs = users[user]
        split = int(len(recs) * 0.8)
        heldout = recs[split:][:args.heldout_cap]
        train_full = recs[:split][-args.max_train:]
        train_low = recs[:split][-args.low:]
        shared = [r["text"] for r in train_low]
        aug = augment_local({"shared": shared, "n": args.synthetic, "seed": args.seed + k}, t_lm, emb, pcfg, rounds=1)
        synth = aug["samples"]
        stage(k, f"augment: {len(synth)} synthetic kept of {aug['stats'].get('candidates', 0)}", t_user)
        row: dict = {"user": f"user{args.skip + k:03d}", "messages": len(recs), "heldout": len(heldout),
                     "train_full": len(train_full), "train_low": len(train_low), "synthetic": len(synth),
                     "augment_stats": aug["stats"], "full": {}, "low": {}, "train": {}}
        res_a = evaluate(base, tok, heldout, pcfg, args.rouge_n)
        res_d = evaluate(t_lm.model, t_lm.tokenizer, heldout, pcfg, args.rouge_n, prompt_fn=t_prompt)
        stage(k, "evaluated (a) and (d)", t_user)
        for setting, train in (("full", train_full), ("low", train_low)):
            row[setting]["a_base"] = res_a
            row[setting]["d_t_zero_shot"] = res_d
            for v, extra in (("b_lora_real", []), ("c_lora_real_synth", synth)):
                examples = tokenize_examples(tok, train, pcfg, extra)
                tr = train_lora(base, tok, examples, pcfg, progress=False)
                row[setting][v] = evaluate(tr.model, tok, heldout, pcfg, args.rouge_n)
                row["train"][f"{setting}/{v}"] = tr.summary()
                base = tr.model.unload()  # drop the adapter: the next variant starts from the same base
                stage(k, f"{setting}/{v}: {tr.steps} steps in {tr.seconds:.0f} s, evaluated", t_user)
        per_user_s.append(time.perf_counter() - t_user)
        row["seconds"] = round(per_user_s[-1], 1)
        rows.append(row)
        f, lo = row["full"], row["low"]
        print(f"[{k + 1}/{len(chosen)}] {row['user']}: {len(recs)} msgs, {len(synth)} synthetic, "
              f"ppl a {f['a_base']['ppl']:.1f} | full b {f['b_lora_real']['ppl']:.1f} c "
              f"{f['c_lora_real_synth']['ppl']:.1f} | low b {lo['b_lora_real']['ppl']:.1f} c "
              f"{lo['c_lora_real_synth']['ppl']:.1f} | d {f['d_t_zero_shot']['ppl']:.1f} "
              f"({row['seconds']:.0f} s)", flush=True)
        summary = summarize(rows)
        info["loadavg_end"] = os.getloadavg()[0]
        report = {"machine": info, "args": vars(args), "config": pcfg.model_dump(mode="json"),
                  "p_model": p_dir.name, "t_model": t_dir.name, "users": rows, "summary": summary,
                  "minutes": round((time.perf_counter() - t_start) / 60, 2)}
        save_results(out, report, table(summary, len(rows)), lambda path, s=summary: plot(s, rows, path))
    if not rows:
        print("no user finished", flush=True)
        return 1
    print(table(summarize(rows), len(rows)))
    print(f"{(time.perf_counter() - t_start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
