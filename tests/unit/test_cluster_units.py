"""Multi-node pieces without Ray: resources in the YAML reach ``.options()``, placement as ``pet status`` prints it
(on recorded Serve details), the local cluster's ``ray start`` commands and its per-node process cleanup."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from pet.config.loader import ConfigError, load_config, parse_config
from tests.conftest import FIXTURES, REPO

DETAILS = FIXTURES / "cluster" / "serve_details_two_nodes.json"


def _bound(app, name: str):
    gw = app._bound_deployment
    args = {"Gateway": gw, "Traditional": gw.init_args[1]._bound_deployment,
            "ExpertPool": gw.init_args[2]._bound_deployment}
    return args[name]


def test_resources_reach_options_and_cluster_yaml_pins_t_and_experts():
    from pet.serve.app import build_app

    app = build_app(load_config(REPO / "deployments" / "cluster.yaml"))
    assert _bound(app, "Traditional").ray_actor_options["resources"] == {"node_w1": 0.01}
    assert _bound(app, "ExpertPool").ray_actor_options["resources"] == {"node_head": 0.01}
    assert _bound(app, "Gateway").ray_actor_options["resources"] == {"node_head": 0.01}
    plain = build_app(parse_config({}))  # no resources: nothing pinned, the key is absent
    assert "resources" not in _bound(plain, "Traditional").ray_actor_options


def test_proxy_location_reaches_the_serve_config():
    from pet.serve.app import serve_config, validate_serve_config

    assert serve_config(parse_config({}))["proxy_location"] == "HeadOnly"
    data = serve_config(parse_config({"serve": {"proxy_location": "EveryNode"}}))
    assert validate_serve_config(data).proxy_location == "EveryNode"
    with pytest.raises(ConfigError, match="proxy_location"):
        parse_config({"serve": {"proxy_location": "Everywhere"}}, "<t>")


@pytest.mark.parametrize("resources, needle", [({"CPU": 1}, "not a custom resource"), ({"node_w1": 0}, "> 0")])
def test_schema_refuses_builtin_or_empty_resources(resources, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_config({"traditional": {"deployment": {"ray_actor_options": {"resources": resources}}}}, "<t>")


def test_placement_from_recorded_details_names_nodes_and_their_resources():
    from pet.serve.status import placement_from_details, placement_lines

    rec = json.loads(DETAILS.read_text())
    placement = placement_from_details(rec["details"], rec["nodes"], "pet")
    (t,) = placement["Traditional"]
    assert t["state"] == "RUNNING" and t["node_resources"] == {"node_w1": 1.0} and not t["head"]
    (e,) = placement["ExpertPool"]
    assert e["head"] and e["node_resources"] == {"node_head": 1.0}
    assert placement["Gateway"] == []
    assert placement_from_details(rec["details"], rec["nodes"], "other") == {}
    (line,) = placement_lines(placement["Traditional"])
    assert line.startswith(f"{t['replica']} RUNNING on 127.0.0.1 node {t['node_id'][:8]}")
    assert line.endswith("(node_w1=1)") and " head" not in line
    assert " head (node_head=1)" in placement_lines(placement["ExpertPool"])[0]


def test_pet_status_prints_placement_under_each_deployment(monkeypatch, capsys):
    from pet.cli import serve as cli
    from pet.serve.status import placement_from_details

    rec = json.loads(DETAILS.read_text())
    placement = placement_from_details(rec["details"], rec["nodes"], "pet")
    st = {"app": "pet", "status": "RUNNING", "deployments": {
        n: {"status": "HEALTHY", "replicas": {"RUNNING": len(p)}, "message": "", "placement": p}
        for n, p in placement.items()}}
    monkeypatch.setattr("pet.client.GatewayClient.status", lambda self: st)
    cli._status(type("A", (), {"url": "http://127.0.0.1:1", "config": None, "json": False})())
    out = capsys.readouterr().out
    t_line = out.splitlines().index(next(x for x in out.splitlines() if x.strip().startswith("Traditional")))
    assert "(node_w1=1)" in out.splitlines()[t_line + 1]


def test_local_cluster_starts_every_node_on_loopback_with_its_own_resource(monkeypatch, tmp_path):
    from pet.serve import cluster as mod

    monkeypatch.setenv("PET_STATE_DIR", str(tmp_path))
    calls = []
    monkeypatch.setattr(mod.subprocess, "run", lambda cmd, env, **kw: calls.append((cmd, env))
                        or subprocess.CompletedProcess(cmd, 0, "", ""))
    c = mod.LocalCluster(workers=2, env={"X_SERVE": "1"})
    c.root = tmp_path / "ray"
    facts = c.start()
    assert [json.loads(cmd[cmd.index("--resources") + 1]) for cmd, _ in calls] == \
        [{"node_head": 1}, {"node_w1": 1}, {"node_w2": 1}]
    for cmd, env in calls:
        assert cmd[cmd.index("--node-ip-address") + 1] == "127.0.0.1"
        assert env["RAY_AUTH_MODE"] == "disabled" and env["X_SERVE"] == "1"
    assert "--head" in calls[0][0] and calls[1][0][calls[1][0].index("--address") + 1] == c.address
    assert len({cmd[cmd.index("--temp-dir") + 1] for cmd, _ in calls}) == 3
    again = mod.LocalCluster.recorded()
    assert again.facts() == facts and again.dashboard_url == c.dashboard_url


def test_stop_node_ends_only_that_nodes_processes(tmp_path, monkeypatch):
    from pet.serve import cluster as mod

    monkeypatch.setenv("PET_STATE_DIR", str(tmp_path))
    c = mod.LocalCluster(workers=0)
    c.nodes = {"head": str(tmp_path / "h"), "w1": str(tmp_path / "w1")}
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    head = subprocess.Popen([*sleeper, f"--temp-dir={c.nodes['head']}"])
    worker = subprocess.Popen([*sleeper, c.nodes["w1"] + "/session_x"])
    try:
        deadline = time.monotonic() + 10
        while mod.processes_under(c.nodes["w1"]) != [worker.pid] and time.monotonic() < deadline:
            time.sleep(0.1)  # a busy machine may show the child's new command line a moment late
        assert mod.processes_under(c.nodes["w1"]) == [worker.pid]
        assert c.stop_node("w1") == 1
        assert worker.wait(timeout=10) == -9 and head.poll() is None
        with pytest.raises(KeyError, match="no node 'w2'"):
            c.stop_node("w2")
        t0 = time.monotonic()
        assert c.stop() == 1 and head.wait(timeout=10) is not None and time.monotonic() - t0 < 6
    finally:
        for p in (head, worker):
            if p.poll() is None:
                p.kill()
