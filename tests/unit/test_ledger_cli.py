"""``pet ledger show|export``: the table per user and tier, filters, CSV, and clear errors (exit 2)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from pet.cli.main import main
from pet.ledger import Ledger
from pet.ledger.report import parse_since


@pytest.fixture
def ledger_file(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.sqlite"
    clock = iter([parse_since("2026-01-01"), parse_since("2026-03-01"), parse_since("2026-03-02"),
                  parse_since("2026-03-03")])
    led = Ledger(path, {"p": 0, "e": 0.5, "t": 1.0}, 0.01, clock=lambda: next(clock))
    led.record_usage("r1", "alice", "t", 400, 600)       # 2026-01-01, cost 1.0
    led.record_usage("r2", "alice", "e", 1000, 1000)     # 2026-03-01, cost 1.0
    led.credit_contribution("c1", "alice", 300, "expert_training:law")  # 2026-03-02, reward 3.0
    led.record_usage("r3", "bob", "p", 50, 50)           # 2026-03-03, cost 0
    led.close()
    return path


def test_show_prints_a_table_per_user_and_tier_with_totals(ledger_file: Path, capsys):
    assert main(["ledger", "show", "--ledger", str(ledger_file)]) == 0
    out = capsys.readouterr().out.splitlines()
    header = out[1].split()
    assert header == ["user", "tier", "requests", "prompt_tokens", "completion_tokens", "tokens", "cost",
                      "samples", "rewards", "balance", "shared_bytes"]
    rows = {(c[0], c[1]): c for c in (line.split() for line in out[3:])}
    assert set(rows) == {("alice", "e"), ("alice", "t"), ("alice", "*"), ("bob", "p")}
    assert rows[("alice", "*")][2:] == ["2", "1400", "1600", "3000", "2.0000", "300", "3.0000", "1.0000", "0"]
    assert rows[("bob", "p")][6] == "0.0000"


def test_show_filters_by_user_and_since(ledger_file: Path, capsys):
    assert main(["ledger", "show", "--ledger", str(ledger_file), "--user", "alice", "--since", "2026-02-01"]) == 0
    lines = capsys.readouterr().out.splitlines()[3:]
    # the January T request is filtered out; the expert reward shares the e row with the March request
    assert [line.split() for line in lines] == [
        ["alice", "e", "1", "1000", "1000", "2000", "1.0000", "300", "3.0000", "2.0000", "0"]]


def test_export_csv_events_and_summary(ledger_file: Path, tmp_path: Path, capsys):
    assert main(["ledger", "export", "--csv", "--ledger", str(ledger_file)]) == 0
    events = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [e["id"] for e in events] == ["r1", "r2", "c1", "r3"]
    assert float(events[0]["amount"]) == pytest.approx(-1.0) and float(events[2]["amount"]) == pytest.approx(3.0)
    assert events[0]["time"].startswith("2026-01-01T00:00:00")
    out = tmp_path / "summary.csv"
    assert main(["ledger", "export", "--csv", "--summary", "--since", "2026-03-01", "--ledger", str(ledger_file),
                 "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["user"], r["tier"], r["balance"]) for r in rows] == [
        ("alice", "e", "2.0"), ("bob", "p", "0.0")]


@pytest.mark.parametrize("args, message", [
    (["--since", "last tuesday"], "--since must be a date"),
    (["--ledger", "/nonexistent/ledger.sqlite"], "no ledger at"),
])
def test_user_errors_exit_2(ledger_file: Path, capsys, args, message):
    argv = ["ledger", "show"] + (["--ledger", str(ledger_file)] if "--ledger" not in args else []) + args
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_corrupted_ledger_exit_2_with_a_clear_message(tmp_path: Path, capsys):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not sqlite" * 50)
    assert main(["ledger", "export", "--csv", "--ledger", str(bad)]) == 2
    assert "corrupted or not a SQLite file" in capsys.readouterr().err
