"""An expert registered while ExpertPool replicas run on both nodes is answered by each of them without a redeploy:
the registry (``expert.registry_dir``) is storage every node reads (on this loopback cluster a local folder; a real
cluster mounts one shared path on every node, docs/serve.md). The pool is deployed with two replicas and
``max_replicas_per_node: 1``, so one runs on the head and one on the worker."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
import yaml

from tests.cluster.conftest import pet_cli

pytestmark = pytest.mark.cluster

QUERY = "How long should I knead bread dough?"


def _pool_placement(url: str) -> list[dict]:
    out = pet_cli("status", "--url", url, "--json", timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)["deployments"]["ExpertPool"]["placement"]


def _ask(url: str, n: int, out: list, lock: threading.Lock) -> None:
    with httpx.Client(timeout=180, trust_env=False) as client:
        for _ in range(n):
            r = client.post(f"{url}/v1/generate", json={"prompt": QUERY, "tier": "e", "domain": "cooking",
                                                        "max_new_tokens": 4})
            body = r.json()
            with lock:
                out.append((r.status_code, body.get("tier"), body.get("domain"), body.get("fallback")))


def _loaded_per_replica(url: str, replicas: set[str], tries: int = 40) -> dict[str, list[str]]:
    """The adapters each ExpertPool replica has loaded: ``/v1/experts`` reports those of the replica that answers
    its stats call, so it is asked until every replica has answered (or ``tries`` run out)."""
    seen: dict[str, list[str]] = {}
    with httpx.Client(timeout=60, trust_env=False) as client:
        for _ in range(tries):
            seen.update(client.get(f"{url}/v1/experts").json()["loaded_adapters"])
            if replicas <= set(seen):
                break
    return seen


def test_expert_registered_while_pools_run_on_both_nodes(deployed, cluster, cluster_config_file, real_lm_dir,
                                                         tmp_path):
    from pet.expert.registry import ExpertRegistry
    from pet.models.embed import Embedder
    from tests.integration.conftest import make_lora_adapter

    cfg = yaml.safe_load(cluster_config_file.read_text())
    pool = cfg["expert"]["deployment"]
    pool["ray_actor_options"].pop("resources")
    pool["num_replicas"] = 2
    pool["max_replicas_per_node"] = 1
    path = tmp_path / "pools.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = pet_cli("deploy", str(path), "--address", cluster.address, "--wait", "400")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    url = deployed["url"]
    placement = [p for p in _pool_placement(url) if p["state"] == "RUNNING"]
    assert sorted(p["head"] for p in placement) == [False, True], placement  # one replica on each node

    registry = ExpertRegistry(cfg["expert"]["registry_dir"])
    adapter = make_lora_adapter(real_lm_dir, tmp_path / "adapter")
    registry.add("cooking", adapter, Embedder(threads=1).encode([QUERY]), metrics={"note": "random LoRA"},
                 base_model="smollm2-135m-instruct")
    try:
        results, lock = [], threading.Lock()
        # concurrent clients, so Serve's router (fewest ongoing requests of two picks) uses both replicas
        threads = [threading.Thread(target=_ask, args=(url, 4, results, lock)) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        loaded = _loaded_per_replica(url, {p["replica"] for p in placement})
    finally:
        registry.remove("cooking")
    node = {p["replica"]: "head" if p["head"] else "worker" for p in placement}
    print(f"\n[shared registry] {len(results)} requests; adapters loaded per pool replica: "
          f"{ {node.get(r, r): a for r, a in loaded.items()} }")
    assert len(results) == 24
    assert all(r == (200, "e", "cooking", False) for r in results), results
    for p in placement:  # each node's replica read the new expert from the registry and answered with it
        assert "cooking" in loaded.get(p["replica"], []), (node[p["replica"]], loaded)
