"""Autoscaling on the cluster: T with ``autoscaling_config`` (1..2 replicas, one ongoing request per replica as the
target) goes to two replicas under four steady loopback clients and back to one when they stop. Runs after the
node-loss test (files run in name order) and redeploys T pinned to the worker again."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
import yaml

from tests.cluster.conftest import pet_cli

pytestmark = pytest.mark.cluster


def _t_replicas(url: str) -> int:
    out = pet_cli("status", "--url", url, "--json", timeout=60)
    if out.returncode != 0:
        return -1
    return json.loads(out.stdout)["deployments"]["Traditional"]["replicas"].get("RUNNING", 0)


def _wait_for(url: str, n: int, timeout_s: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if _t_replicas(url) == n:
            return time.monotonic() - t0
        time.sleep(2)
    return None


def test_t_scales_up_under_load_and_back_down(deployed, cluster, cluster_config_file, tmp_path):
    cfg = yaml.safe_load(cluster_config_file.read_text())
    cfg["traditional"]["deployment"]["autoscaling_config"] = {
        "min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1, "upscale_delay_s": 2,
        "downscale_delay_s": 10}
    path = tmp_path / "autoscale.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = pet_cli("deploy", str(path), "--address", cluster.address, "--wait", "400")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    url = deployed["url"]
    assert _wait_for(url, 1, 180) is not None

    stop, codes = threading.Event(), []

    def client() -> None:
        with httpx.Client(timeout=120, trust_env=False) as c:
            while not stop.is_set():
                codes.append(c.post(f"{url}/v1/generate", json={"prompt": "Count to ten.", "tier": "t",
                                                                "max_new_tokens": 32}).status_code)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        up = _wait_for(url, 2, 180)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=180)
    down = _wait_for(url, 1, 240)
    print(f"\n[autoscale] up to 2 replicas after {up} s under 4 clients; back to 1 after {down} s idle; "
          f"{len(codes)} requests, statuses {sorted(set(codes))}")
    assert up is not None and down is not None
    assert set(codes) == {200}
