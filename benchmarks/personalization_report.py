"""Summaries of the personalisation benchmark (:mod:`benchmarks.personalization`): per setting, variant and
decoding, the mean over users of perplexity, ROUGE-1, ROUGE-L and the output stats, each mean with a 95%
bootstrap interval (per-user means resampled over users), the share of users a variant beats the base on, and
the paired (c) - (b) ROUGE-L difference with its interval. Also the Markdown table and the plot.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from benchmarks.common import pyplot

VARIANTS = ("a_base", "b_lora_real", "c_lora_real_synth", "d_t_zero_shot")
SETTINGS = ("full", "low")
METRICS = ("ppl", "rouge_1", "rouge_l", "words", "repetition", "empty")


def bootstrap_ci(values: list[float], n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean of ``values`` (resampled with replacement)."""
    if len(values) < 2:
        return (float("nan"), float("nan"))
    x = np.asarray(values, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    means = x[idx].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _cell(rows: list[dict], setting: str, variant: str, decode: str) -> list[dict | None]:
    return [r.get(setting, {}).get(variant, {}).get(decode) for r in rows]


def summarize(rows: list[dict], decodes: list[str]) -> dict:
    """``{decode: {setting: {variant: {...}, "c_vs_b": {...}}}}`` over the users in ``rows``."""
    out: dict = {}
    for dec in decodes:
        out[dec] = {}
        for setting in SETTINGS:
            block: dict = {}
            base = _cell(rows, setting, "a_base", dec)
            for v in VARIANTS:
                cells = _cell(rows, setting, v, dec)
                pairs = [(c, b) for c, b in zip(cells, base, strict=True) if c is not None and b is not None]
                if not pairs:
                    continue
                s: dict = {"users": len(pairs)}
                for m in METRICS:
                    vals = [c[m] for c, _ in pairs]
                    s[m] = statistics.fmean(vals)
                    s[m + "_ci"] = bootstrap_ci(vals)
                s["share_ppl_better"] = statistics.fmean(c["ppl"] < b["ppl"] for c, b in pairs)
                s["share_rouge_l_better"] = statistics.fmean(c["rouge_l"] > b["rouge_l"] for c, b in pairs)
                s["share_both_better"] = statistics.fmean(c["ppl"] < b["ppl"] and c["rouge_l"] > b["rouge_l"]
                                                          for c, b in pairs)
                s["rouge_l_minus_a_ci"] = bootstrap_ci([c["rouge_l"] - b["rouge_l"] for c, b in pairs])
                block[v] = s
            bs, cs = _cell(rows, setting, "b_lora_real", dec), _cell(rows, setting, "c_lora_real_synth", dec)
            both = [(c, b) for c, b in zip(cs, bs, strict=True) if c is not None and b is not None]
            if both:
                diff = [c["rouge_l"] - b["rouge_l"] for c, b in both]
                block["c_vs_b"] = {"users": len(both),
                                   "share_ppl_c_better": statistics.fmean(c["ppl"] < b["ppl"] for c, b in both),
                                   "share_rouge_l_c_better": statistics.fmean(d > 0 for d in diff),
                                   "rouge_l_diff": statistics.fmean(diff), "rouge_l_diff_ci": bootstrap_ci(diff)}
            if block:
                out[dec][setting] = block
    return out


def _fmt(s: dict, m: str, spec: str) -> str:
    lo, hi = s[m + "_ci"]
    return f"{s[m]:{spec}} [{lo:{spec}}, {hi:{spec}}]"


def table(summary: dict, n_users: int) -> str:
    """Markdown: one table per decoding setting."""
    lines = [f"users: {n_users}; means over users with 95% bootstrap intervals (users resampled); "
             "'> a' = share of users where the variant beats the base (a) with the same decoding", ""]
    for dec, by_setting in summary.items():
        lines += [f"### decoding: {dec}", "",
                  "| setting | variant | ppl | ROUGE-1 | ROUGE-L | words | repetition | empty | ppl < a | "
                  "ROUGE-L > a | both > a |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for setting, block in by_setting.items():
            for v in VARIANTS:
                if v in block:
                    s = block[v]
                    lines.append(f"| {setting} | {v} | {_fmt(s, 'ppl', '.1f')} | {_fmt(s, 'rouge_1', '.3f')} | "
                                 f"{_fmt(s, 'rouge_l', '.3f')} | {s['words']:.1f} | {s['repetition']:.3f} | "
                                 f"{s['empty']:.2f} | {s['share_ppl_better']:.0%} | {s['share_rouge_l_better']:.0%} | "
                                 f"{s['share_both_better']:.0%} |")
            if "c_vs_b" in block:
                cb = block["c_vs_b"]
                lo, hi = cb["rouge_l_diff_ci"]
                lines.append(f"| {setting} | (c) vs (b) | ppl: (c) better for {cb['share_ppl_c_better']:.0%} | | "
                             f"ROUGE-L (c)-(b) {cb['rouge_l_diff']:+.3f} [{lo:+.3f}, {hi:+.3f}] | | | | | "
                             f"(c) better for {cb['share_rouge_l_c_better']:.0%} | |")
        lines.append("")
    return "\n".join(lines)


def plot(summary: dict, n_users: int, path: Path) -> None:
    """Mean perplexity and ROUGE-L (with 95% intervals) per variant and setting, first decoding setting."""
    plt = pyplot()
    dec = next(iter(summary))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.2
    for k, metric in enumerate(("ppl", "rouge_l")):
        ax = axes[k]
        for j, v in enumerate(VARIANTS):
            xs, ys, err = [], [], [[], []]
            for i, setting in enumerate(SETTINGS):
                s = summary[dec].get(setting, {}).get(v)
                if s:
                    xs.append(i + (j - 1.5) * width)
                    ys.append(s[metric])
                    err[0].append(s[metric] - s[metric + "_ci"][0])
                    err[1].append(s[metric + "_ci"][1] - s[metric])
            ax.bar(xs, ys, width, yerr=err, capsize=3, label=v)
        ax.set_xticks([0, 1], ["full history", "low data (20 msgs)"])
        ax.set_title(("held-out perplexity (lower is better)", "ROUGE-L of next message (higher is better)")[k])
    axes[0].legend(fontsize=8, loc="lower center")
    fig.suptitle(f"Personalisation on chitchat-dataset, {n_users} users, decoding {dec} (SmolLM2-135M, CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
