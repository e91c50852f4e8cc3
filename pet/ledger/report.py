"""Human and CSV views of the ledger: the per-user, per-tier table of ``pet ledger show`` and the CSV export."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable

from pet.ledger.store import SummaryRow

COLUMNS = ("user", "tier", "requests", "prompt_tokens", "completion_tokens", "tokens", "cost", "samples",
           "rewards", "balance", "shared_bytes")
EVENT_COLUMNS = ("kind", "id", "time", "user", "tier", "prompt_tokens", "completion_tokens", "samples", "purpose",
                 "amount")


def parse_since(text: str) -> float:
    """A ``--since`` value (``YYYY-MM-DD`` or ISO date-time; UTC unless an offset is given) -> Unix seconds."""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since must be a date like 2026-11-21 or 2026-11-21T18:00, got {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def with_totals(rows: Iterable[SummaryRow]) -> list[SummaryRow]:
    """The rows, plus one ``*`` (all tiers) row after each user who has more than one tier."""
    out: list[SummaryRow] = []
    by_user: dict[str, list[SummaryRow]] = {}
    for row in rows:
        by_user.setdefault(row.user, []).append(row)
    for user, urows in by_user.items():
        out.extend(urows)
        if len(urows) > 1:
            total = SummaryRow(user, "*")
            for r in urows:
                total.requests += r.requests
                total.prompt_tokens += r.prompt_tokens
                total.completion_tokens += r.completion_tokens
                total.cost += r.cost
                total.samples += r.samples
                total.rewards += r.rewards
                total.shared_bytes += r.shared_bytes
            out.append(total)
    return out


def _values(row: SummaryRow) -> tuple:
    return (row.user, row.tier, row.requests, row.prompt_tokens, row.completion_tokens, row.tokens,
            round(row.cost, 6), row.samples, round(row.rewards, 6), round(row.balance, 6), row.shared_bytes)


def format_table(rows: list[SummaryRow]) -> str:
    """A fixed-width text table per user and tier, with per-user totals (tier ``*``)."""
    if not rows:
        return "no ledger events match"
    cells = [COLUMNS] + [
        tuple(f"{v:.4f}" if isinstance(v, float) else str(v) for v in _values(r)) for r in with_totals(rows)
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = []
    for n, c in enumerate(cells):
        padded = (v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths, strict=True)))
        lines.append("  ".join(padded))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary_csv(rows: list[SummaryRow]) -> str:
    """The summary as CSV (no total rows: a spreadsheet sums those)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    w.writerows(_values(r) for r in rows)
    return buf.getvalue()


def events_csv(events: Iterable[dict]) -> str:
    """Every event as one CSV row; ``amount`` is negative for cost and positive for rewards."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(EVENT_COLUMNS)
    for e in events:
        when = dt.datetime.fromtimestamp(e["ts"], dt.UTC).isoformat(timespec="milliseconds")
        w.writerow((e["kind"], e["id"], when, e["user"], e["tier"], e["prompt_tokens"], e["completion_tokens"],
                    e["samples"], e["purpose"], round(e["amount"], 9)))
    return buf.getvalue()
