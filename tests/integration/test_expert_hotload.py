"""Register an expert domain while the gateway runs: it is listed and answered with tier "e" without a
redeploy, auto-routing finds it, and removing it takes it offline again (404)."""

from __future__ import annotations

import time

import httpx
import pytest

pytestmark = pytest.mark.integration

COOKING = [
    "To make a basic risotto, toast arborio rice in butter, then add warm stock one ladle at a time, stirring "
    "until each addition is absorbed before adding the next.",
    "Bread dough needs kneading to develop gluten. Knead for about ten minutes until the dough is smooth and "
    "springs back when pressed with a finger.",
    "Caramelise onions slowly over low heat for forty minutes; a pinch of salt draws out moisture and a splash "
    "of water lifts the browned bits from the pan.",
    "Blanch green beans in salted boiling water for two minutes, then plunge them into ice water to keep "
    "their colour bright and their texture crisp.",
    "A vinaigrette is three parts oil to one part vinegar, whisked with mustard so that the emulsion holds.",
    "Rest a roast chicken for fifteen minutes before carving so the juices settle back into the meat.",
    "Whip egg whites in a clean bowl; any trace of yolk or fat stops them from forming stiff peaks.",
    "Season pasta water generously with salt: it should taste like the sea, because the pasta absorbs it.",
]
QUERIES = [
    "How long should I knead bread dough?",
    "How do I caramelise onions?",
    "What is the ratio of oil to vinegar in a vinaigrette?",
    "How much salt goes in pasta water when cooking?",
]


def experts(url: str) -> list[str]:
    r = httpx.get(f"{url}/v1/experts", timeout=30)
    assert r.status_code == 200, r.text
    return [e["name"] for e in r.json()["experts"]]


def test_register_while_gateway_runs(serve_url, expert_registry, real_lm_dir, tmp_path):
    from pet.config.schema.tiers import ExpertConfig
    from pet.expert.register import RegisterOptions, register_domain
    from pet.models.embed import Embedder

    data = tmp_path / "cooking.txt"
    data.write_text("\n\n".join(COOKING))
    queries = tmp_path / "queries.txt"
    queries.write_text("\n".join(QUERIES))
    assert "cooking" not in experts(serve_url)

    expert = ExpertConfig(training={"steps": 2, "batch_size": 2, "max_seq_len": 48, "learning_rate": 1e-3,
                                    "warmup_steps": 1, "heldout_fraction": 0.25, "max_heldout": 2},
                          data={"chunk_chars": 300})
    opts = RegisterOptions(examples=queries, force=True, progress=False)
    res = register_domain(expert_registry, "cooking", data, real_lm_dir, "smollm2-135m-instruct",
                          Embedder(threads=1), expert, opts, log=lambda m: None, threads=1)
    try:
        # The example queries plus snippets of the training chunks.
        assert res.record.manifest["exemplar_source"] == "examples+data" and res.report.steps == 2
        assert len(QUERIES) < res.record.exemplar_count <= len(QUERIES) + len(COOKING)
        listed = httpx.get(f"{serve_url}/v1/experts", timeout=30).json()["experts"]
        entry = next(e for e in listed if e["name"] == "cooking")
        assert entry["metrics"]["ppl_base"] == pytest.approx(res.report.ppl_base)

        r = httpx.post(f"{serve_url}/v1/generate", json={"prompt": QUERIES[0], "tier": "e", "domain": "cooking",
                                                          "max_new_tokens": 4}, timeout=120)
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["tier"], body["domain"], body["fallback"]) == ("e", "cooking", False), body.get("fallback_reason")
        assert body["usage"]["completion_tokens"] >= 1

        # Auto routing picks the new domain once the classifier has re-read the registry (every ~2 s).
        domain = None
        for _ in range(10):
            r = httpx.post(f"{serve_url}/v1/generate", json={"prompt": "How do I knead dough for bread?",
                                                              "max_new_tokens": 2}, timeout=120)
            assert r.status_code == 200, r.text
            domain = r.json()["domain"]
            if domain == "cooking":
                break
            time.sleep(1.0)
        assert domain == "cooking"
    finally:
        expert_registry.remove("cooking")
    assert "cooking" not in experts(serve_url)
    r = httpx.post(f"{serve_url}/v1/generate", json={"prompt": QUERIES[0], "tier": "e", "domain": "cooking",
                                                      "max_new_tokens": 2}, timeout=60)
    assert r.status_code == 404, r.text
