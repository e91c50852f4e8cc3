"""The main job's session: a scripted conversation through the device client, P -> E -> T, then a summary.

``pet demo`` (``make demo``) deploys the graph and calls :func:`run_session` with :data:`SESSION`: three kinds
of queries (personal chit-chat, the Python standard library, general knowledge) asked exactly as ``pet chat``
asks them: P answers on the device when the calibrated router trusts it, the rest goes HPKE-encrypted to the
gateway, which picks the expert domain (similarity vs floor) and escalates E -> T when the expert is not
confident enough. Each query prints one line saying which tier answered and why; :func:`summarize` adds the
shares per tier, median latency per tier, cloud tokens avoided compared with sending everything to T, and the
cost the ledger recorded for the session's user.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# (kind, prompt): what a user of a personal assistant with a Python expert asks in one sitting. Chosen so the
# session shows every tier with a margin: with the shipped calibration P escalates below a mean token log-prob
# of about -0.79 and E is kept above about -1.23 (measured with the default P and the starter experts: the two
# chitchat turns P -1.10 / -1.15, E -0.82 / -0.77; the T-bound ones P -0.92 to -1.11 and no domain within 0.2).
SESSION: tuple[tuple[str, str], ...] = (
    ("personal", "What is your secret super power?"),
    ("python", "How do I read a file line by line in Python?"),
    ("general", "Who was the first person to walk on the moon?"),
    ("personal", "umm. I once climbed the roof of my high school"),
    ("python", "In Python, what does operator.truth do?"),
    ("general", "Who composed the opera Lakme?"),
    ("personal", "how do we keep getting each other?"),
    ("python", "What is base64.encodebytes used for in Python?"),
    ("general", "Who painted The Garden of Earthly Delights?"),
)
TIERS = ("p", "e", "t")


@dataclass
class Turn:
    """One query of the session and how it was answered."""

    kind: str
    prompt: str
    answer: Any  # pet.personal.device.Answer

    @property
    def tokens(self) -> int:
        """Prompt plus completion tokens of the tier that answered."""
        u = self.answer.usage or {}
        return int(u.get("prompt_tokens", 0)) + int(u.get("completion_tokens", 0))


def _versus(score: float, op: str, threshold: float) -> str:
    """``0.8379 < 0.8381``: as many decimals (3 to 6) as it takes for unequal numbers to print unequal; closer
    than that, the gap is printed too (``0.838235 < 0.838235 (by 3e-08)``)."""
    digits = 3
    while digits < 6 and f"{score:.{digits}f}" == f"{threshold:.{digits}f}" and score != threshold:
        digits += 1
    text = f"{score:.{digits}f} {op} {threshold:.{digits}f}"
    if score != threshold and f"{score:.{digits}f}" == f"{threshold:.{digits}f}":
        text += f" (by {abs(score - threshold):.0e})"
    return text


def why(ans: Any) -> str:
    """One readable reason: the device decision (score vs threshold), then the gateway's (domain, E score)."""
    parts = []
    for d in ans.decisions:
        if d.get("score") is not None and d.get("threshold") is not None:
            op = ">=" if d["action"] == "answer_p" else "<"
            parts.append(f"P score {_versus(d['score'], op, d['threshold'])}")
    r = ans.route or {}
    if "domain_similarity" in r:
        sim, floor = r["domain_similarity"], r["domain_floor"]
        parts.append(f"domain {ans.domain} similarity {sim:.2f} >= floor {floor:.2f}" if ans.domain
                     else f"no expert domain (best similarity {sim:.2f} < floor {floor:.2f})")
    if r.get("e_score") is not None:
        op = ">=" if ans.tier == "e" else "<"
        parts.append(f"E score {_versus(r['e_score'], op, r['e_threshold'])}")
    if ans.degraded:
        parts.append("gateway unavailable: answered on the device")
    return "; ".join(parts) or ans.reason


