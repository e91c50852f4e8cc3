"""The main job's session on the real graph (issue 23): the scripted queries of ``pet.demo.SESSION`` asked through
the device client with the default P (the signed int8 bundle, built once and cached), the shipped router
calibration and the starter chitchat expert. Each of P, E and T answers at least one query, every escalation is
HPKE-encrypted, and the summary agrees with the ledger."""

from __future__ import annotations

import time

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.real]


def test_the_demo_session_uses_every_tier_and_adds_up_with_the_ledger(serve_config, serve_direct_url, serve_url,
                                                                       expert_registry):
    from pet.demo import SESSION, ledger_rows, run_session, summarize
    from pet.expert.starter import install_starters
    from pet.ledger import Ledger
    from pet.personal.bundle.default import ensure_default_bundle
    from pet.personal.bundle.sign import trusted_public_key_path
    from pet.personal.device import DeviceClient
    from pet.personal.runtime import load_model

    cfg = serve_config.model_copy(deep=True)
    cfg.router.read_timeout_s = 180.0  # a loaded CI machine: never let a slow T answer turn into a degraded P one
    assert cfg.router.calibration == "default" and cfg.personal.bundle == "default"
    installed = install_starters(expert_registry, names=("chitchat",))
    time.sleep(2.5)  # the gateway's domain classifier re-reads the registry every 2 s
    try:
        bundle = ensure_default_bundle(cfg, log=print)
        personal = load_model(bundle, num_threads=1, public_key=trusted_public_key_path(cfg))
        client = DeviceClient.from_config(cfg, personal, serve_direct_url or serve_url, user_id="demo-session-test")
        turns = run_session(client, SESSION, max_new_tokens=32)
    finally:
        for name in installed:
            expert_registry.remove(name)
    tiers = [t.answer.tier for t in turns]
    assert {"p", "e", "t"} <= set(tiers), [(t.prompt, t.answer.tier, t.answer.reason) for t in turns]
    assert not any(t.answer.degraded for t in turns)
    cloud = [t for t in turns if t.answer.tier in ("e", "t")]
    assert all(t.answer.encrypted for t in cloud)
    assert all(t.answer.domain == "chitchat" for t in turns if t.answer.tier == "e")
    s = summarize(turns, ledger_rows(Ledger.from_config(cfg), "demo-session-test", len(cloud)))
    assert sum(r["answered"] for r in s["tiers"].values()) == len(SESSION)
    assert s["ledger"]["requests"] == len(cloud) == s["escalations"] == s["encrypted_escalations"]
    assert s["ledger"]["tokens"] == s["cloud_tokens"] and s["ledger"]["cost"] > 0
    assert s["tokens_avoided"] == s["tiers"]["p"]["tokens"] > 0
