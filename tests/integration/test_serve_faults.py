"""Faults on the real graph: a corrupt adapter falls back to T; killing the expert replica mid-run loses no
request; `pet build` output passes Serve's own schema. The replica kill runs last in this module and waits
for the expert to come back, so later modules find a healthy graph."""

from __future__ import annotations

import concurrent.futures as cf
import time

import httpx
import pytest

pytestmark = pytest.mark.integration


def post(url: str, body, timeout: float = 120.0) -> httpx.Response:
    return httpx.post(f"{url}/v1/generate", json=body, timeout=timeout)


def test_corrupt_adapter_falls_back_to_t_and_is_counted(serve_url):
    r = post(serve_url, {"prompt": "Explain recursion.", "tier": "e", "domain": "broken", "max_new_tokens": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tier"] == "t" and body["fallback"] is True and body["fallback_reason"] == "corrupt_adapter"
    assert body["escalation"] == ["e", "t"] and body["domain"] == "broken" and body["text"].strip()
    metrics = httpx.get(f"{serve_url}/metrics", timeout=30).text
    assert 'pet_fallbacks_total{reason="corrupt_adapter"}' in metrics
    # The healthy domain still answers from E.
    r = post(serve_url, {"prompt": "What is a Python list?", "tier": "e", "domain": "python", "max_new_tokens": 4})
    assert r.status_code == 200 and r.json()["tier"] == "e"


def test_pet_build_output_passes_serve_schema(tmp_path, serve_config):
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from pet.cli.main import main

    src = tmp_path / "pet.yaml"
    src.write_text(yaml.safe_dump(serve_config.model_dump(mode="json")))
    out = tmp_path / "serve_config.yaml"
    assert main(["build", str(src), "-o", str(out)]) == 0
    # Direct ingress is an environment switch of the cluster: the header says how to start its Ray.
    port = serve_config.serve.http.direct_port
    assert f"RAY_SERVE_ENABLE_DIRECT_INGRESS=1 RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT={port}" in out.read_text()
    assert "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=pet.serve.guard:proxy_middlewares" in out.read_text()
    parsed = ServeDeploySchema.model_validate(yaml.safe_load(out.read_text()))
    app = parsed.applications[0]
    assert app.import_path == "pet.serve.app:app_builder" and app.args == {"config": str(src.resolve())}
    # The builder Serve would import builds the same graph from those args.
    from pet.serve.app import app_builder

    assert app_builder(app.args)._bound_deployment.name == "Gateway"
    bad = tmp_path / "bad.yaml"
    bad.write_text("serve: {http: {port: 0}}\n")
    assert main(["build", str(bad), "-o", str(tmp_path / "x.yaml")]) == 2 and not (tmp_path / "x.yaml").exists()


def test_adapters_are_evicted_lru_beyond_the_per_replica_limit(serve_url, serve_config, expert_registry):
    import numpy as np

    src = expert_registry.adapter_dir("python")
    extra = ["python-b", "python-c"]
    for name in extra:  # no exemplars: reachable by explicit tier "e" only, never auto-routed
        expert_registry.add(name, src, np.zeros((0, 384), np.float32), metrics={}, base_model="smollm2-135m-instruct")
    try:
        limit = serve_config.expert.max_adapters_per_replica
        assert limit == 2
        for domain in ["python", *extra, "python"]:
            r = post(serve_url, {"prompt": "Say hi.", "tier": "e", "domain": domain, "max_new_tokens": 2})
            assert r.status_code == 200 and r.json()["tier"] == "e" and r.json()["domain"] == domain, r.text
            loaded = _expert_stats(serve_config)["loaded_adapters"]
            assert domain in loaded and len(loaded) <= limit
    finally:
        for name in extra:
            expert_registry.remove(name)


def test_a_domain_replaced_while_loaded_serves_its_new_adapter(serve_url, serve_config, expert_registry,
                                                               real_lm_dir, tmp_path):
    import numpy as np

    from tests.integration.conftest import make_lora_adapter

    no_exemplars = np.zeros((0, 384), np.float32)
    expert_registry.add("swap", expert_registry.adapter_dir("python"), no_exemplars, metrics={},
                        base_model="smollm2-135m-instruct")
    try:
        first = expert_registry.get("swap").fingerprint
        body = {"prompt": "Say hi.", "tier": "e", "domain": "swap", "max_new_tokens": 2}
        assert post(serve_url, body).json()["tier"] == "e"
        assert _expert_stats(serve_config)["fingerprints"]["swap"] == first
        new = make_lora_adapter(real_lm_dir, tmp_path / "other", seed=1)
        expert_registry.add("swap", new, no_exemplars, metrics={}, base_model="smollm2-135m-instruct", replace=True)
        second = expert_registry.get("swap").fingerprint
        assert second != first
        r = post(serve_url, body)
        assert r.status_code == 200 and r.json()["tier"] == "e", r.text
        assert _expert_stats(serve_config)["fingerprints"]["swap"] == second
    finally:
        expert_registry.remove("swap")


def _expert_stats(serve_config) -> dict:
    from ray import serve

    handle = serve.get_deployment_handle("ExpertPool", app_name=serve_config.serve.app_name)
    return handle.stats.remote().result(timeout_s=60)


def test_killing_the_expert_replica_loses_no_request(serve_url, serve_config):
    import ray

    stats = _expert_stats(serve_config)
    victim = ray.get_actor(stats["actor_name"], namespace="serve")
    body = {"prompt": "How do I reverse a string in Python?", "tier": "e", "domain": "python",
            "max_new_tokens": 12}
    n = 8
    with cf.ThreadPoolExecutor(n) as ex:
        futures = [ex.submit(post, serve_url, body) for _ in range(n)]
        time.sleep(1.0)  # requests are in flight on the expert
        ray.kill(victim, no_restart=True)
        rs = [f.result() for f in futures]
    assert [r.status_code for r in rs] == [200] * n, [r.text[:200] for r in rs]
    assert all(r.json()["text"].strip() for r in rs)
    reasons = {r.json()["fallback_reason"] for r in rs if r.json()["fallback"]}
    assert reasons <= {"replica_died", "expert_error", "timeout", "expert_unavailable"}
    # While the replacement loads, tier "e" falls back to T at once instead of waiting for it.
    t0 = time.monotonic()
    r = post(serve_url, {**body, "max_new_tokens": 2})
    assert r.status_code == 200 and r.json()["fallback_reason"] == "expert_unavailable", r.text
    assert time.monotonic() - t0 < 10.0
    # Serve replaces the replica; E answers again (bounded wait so later tests see a healthy graph).
    deadline = time.monotonic() + 120
    while True:
        r = post(serve_url, {**body, "max_new_tokens": 2})
        if r.status_code == 200 and r.json()["tier"] == "e":
            break
        assert time.monotonic() < deadline, "the expert replica did not come back within 120 s"
        time.sleep(2)
    assert _expert_stats(serve_config)["actor_name"] != stats["actor_name"]