def format_turn(i: int, turn: Turn) -> str:
    """``[E:python] 1.9 s, 52 tok, encrypted | why: ...`` plus the answer's first line."""
    a = turn.answer
    label = a.tier.upper() + (f":{a.domain}" if a.tier == "e" and a.domain else "")
    text = " ".join(a.text.split())
    text = text if len(text) <= 110 else text[:107] + "..."
    return (f"{i:>2}. ({turn.kind}) {turn.prompt}\n    [{label}] {a.latency_ms / 1000:.2f} s, {turn.tokens} tok"
            f"{', encrypted' if a.encrypted else ''} | why: {why(a)}\n    > {text}")


def run_session(client: Any, queries: Sequence[tuple[str, str]] = SESSION, max_new_tokens: int | None = None,
                log: Callable[[str], None] = print) -> list[Turn]:
    """Ask every query through ``client`` (a :class:`pet.personal.device.DeviceClient`), printing a line each."""
    turns = []
    for i, (kind, prompt) in enumerate(queries, 1):
        turn = Turn(kind, prompt, client.ask(prompt, max_new_tokens))
        turns.append(turn)
        log(format_turn(i, turn))
    return turns


def ledger_rows(ledger: Any, user: str, expected: int, wait_s: float = 10.0) -> list[Any]:
    """The user's ledger rows once ``expected`` cloud requests are recorded (the gateway meters in the background)."""
    deadline = time.monotonic() + wait_s
    while True:
        rows = ledger.summary(user=user)
        if sum(r.requests for r in rows) >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def summarize(turns: Sequence[Turn], rows: Sequence[Any] = ()) -> dict[str, Any]:
    """Shares, median latency and tokens per tier; cloud tokens avoided; the ledger's count and cost."""
    n = len(turns)
    per: dict[str, Any] = {}
    for tier in TIERS:
        mine = [t for t in turns if t.answer.tier == tier]
        per[tier] = {"answered": len(mine), "share": len(mine) / n if n else 0.0,
                     "median_latency_s": statistics.median(t.answer.latency_ms / 1000 for t in mine) if mine else None,
                     "tokens": sum(t.tokens for t in mine)}
    cloud = [t for t in turns if t.answer.tier in ("e", "t")]
    all_tokens = sum(t.tokens for t in turns)
    cloud_tokens = sum(t.tokens for t in cloud)
    return {"queries": n, "tiers": per, "encrypted_escalations": sum(t.answer.encrypted for t in cloud),
            "escalations": len(cloud), "cloud_tokens": cloud_tokens, "all_to_t_tokens": all_tokens,
            "tokens_avoided": all_tokens - cloud_tokens,
            "ledger": {"requests": sum(r.requests for r in rows), "tokens": sum(r.tokens for r in rows),
                       "cost": sum(r.cost for r in rows)}}


def summary_table(s: dict[str, Any]) -> str:
    """The printed summary."""
    lines = [f"{'tier':<5}{'answered':>9}{'share':>8}{'median latency':>16}{'tokens':>8}"]
    for tier in TIERS:
        r = s["tiers"][tier]
        lat = "-" if r["median_latency_s"] is None else f"{r['median_latency_s']:.2f} s"
        lines.append(f"{tier.upper():<5}{r['answered']:>9}{r['share']:>8.0%}{lat:>16}{r['tokens']:>8}")
    avoided = s["tokens_avoided"] / s["all_to_t_tokens"] if s["all_to_t_tokens"] else 0.0
    lines.append(f"cloud tokens: {s['cloud_tokens']} sent vs {s['all_to_t_tokens']} if every query went to T "
                 f"({s['tokens_avoided']} avoided, {avoided:.0%}); {s['encrypted_escalations']} of "
                 f"{s['escalations']} escalations HPKE-encrypted")
    led = s["ledger"]
    lines.append(f"ledger: {led['requests']} cloud requests, {led['tokens']} tokens, cost {led['cost']:.5f}")
    return "\n".join(lines)
