"""The gateway HTTP API on the real graph: endpoints, tiers, error codes, metrics, encryption."""

from __future__ import annotations

import concurrent.futures as cf

import httpx
import pytest

pytestmark = pytest.mark.integration


def post(url: str, body, timeout: float = 120.0) -> httpx.Response:
    return httpx.post(f"{url}/v1/generate", json=body, timeout=timeout)


def test_healthz_and_experts(serve_url):
    r = httpx.get(f"{serve_url}/healthz", timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "ok"
    r = httpx.get(f"{serve_url}/v1/experts", timeout=30)
    assert r.status_code == 200
    names = [e["name"] for e in r.json()["experts"]]
    assert {"broken", "python"} <= set(names)  # other modules may register more


def test_generate_t(serve_url):
    r = post(serve_url, {"prompt": "What is the capital of France?", "tier": "t", "max_new_tokens": 6,
                         "request_id": "req-t-1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tier"] == "t" and body["request_id"] == "req-t-1" and body["fallback"] is False
    assert body["escalation"] == ["t"] and body["domain"] is None
    assert body["text"].strip()
    assert 0 < body["usage"]["completion_tokens"] <= 6 and body["usage"]["prompt_tokens"] > 5
    assert body["signals"]["mean_logprob"] <= 0 and 0 < body["signals"]["min_token_prob"] <= 1
    assert body["latency_ms"] > 0
    # Server-Timing splits the gateway's own time from the T call it awaited
    timing = dict(part.strip().split(";dur=") for part in r.headers["Server-Timing"].split(","))
    own, upstream, wait = float(timing["gateway"]), float(timing["upstream"]), float(timing["body"])
    assert upstream > own >= 0 and wait >= 0 and upstream <= body["latency_ms"] + 1.0
    assert 0 < float(timing["tier"]) < upstream  # T's own time, inside the gateway's wait for it
    assert "replica_ms" not in body


def test_direct_ingress_serves_the_same_api(serve_url, serve_direct_url):
    """serve.http.direct_port: the Gateway replica answers HTTP itself (no proxy hop, no body round trip)."""
    assert serve_direct_url and serve_direct_url != serve_url
    r = post(serve_direct_url, {"prompt": "Say yes.", "tier": "t", "max_new_tokens": 2})
    assert r.status_code == 200, r.text
    assert r.json()["tier"] == "t" and r.json()["usage"]["completion_tokens"] >= 1
    assert "upstream;dur=" in r.headers["Server-Timing"]
    bad = httpx.post(f"{serve_direct_url}/v1/generate", content=b"{not json", timeout=30,
                     headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"


def test_generate_e_with_messages(serve_url):
    r = post(serve_url, {"messages": [{"role": "user", "content": "How do I sort a list in Python?"}],
                         "tier": "e", "domain": "python", "max_new_tokens": 6})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tier"] == "e" and body["domain"] == "python" and body["fallback"] is False
    assert body["escalation"] == ["e"] and body["text"].strip()


def test_auto_routes_by_domain(serve_url):
    r = post(serve_url, {"prompt": "How do I read a text file line by line in Python?", "max_new_tokens": 4})
    assert r.status_code == 200, r.text
    assert r.json()["escalation"][0] == "e" and r.json()["domain"] == "python"
    r = post(serve_url, {"prompt": "Who painted the Mona Lisa?", "max_new_tokens": 4})
    assert r.status_code == 200 and r.json()["tier"] == "t" and r.json()["escalation"] == ["t"]


def test_concurrent_requests_are_batched_and_all_answered(serve_url):
    prompts = [f"Count to {i}." for i in range(8)]
    with cf.ThreadPoolExecutor(8) as ex:
        rs = list(ex.map(lambda p: post(serve_url, {"prompt": p, "tier": "t", "max_new_tokens": 4}), prompts))
    assert [r.status_code for r in rs] == [200] * 8
    assert len({r.json()["request_id"] for r in rs}) == 8


@pytest.mark.parametrize("raw,status", [
    (b"{not json", 400),
    (b"", 400),
    (b"[1, 2]", 422),
    (b'{"prompt": "hi", "bogus": 1}', 422),
    (b'{"prompt": "hi", "tier": "x"}', 422),
    (b'{"prompt": "hi", "messages": [{"role": "user", "content": "x"}]}', 422),
    (b'{"messages": [{"role": "robot", "content": "x"}]}', 422),
    (b'{"prompt": "hi", "max_new_tokens": 0}', 422),
    (b'{"prompt": "hi", "max_new_tokens": 100000}', 422),
    (b'{"prompt": "hi", "temperature": "hot"}', 422),
])
def test_bad_input_gets_json_4xx(serve_url, raw, status):
    r = httpx.post(f"{serve_url}/v1/generate", content=raw, headers={"content-type": "application/json"},
                   timeout=30)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["status"] == status and err["message"]


def test_error_messages_never_echo_the_prompt(serve_url):
    secret = "my-secret-diagnosis-XYZ"
    r = post(serve_url, {"prompt": secret, "temperature": secret})
    assert r.status_code == 422 and secret not in r.text


def test_prompt_too_long_is_413(serve_url, serve_config):
    r = post(serve_url, {"prompt": "a" * (serve_config.serve.gateway.max_prompt_chars + 1), "tier": "t"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "prompt_too_long"


def test_unknown_domain_is_404(serve_url):
    r = post(serve_url, {"prompt": "hi", "tier": "e", "domain": "astrology"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_domain"


def test_unknown_route_is_404_json(serve_url):
    r = httpx.get(f"{serve_url}/v1/nothing", timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.get(f"{serve_url}/v1/generate", timeout=30)
    assert r.status_code == 405 and r.json()["error"]["status"] == 405


def test_queue_full_is_503_with_retry_after(serve_url, serve_config):
    dep = serve_config.traditional.deployment
    n = 2 * (dep.max_ongoing_requests + dep.max_queued_requests)
    body = {"prompt": "Write a long story about a cat.", "tier": "t", "max_new_tokens": 3}
    with cf.ThreadPoolExecutor(n) as ex:
        rs = list(ex.map(lambda _: post(serve_url, body), range(n)))
    codes = [r.status_code for r in rs]
    assert set(codes) <= {200, 503}, codes
    full = [r for r in rs if r.status_code == 503]
    assert full and codes.count(200) >= dep.max_ongoing_requests
    assert all(r.headers["retry-after"] == "1" and r.json()["error"]["code"] == "overloaded" for r in full)


def test_metrics_count_requests_without_prompt_text(serve_url):
    marker = "zebra-quartz-unique-prompt"
    assert post(serve_url, {"prompt": marker, "tier": "t", "max_new_tokens": 2}).status_code == 200
    text = httpx.get(f"{serve_url}/metrics", timeout=30).text
    assert 'pet_requests_total{outcome="ok",tier="t"}' in text
    assert "pet_request_latency_seconds_bucket" in text and 'pet_tokens_total{direction="out",tier="t"}' in text
    count = next(float(line.split()[-1]) for line in text.splitlines()
                 if line.startswith("pet_gateway_own_seconds_count"))
    assert count >= 1
    assert marker not in text


def test_plaintext_refused_when_not_allowed(serve_config):
    """The policy function itself (the running test graph allows plaintext)."""
    import asyncio

    from pet.serve.bodies import open_body
    from pet.serve.schemas import ApiError

    cfg = serve_config.model_copy(deep=True)
    cfg.crypto.allow_plaintext = False
    with pytest.raises(ApiError) as err:
        asyncio.run(open_body({"prompt": "hi"}, cfg, lambda: None))
    assert err.value.status == 400 and err.value.code == "plaintext_refused"


def test_encrypted_roundtrip(serve_url):
    from pet.security.envelope import DeviceCrypto

    keys = httpx.get(f"{serve_url}/v1/keys", timeout=30).json()
    dev = DeviceCrypto(keys, "user-1")
    env, pending = dev.seal({"prompt": "Say hello.", "tier": "t", "max_new_tokens": 4})
    r = httpx.post(f"{serve_url}/v1/generate", json={"pet_envelope": env}, timeout=60)
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"pet_envelope"}
    out = pending.open(r.json()["pet_envelope"])
    assert out["tier"] == "t" and out["text"]
    # A replayed envelope is refused.
    r2 = httpx.post(f"{serve_url}/v1/generate", json={"pet_envelope": env}, timeout=60)
    assert r2.status_code == 400 and r2.json()["error"]["code"] == "invalid_envelope"


def test_stream_yields_pieces_of_the_answer(serve_config):
    from ray import serve

    handle = serve.get_deployment_handle("Traditional", app_name=serve_config.serve.app_name)
    payload = {"prompt": "Name three colours.", "max_new_tokens": 8, "temperature": 0.0}
    pieces = list(handle.options(stream=True).generate_stream.remote(payload))
    assert len(pieces) >= 2 and all(isinstance(p, str) for p in pieces)
    whole = handle.generate.remote(payload).result(timeout_s=120)["text"]
    assert "".join(pieces).strip() == whole.strip()


def test_cli_ask_and_status_against_the_gateway(serve_url, capsys):
    import json

    from pet.cli.main import main

    assert main(["ask", "What is 2+2?", "--tier", "t", "--max-new-tokens", "3", "--url", serve_url, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tier"] == "t" and out["usage"]["completion_tokens"] <= 3
    assert main(["ask", "hi", "--tier", "e", "--domain", "nope", "--url", serve_url]) == 2
    assert main(["status", "--url", serve_url]) == 0
    text = capsys.readouterr().out
    assert "Traditional" in text and "ExpertPool" in text and "Gateway" in text and "python" in text
    assert "router: cascade, calibration" in text and "default_router.yaml" in text  # the router in force
