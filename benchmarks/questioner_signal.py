"""How much does *who asks* tell about the reply they get? The questioner signal in chitchat-dataset, without T.

    python benchmarks/questioner_signal.py            # ~2 min on one core (MiniLM embeddings, cached)

benchmarks/questioner.py asks T to predict the partner's real reply better from the right questioner's profile
than from a wrong one's. This program measures, in MiniLM space and with no model of ours in the loop, how much
of that is in the data at all. For each held-out questioner (the same split and the same seeded derangement as
benchmarks/questioner.py) and each of their later-half scored dialogues, the cosine of the real reply to:

- ``own``: the unit mean of the questioner's own earlier messages (the profile's ``embedding`` today);
- ``received``: the unit mean of the replies partners gave them in their earlier conversations;
- ``query``: the questioner's own later turn vs ``own`` (does the profile pick out the person's *own* writing?
  a reference for how strong a per-person signal can look).

A questioner is *contrast-correct* for a signal when the mean cosine with their own centroid is higher than with
the wrong questioner's. Shares carry 95 % bootstrap intervals over questioners, plus the mean cosine margin.
Writes benchmarks/results/questioner_signal.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, ROOT, save_results, utc_now  # noqa: E402
from benchmarks.questioner import bootstrap, derangement  # noqa: E402
from pet.config.loader import load_config  # noqa: E402
from pet.machine import machine_info  # noqa: E402
from pet.questioner.data import load_questioners, split_questioners  # noqa: E402
from pet.questioner.profile import unit  # noqa: E402
from pet.questioner.train import embed_cached, pick_dialogues  # noqa: E402

SIGNALS = ("own", "received", "query")


def centroid(embedder, texts: list[str], cache: Path) -> np.ndarray:
    return unit(embed_cached(embedder, texts, cache).mean(0))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=None)
    ap.add_argument("--per-questioner", type=int, default=4, help="scored dialogues per held-out questioner")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--cache", default=str(ROOT / "runs" / "questioner_cache"))
    ap.add_argument("--out", default=str(RESULTS / "questioner_signal"))
    args = ap.parse_args()
    import torch

    from pet.models.embed import embedder_from_config

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cfg = load_config(args.config)
    tc, cache = cfg.questioner.train, Path(args.cache)
    qs = load_questioners(tc.min_conversations, tc.context_turns)
    _, held = split_questioners(list(qs), tc.heldout, tc.questioners, tc.seed)
    wrong = derangement(held, tc.seed)
    embedder = embedder_from_config(cfg)
    own = {q: centroid(embedder, qs[q].history[-tc.profile_messages:], cache) for q in held}
    received = {q: centroid(embedder, qs[q].received[-tc.profile_messages:], cache) for q in held}
    cos = {s: {"right": [], "wrong": []} for s in SIGNALS}
    for q in held:
        ds = pick_dialogues(qs[q], args.per_questioner, tc.seed)
        replies = embed_cached(embedder, [d.reply for d in ds], cache)
        queries = embed_cached(embedder, [d.query for d in ds], cache)
        for s, vecs, table in (("own", replies, own), ("received", replies, received), ("query", queries, own)):
            cos[s]["right"].append(float(np.mean(vecs @ table[q])))
            cos[s]["wrong"].append(float(np.mean(vecs @ table[wrong[q]])))
    summary = {}
    for s in SIGNALS:
        right, other = np.array(cos[s]["right"]), np.array(cos[s]["wrong"])
        wins = (right > other).astype(float)
        summary[s] = {"share": float(wins.mean()), "ci95": bootstrap(wins, np.mean, args.bootstrap),
                      "questioners": int(wins.sum()), "of": len(wins), "mean_right": float(right.mean()),
                      "mean_wrong": float(other.mean()), "mean_margin": float((right - other).mean())}
    lines = ["| signal | what is compared | right > wrong (95 % CI) | questioners | mean cos right | wrong | margin |",
             "|---|---|---|---|---:|---:|---:|"]
    what = {"own": "partner's reply vs the questioner's own earlier messages",
            "received": "partner's reply vs replies the questioner received earlier",
            "query": "questioner's own later turn vs their earlier messages"}
    for s in SIGNALS:
        r = summary[s]
        lines.append(f"| {s} | {what[s]} | {r['share']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | "
                     f"{r['questioners']}/{r['of']} | {r['mean_right']:.4f} | {r['mean_wrong']:.4f} | "
                     f"{r['mean_margin']:+.4f} |")
    md = "# The questioner signal in chitchat-dataset (benchmarks/questioner_signal.py)\n\n" + "\n".join(lines) + "\n"
    res = {"benchmark": "questioner_signal", "when": utc_now(), "machine": machine_info(torch_threads=1),
           "heldout_questioners": len(held), "per_questioner": args.per_questioner, "summary": summary,
           "seconds": round(time.perf_counter() - t0, 1)}
    print(md)
    save_results(args.out, res, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
