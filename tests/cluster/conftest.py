"""A two-node Ray cluster on loopback, started once per session for the cluster tests (``make test-cluster``).

``make test`` runs these in a second pytest session after the main suite (they start Ray nodes of their own, which
must not meet the main suite's local Ray). Fixtures:

- ``cluster``: the running :class:`pet.serve.cluster.LocalCluster` (a head offering ``node_head`` and worker
  ``w1`` offering ``node_w1``, one CPU each, all on 127.0.0.1).
- ``cluster_config_file``: a pet YAML in a tmp folder: T pinned to ``node_w1``, the ExpertPool and Gateway to
  ``node_head`` (like ``deployments/cluster.yaml``), plaintext allowed, short generations, a free proxy port,
  an empty expert registry, state (``serve.json``) in the tmp folder.
- ``deployed``: the facts ``pet deploy FILE --address <cluster>`` recorded (``url`` of the cluster's proxy).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.integration.conftest import free_port, test_config_dict

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def pytest_configure(config):
    """Register the ``cluster`` marker (kept out of pyproject: these tests are collected only when named)."""
    config.addinivalue_line("markers", "cluster: needs the two-node loopback Ray cluster of tests/cluster")

PINS = {"traditional": {"node_w1": 0.01}, "expert": {"node_head": 0.01}}


def cluster_config_dict(root, port: int) -> dict:
    """The integration tests' config with T on the worker node and the rest on the head."""
    cfg = test_config_dict(root, port, None)
    # each section gets its own ray_actor_options: test_config_dict shares one dict between them
    for tier, resources in PINS.items():
        cfg[tier]["deployment"]["ray_actor_options"] = {"num_cpus": 0.1, "resources": resources}
    cfg["serve"]["gateway"]["deployment"]["ray_actor_options"] = {"num_cpus": 0.1, "resources": {"node_head": 0.01}}
    return cfg


def pet_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``pet ARGS`` with this session's environment (state folder, auth mode) and return the finished process."""
    return subprocess.run([sys.executable, "-m", "pet", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ})


@pytest.fixture(scope="session")
def _cluster_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    os.environ["PET_STATE_DIR"] = str(root / "state")  # serve.json and cluster.json of this session only
    os.environ["RAY_AUTH_MODE"] = "disabled"
    return root


@pytest.fixture(scope="session")
def cluster_config_file(_cluster_root, real_lm_dir):
    """Path of the session's pet YAML (see the module docstring)."""
    path = _cluster_root / "cluster-test.yaml"
    path.write_text(yaml.safe_dump(cluster_config_dict(_cluster_root, free_port())))
    return path


@pytest.fixture(scope="session")
def cluster(cluster_config_file):
    """The running two-node cluster; every node's processes are ended at the end of the session."""
    from pet.config.loader import load_config
    from pet.io import atomic_write_json
    from pet.serve.cluster import LocalCluster, cluster_file
    from pet.serve.control import serve_env

    c = LocalCluster(workers=1, num_cpus=1, env=serve_env(load_config(cluster_config_file)))
    try:
        atomic_write_json(cluster_file(), c.start())
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def deployed(cluster, cluster_config_file):
    """``pet deploy FILE --address <cluster>`` (it returns once the gateway answers); the facts it recorded."""
    from pet.serve.control import read_state

    out = pet_cli("deploy", str(cluster_config_file), "--address", cluster.address, "--wait", "400")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    state = read_state()
    assert state and state["address"] == cluster.address, json.dumps(state)
    return state
