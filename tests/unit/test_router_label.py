"""`pet router label` on tiny random models: query files in, the labelled file `pet router calibrate` reads out."""

from __future__ import annotations

import json

import pytest
import yaml

from pet.calibration import fit_router_file
from pet.router.label import Experts, Tiers, label_queries, read_labelled, read_queries, write_labelled
from pet.router.policy import RouterFile

QUERIES = ["What is the capital of France?", "def add(a, b):", "Hello! How are you today?",
           "How do I sort a list in Python?", "Tell me about the sea.", "What is 2 + 2?"]


def test_read_queries_plain_and_jsonl(tmp_path):
    plain = tmp_path / "q.txt"
    plain.write_text("first query\n\n  second query  \n")
    assert read_queries(plain) == [{"id": "line-1", "query": "first query"}, {"id": "line-3", "query": "second query"}]
    jl = tmp_path / "q.jsonl"
    jl.write_text(json.dumps({"query": "a", "reference": "b", "kind": "general"}) + "\n"
                  + json.dumps({"id": "x7", "query": "c"}) + "\n")
    assert read_queries(jl) == [{"id": "line-1", "query": "a", "reference": "b", "kind": "general"},
                                {"id": "x7", "query": "c"}]
    jl.write_text(json.dumps({"query": "a"}) + "\n" + json.dumps({"reference": "no query"}) + "\n")
    with pytest.raises(ValueError, match=r"q.jsonl:2: needs a non-empty 'query'"):
        read_queries(jl)
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="no queries"):
        read_queries(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError):
        read_queries(tmp_path / "missing.txt")


def test_labelled_records_round_trip_into_calibrate(tiny_lm, tmp_path):
    queries = [{"id": f"q{i}", "query": q, "reference": "Paris is the capital of France."}
               for i, q in enumerate(QUERIES)]
    loaded = []

    def expert(domain):
        loaded.append(domain)
        return tiny_lm

    def domain_of(texts):
        return ["python" if "def" in t or "Python" in t else None for t in texts]

    tiers = Tiers(p=tiny_lm, t=tiny_lm, experts=Experts(domain_of, expert))
    lines = []
    records = label_queries(queries, tiers, max_new_tokens=4, batch=4, log=lines.append)
    assert loaded == ["python"]  # one load per domain
    assert [r["id"] for r in records] == [q["id"] for q in queries]
    assert [r["domain"] for r in records] == [None, "python", None, "python", None, None]
    assert all("e" in r for r in records if r["domain"]) and not any("e" in r for r in records if not r["domain"])
    assert set(records[0]["p"]["signals"]) >= {"mean_logprob", "min_token_prob", "mean_entropy"}
    assert lines[-1].startswith("[e python] 2/2 answered")

    path = write_labelled(records, tmp_path / "labelled.jsonl")
    assert read_labelled(path) == records
    fitted = fit_router_file(path, cfg=None, embed=False, cloud_budget=0.5)
    assert fitted.info["records"] == len(QUERIES) and fitted.info["records_with_expert"] == 2


def test_cli_label_then_calibrate(tiny_lm_dir, tmp_path, capsys):
    from pet.cli.main import main
    from pet.personal.bundle.write import export_bundle

    bundle = export_bundle(tiny_lm_dir, tmp_path / "bundle", quantize="none", parity=False)
    cfg = tmp_path / "pet.yaml"
    cfg.write_text(yaml.safe_dump({"models_dir": str(tmp_path / "models"), "traditional": {"model": str(tiny_lm_dir)},
                                   "expert": {"base_model": str(tiny_lm_dir)}, "personal": {"bundle": str(bundle)}}))
    queries = tmp_path / "mine.txt"
    queries.write_text("\n".join(QUERIES) + "\n")
    out = tmp_path / "labelled.jsonl"
    assert main(["router", "label", "--queries", str(queries), "--out", str(out), "--config", str(cfg),
                 "--max-new-tokens", "4"]) == 0
    text = capsys.readouterr().out
    assert f"labelled {len(QUERIES)} queries (0 with an expert answer, 0 with a reference)" in text
    assert "--label agreement" in text
    records = read_labelled(out)
    assert [r["query"] for r in records] == QUERIES
    router = tmp_path / "router.yaml"
    assert main(["router", "calibrate", "--data", str(out), "--label", "agreement", "--no-pregen",
                 "--config", str(cfg), "--out", str(router)]) == 0
    assert RouterFile.load(router).info["records"] == len(QUERIES)
    assert main(["router", "label", "--queries", str(tmp_path / "none.txt"), "--out", str(out),
                 "--config", str(cfg)]) == 2
