"""Ray's own tooling on the cluster: ``serve deploy`` of the file ``pet build`` writes (through the dashboard's REST
API) takes the application over and the same HTTP API answers through the cluster's proxy."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.cluster.conftest import pet_cli

pytestmark = pytest.mark.cluster


def _app(dashboard_url: str, name: str) -> dict:
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    return (ServeSubmissionClient(dashboard_url).get_serve_details().get("applications") or {}).get(name) or {}


def test_serve_deploy_of_pet_build_output(deployed, cluster, cluster_config_file, tmp_path):
    out_file = tmp_path / "serve_config.yaml"
    built = pet_cli("build", str(cluster_config_file), "-o", str(out_file))
    assert built.returncode == 0, built.stderr
    serve_cli = Path(sys.executable).with_name("serve")
    done = subprocess.run([str(serve_cli), "deploy", str(out_file), "--address", cluster.dashboard_url],
                          capture_output=True, text=True, timeout=120, env={**os.environ})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    deadline = time.monotonic() + 300
    app = {}
    while time.monotonic() < deadline:
        app = _app(cluster.dashboard_url, deployed["app"])
        if str(app.get("source")).lower().endswith("declarative") and app.get("status") == "RUNNING":
            break
        time.sleep(2)
    assert app.get("status") == "RUNNING", app.get("message")
    r = httpx.post(f"{deployed['url']}/v1/generate", json={"prompt": "Say hi.", "tier": "t"}, timeout=120,
                   trust_env=False)
    assert r.status_code == 200 and r.json()["tier"] == "t", r.text
    t_nodes = {rep["node_id"] for rep in app["deployments"]["Traditional"]["replicas"]}
    workers = {n["NodeID"] for n in _nodes(cluster) if "node_w1" in n["Resources"]}
    assert t_nodes and t_nodes <= workers  # the YAML's resources pin T under Ray's tooling too


def _nodes(cluster) -> list[dict]:
    import ray

    ray.init(address=cluster.address, log_to_driver=False, ignore_reinit_error=True)
    try:
        return [n for n in ray.nodes() if n["Alive"]]
    finally:
        ray.shutdown()
