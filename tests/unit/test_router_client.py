"""Device client: degraded answers from P when the gateway is down or slow; escalation (plain and HPKE-sealed).

P is the tiny random Llama of tests/conftest.py behind pet.models.lm.CausalLM (same generate() interface as
the onnxruntime DeviceModel). The gateways here are tiny local HTTP servers: a closed port, one that sleeps,
and one that speaks the /v1/generate + /v1/keys contract with the real GatewayCrypto.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pet.client import GatewayClient
from pet.config.schema import PetConfig
from pet.personal.device import DeviceClient
from pet.router.policy import RouterFile, make_policy
from pet.router.router import Router

ALWAYS_ESCALATE = RouterFile(p_threshold=1.0)  # exp(mean_logprob) < 1 always: every query leaves the device
NEVER_ESCALATE = RouterFile(p_threshold=0.0)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nobody listens


def serve(handler_cls):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler_cls)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"


def test_closed_port_answers_from_p_degraded(tiny_lm):
    client = DeviceClient(tiny_lm, Router(make_policy("cascade", ALWAYS_ESCALATE)),
                          f"http://127.0.0.1:{closed_port()}", connect_timeout_s=2.0, read_timeout_s=2.0,
                          max_new_tokens=4)
    t0 = time.monotonic()
    ans = client.ask("hello there")
    assert time.monotonic() - t0 < 5
    assert ans.tier == "p" and ans.degraded
    assert "refused" in ans.reason and "escalate" in ans.reason
    assert ans.decisions[0]["action"] == "run_p" and ans.decisions[-1]["action"] == "escalate"


def test_slow_gateway_times_out_and_answers_from_p(tiny_lm):
    release = threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            release.wait(10)

        do_POST = do_GET  # noqa: N815

        def log_message(self, *a):
            pass

    srv, url = serve(Slow)
    try:
        client = DeviceClient(tiny_lm, Router(make_policy("cascade", ALWAYS_ESCALATE)), url, connect_timeout_s=1.0,
                              read_timeout_s=0.5, max_new_tokens=4)
        t0 = time.monotonic()
        ans = client.ask("hello there")
        assert time.monotonic() - t0 < 4
        assert ans.tier == "p" and ans.degraded and "timed out" in ans.reason
    finally:
        release.set()
        srv.shutdown()


def test_confident_p_never_calls_the_gateway(tiny_lm):
    client = DeviceClient(tiny_lm, Router(make_policy("cascade", NEVER_ESCALATE)),
                          f"http://127.0.0.1:{closed_port()}", max_new_tokens=4)
    ans = client.ask([{"role": "user", "content": "hi"}])
    assert ans.tier == "p" and not ans.degraded and "P confidence" in ans.reason


def fake_gateway(cfg, seen: list):
    """/v1/generate that refuses plaintext and opens envelopes with the real GatewayCrypto."""
    from pet.security.gateway import GatewayCrypto

    crypto = GatewayCrypto.from_config(cfg)

    class Gw(BaseHTTPRequestHandler):
        def _send(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802
            self._send(200, crypto.public_keys())

        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if "pet_envelope" not in body:
                seen.append("plaintext")
                return self._send(400, {"error": {"code": "plaintext_refused", "message": "no", "status": 400}})
            payload, reply = crypto.open(body["pet_envelope"])
            seen.append(payload)
            result = {"request_id": payload["request_id"], "text": "from the cloud", "tier": "e", "domain": "python",
                      "fallback": False, "fallback_reason": None, "escalation": ["e"],
                      "signals": {"mean_logprob": -0.1, "min_token_prob": 0.5, "mean_entropy": 0.3},
                      "usage": {"prompt_tokens": 3, "completion_tokens": 3, "seconds": 0.01}, "latency_ms": 1.0}
            self._send(200, {"pet_envelope": reply.seal(result)})

        def log_message(self, *a):
            pass

    return serve(Gw)


@pytest.fixture
def sealing_gateway(tmp_path):
    """(url, payloads seen) of a fake gateway with fresh keys that refuses plaintext."""
    from pet.security.keys import ensure_keys

    cfg = PetConfig()
    cfg.crypto.keys_dir = str(tmp_path / "keys")
    ensure_keys(cfg)
    seen: list = []
    srv, url = fake_gateway(cfg, seen)
    yield url, seen
    srv.shutdown()


@pytest.mark.parametrize("encrypt", ["auto", "never"])
def test_escalation_is_sealed_with_hpke(tiny_lm, sealing_gateway, encrypt):
    url, seen = sealing_gateway
    client = DeviceClient(tiny_lm, Router(make_policy("cascade", ALWAYS_ESCALATE)), url, user_id="alice",
                          encrypt=encrypt, max_new_tokens=4)
    ans = client.ask("what does os.path.join do?")
    if encrypt == "never":  # refused plaintext and not allowed to encrypt: P answers, degraded
        assert ans.tier == "p" and ans.degraded and "plaintext_refused" in ans.reason
        assert seen == ["plaintext"]
        return
    assert (ans.tier, ans.domain, ans.text, ans.encrypted, ans.degraded) == ("e", "python", "from the cloud",
                                                                              True, False)
    assert ans.escalation == ["p", "e"] and "answered by E (python)" in ans.reason
    assert seen[0]["tier"] == "auto" and seen[0]["prompt"] == "what does os.path.join do?"
    assert seen[0]["user"] == "alice"
    assert "plaintext" not in seen  # keys were published: the prompt never crossed the wire in clear


def test_bad_url_is_a_clear_error():
    with pytest.raises(ValueError, match="http"):
        GatewayClient("ftp://x")


class CountingEmbedder:
    """A deterministic 4-dim embedder (stands in for MiniLM): the stacked policy needs the query embedding."""

    def __init__(self):
        self.calls = 0

    def encode(self, texts):
        import numpy as np

        self.calls += 1
        return np.array([[len(t) % 7, t.count(" "), 1.0, 0.0] for t in texts], dtype=np.float32)


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_stacked_policy_embeds_runs_p_then_decides(tiny_lm, threshold):
    import numpy as np

    from pet.router.scorers import StackedScorer

    scorer = StackedScorer(np.array([0.1, -0.1, 0.0, 0.0, 1.0, 0.0, 0.0]), 0.0, np.zeros(7), np.ones(7), "good")
    embedder = CountingEmbedder()
    router = Router(make_policy("stacked", RouterFile(stacked=scorer, stacked_threshold=threshold)))
    client = DeviceClient(tiny_lm, router, f"http://127.0.0.1:{closed_port()}", max_new_tokens=4, embedder=embedder)
    ans = client.ask([{"role": "user", "content": "how do I sort a list"}])
    assert embedder.calls == 1 and [d["action"] for d in ans.decisions][0] == "run_p"
    assert ans.tier == "p" and "stacked predicted P quality" in ans.reason
    assert ans.decisions[1]["action"] == ("answer_p" if threshold == 0.0 else "escalate")
    assert ans.degraded is (threshold == 1.0)  # escalated to a closed port: P's answer, marked degraded


def test_gateway_client_seals_and_reports_errors_with_one_type(sealing_gateway):
    """pet.client.GatewayClient (the CLI's and personalisation's client too): sealed when keys are published,
    and every failure is one GatewayError with status and code."""
    from pet.client import GatewayError

    url, seen = sealing_gateway
    out, sealed = GatewayClient(url, "bob").call("/v1/generate", {"prompt": "hi", "request_id": "r1"})
    assert sealed and out["text"] == "from the cloud" and seen[-1]["prompt"] == "hi"
    with pytest.raises(GatewayError) as err:
        GatewayClient(url, "bob", encrypt="never").generate({"prompt": "hi"})
    assert (err.value.status, err.value.code) == (400, "plaintext_refused") and "HTTP 400" in str(err.value)
    with pytest.raises(GatewayError) as err:
        GatewayClient(f"http://127.0.0.1:{closed_port()}", connect_timeout_s=1.0).status()
    assert err.value.status is None and err.value.code == "unreachable"
