"""The ONE Ray Serve cluster of the integration tests, started once per session.

Fixtures for every integration test module:

- ``serve_config``: the :class:`~pet.config.schema.PetConfig` the graph runs with (plaintext allowed,
  small timeouts and token limits, registry and keys in a tmp folder).
- ``expert_registry``: the :class:`~pet.expert.registry.ExpertRegistry` of that config. It holds
  ``python`` (a real LoRA adapter on SmolLM2 with MiniLM exemplars of Python questions) and ``broken``
  (the same adapter with a tampered weight file: loading it raises CorruptAdapterError).
- ``serve_url``: ``http://127.0.0.1:<free port>`` of the running gateway.

Startup (adapter + Ray + three replicas loading SmolLM2) takes about 30-60 s on 2 busy cores.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

PYTHON_EXEMPLARS = [
    "How do I read a file line by line in Python?",
    "What does a Python list comprehension look like?",
    "How do I install a package with pip?",
    "Explain Python decorators with an example.",
    "How do I open a file with pathlib in Python?",
    "What is the difference between a tuple and a list in Python?",
]


def stalled_uploads(url: str, n: int) -> list:
    """``n`` sockets that sent complete headers and half a body to ``url``'s /v1/generate, then nothing."""
    from urllib.parse import urlparse

    u = urlparse(url)
    head = (b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{\"prompt\": \"")
    socks = []
    for _ in range(n):
        s = socket.create_connection((u.hostname, u.port), timeout=10)
        s.sendall(head)
        socks.append(s)
    return socks


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_lora_adapter(base_dir: Path, out: Path, seed: int = 0) -> Path:
    """A small real LoRA adapter (r=4 on q/v projections, random non-zero init) for SmolLM2, saved by PEFT."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True, dtype=torch.float32)
    lcfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                      task_type="CAUSAL_LM")
    model = get_peft_model(base, lcfg)
    with torch.no_grad():  # small B so the expert stays fluent but differs from the base
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.mul_(0.01)
    model.save_pretrained(out)
    return out


def test_config_dict(root: Path, port: int, direct_port: int | None = None) -> dict:
    """The integration-test configuration (as a YAML mapping)."""
    fast = {"health_check_period_s": 1.0, "health_check_timeout_s": 20.0, "graceful_shutdown_timeout_s": 1.0,
            "ray_actor_options": {"num_cpus": 0.1}}
    gen = {"max_new_tokens": 8, "max_new_tokens_limit": 64}
    return {
        "traditional": {"generation": gen, "batching": {"max_batch_size": 8, "batch_wait_timeout_s": 0.02},
                        "deployment": {**fast, "max_ongoing_requests": 8, "max_queued_requests": 8}},
        "expert": {"registry_dir": str(root / "experts"), "timeout_s": 60.0, "max_adapters_per_replica": 2,
                   "generation": gen, "deployment": {**fast, "max_ongoing_requests": 16, "max_queued_requests": 32}},
        "crypto": {"allow_plaintext": True, "keys_dir": str(root / "keys")},
        "ledger": {"path": str(root / "ledger.sqlite")},
        "serve": {"http": {"host": "127.0.0.1", "port": port, "direct_port": direct_port},
                  "gateway": {"max_prompt_chars": 500, "request_timeout_s": 60.0, "max_inflight": 12,
                              "body_timeout_s": 3.0,
                              "deployment": {**fast, "max_ongoing_requests": 32, "max_queued_requests": 32}}},
    }


@pytest.fixture(scope="session")
def _serve_env(tmp_path_factory, real_lm_dir):
    """Registry with two domains, keys, Ray and the Serve graph; torn down at the end of the session."""
    import ray
    from ray import serve

    from pet.config.loader import parse_config
    from pet.expert.registry import ExpertRegistry
    from pet.models.embed import Embedder
    from pet.serve.app import build_app, logging_config
    from pet.serve.control import find_direct_url, http_options, serve_env, wait_healthy

    root = tmp_path_factory.mktemp("serve")
    adapter = make_lora_adapter(real_lm_dir, root / "adapter-src")
    exemplars = Embedder(threads=1).encode(PYTHON_EXEMPLARS)
    reg = ExpertRegistry(root / "experts")
    reg.add("python", adapter, exemplars, metrics={"note": "random LoRA for tests"},
            base_model="smollm2-135m-instruct")
    reg.add("broken", adapter, exemplars[:0], metrics={}, base_model="smollm2-135m-instruct")
    weights = next((reg.get("broken").path).rglob("adapter_model.safetensors"))
    with open(weights, "ab") as f:  # tamper after registration: sha256 no longer matches the manifest
        f.write(b"\0")

    port, direct_port = free_port(), free_port()
    cfg = parse_config(test_config_dict(root, port, direct_port), "<integration test config>")
    os.environ.update(serve_env(cfg))  # direct ingress: the local Ray's processes inherit the environment
    try:
        from pet.security.keys import ensure_keys

        ensure_keys(cfg)
    except ImportError:
        pass
    # On a loaded machine a raylet may miss Ray's fixed 30 s start deadline, and Serve kills an HTTP proxy
    # that is not ready in time: retry the whole start (fresh Ray, fresh port) a few times.
    for attempt in range(3):
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
            serve.start(http_options=http_options(cfg, port), logging_config=logging_config(cfg))
            break
        except Exception:
            if ray.is_initialized():
                serve.shutdown()
            ray.shutdown()
            if attempt == 2:
                raise
            port = free_port()
            cfg = parse_config(test_config_dict(root, port, direct_port), "<integration test config>")
    t0 = time.monotonic()
    serve.run(build_app(cfg), name=cfg.serve.app_name, route_prefix="/", logging_config=logging_config(cfg))
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, 240)
    print(f"\n[serve fixture] graph ready in {time.monotonic() - t0:.1f} s at {url}")
    direct = find_direct_url(cfg, timeout_s=60)
    yield {"url": url, "direct_url": direct, "cfg": cfg, "registry": reg, "root": root}
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def serve_url(_serve_env) -> str:
    """Base URL of the running gateway (no trailing slash)."""
    return _serve_env["url"]


@pytest.fixture(scope="session")
def serve_direct_url(_serve_env) -> str | None:
    """Base URL of the gateway replica's own HTTP server (Serve's direct ingress), None if it did not start."""
    return _serve_env["direct_url"]


@pytest.fixture(scope="session")
def serve_config(_serve_env):
    """The PetConfig the running graph was built from."""
    return _serve_env["cfg"]


@pytest.fixture(scope="session")
def expert_registry(_serve_env):
    """The ExpertRegistry the running graph reads (domains: python, broken)."""
    return _serve_env["registry"]
