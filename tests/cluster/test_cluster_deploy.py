"""``pet deploy --address`` onto a two-node cluster: the API answers through the cluster's proxy, and the replicas
run where the YAML's ``ray_actor_options.resources`` put them (what ``pet status`` shows)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.cluster.conftest import pet_cli

pytestmark = pytest.mark.cluster


def test_generate_answers_through_the_cluster_proxy(deployed):
    r = httpx.post(f"{deployed['url']}/v1/generate", json={"prompt": "Say hi.", "tier": "t"}, timeout=120,
                   trust_env=False)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tier"] == "t" and body["text"] and not body["fallback"]


def test_status_places_t_on_the_worker_and_experts_on_the_head(deployed):
    out = pet_cli("status", "--url", deployed["url"], "--json", timeout=120)
    assert out.returncode == 0, out.stderr
    deps = json.loads(out.stdout)["deployments"]
    for name, resource, head in (("Traditional", "node_w1", False), ("ExpertPool", "node_head", True),
                                 ("Gateway", "node_head", True)):
        placement = deps[name]["placement"]
        assert placement, f"{name}: no placement reported"
        for p in placement:
            # (no IP check: Ray 2.60 replaces `--node-ip-address 127.0.0.1` with the host's reachable address)
            assert resource in p["node_resources"] and p["head"] is head and p["state"] == "RUNNING", p
    text = pet_cli("status", "--url", deployed["url"], timeout=120).stdout
    assert "(node_w1=1)" in text and "head (node_head=1)" in text
