"""Losing the worker node under traffic: T and the ExpertPool run two replicas each, one per node; the worker's
processes are killed at once (a lost machine) while clients keep asking T and an expert in turn. Every request
must be answered: the gateway retries a T call whose replica died (``serve.gateway.replica_retries``) and answers
an E request whose pool replica died from T (``fallback: true``). Serve must bring T back to two running replicas
on the surviving node. Redeploys T and the pool unpinned and restarts the worker after."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
import yaml

from tests.cluster.conftest import pet_cli

pytestmark = pytest.mark.cluster


def _t_placement(url: str) -> list[dict]:
    out = pet_cli("status", "--url", url, "--json", timeout=60)
    return json.loads(out.stdout)["deployments"]["Traditional"]["placement"] if out.returncode == 0 else []


def _traffic(url: str, stop: threading.Event, results: list, lock: threading.Lock) -> None:
    k = 0
    with httpx.Client(timeout=120, trust_env=False) as client:
        while not stop.is_set():
            k += 1
            body = {"prompt": "Count to three.", "tier": "t"} if k % 2 else \
                {"prompt": "Knead the dough?", "tier": "e", "domain": "cooking"}
            t0 = time.monotonic()
            try:
                r = client.post(f"{url}/v1/generate", json=body)
                js = r.json() if r.status_code == 200 else {}
                row = (r.status_code, body["tier"], js.get("tier"), js.get("fallback")) if js else \
                    (r.status_code, body["tier"], r.text[:200], None)
            except httpx.HTTPError as err:
                row = (None, body["tier"], repr(err), None)
            with lock:
                results.append((t0, *row))


def test_worker_node_loss_under_traffic_loses_no_request(deployed, cluster, cluster_config_file, real_lm_dir,
                                                         tmp_path):
    from pet.expert.registry import ExpertRegistry
    from pet.models.embed import Embedder
    from tests.integration.conftest import make_lora_adapter

    cfg = yaml.safe_load(cluster_config_file.read_text())
    for section in (cfg["traditional"], cfg["expert"]):
        section["deployment"]["ray_actor_options"].pop("resources")
        section["deployment"]["num_replicas"] = 2
    cfg["expert"]["deployment"]["max_replicas_per_node"] = 1
    registry = ExpertRegistry(cfg["expert"]["registry_dir"])
    registry.add("cooking", make_lora_adapter(real_lm_dir, tmp_path / "adapter"),
                 Embedder(threads=1).encode(["Knead the dough?"]), metrics={}, base_model="smollm2-135m-instruct")
    spread = tmp_path / "spread.yaml"
    spread.write_text(yaml.safe_dump(cfg))
    out = pet_cli("deploy", str(spread), "--address", cluster.address, "--wait", "400")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    url = deployed["url"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        placement = _t_placement(url)
        if len([p for p in placement if p["state"] == "RUNNING"]) == 2:
            break
        time.sleep(2)
    # Serve spreads a deployment's replicas over nodes by default; a T with no replica on the worker would make
    # this test prove nothing, so that is a failure, not a skip.
    assert any("node_w1" in p["node_resources"] for p in placement), f"no T replica on the worker: {placement}"

    stop, lock, results = threading.Event(), threading.Lock(), []
    clients = [threading.Thread(target=_traffic, args=(url, stop, results, lock)) for _ in range(2)]
    for c in clients:
        c.start()
    killed_at, recovered = float("inf"), None
    try:
        while len(results) < 4:
            time.sleep(0.2)
        killed_at = time.monotonic()
        assert cluster.stop_node("w1") > 0
        while time.monotonic() - killed_at < 240:
            placement = _t_placement(url)
            running = [p for p in placement if p["state"] == "RUNNING"]
            if len(running) == 2 and all("node_head" in p["node_resources"] for p in running):
                recovered = time.monotonic() - killed_at
                break
            time.sleep(2)
        n_after = len(results)
        while len(results) < n_after + 4:
            time.sleep(0.2)
    finally:
        stop.set()
        for c in clients:
            c.join(timeout=180)
        cluster.add_worker("w1")
        registry.remove("cooking")
    failed = [r for r in results if r[1] != 200]
    during = [r for r in results if r[0] >= killed_at]
    e_rows = [r for r in results if r[2] == "e"]
    print(f"\n[node loss] {len(results)} requests ({len(e_rows)} to E, "
          f"{sum(1 for r in e_rows if r[4])} of them answered by T as fallback), {len(during)} sent after the "
          f"kill, {len(failed)} failed; T back to 2 replicas on the head after {recovered} s")
    assert not failed, failed[:5]
    assert e_rows and all(r[3] == ("t" if r[4] else "e") for r in e_rows), e_rows
    assert recovered is not None, f"T did not come back to two replicas on the head: {placement}"
