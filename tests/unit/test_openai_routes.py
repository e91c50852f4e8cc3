"""The OpenAI-compatible routes on a FastAPI app with a fake gateway (no Ray): the official ``openai`` client
reads the shapes, streaming, errors in OpenAI's shape, metering per request id, and the plaintext rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from pet.config.schema import PetConfig
from pet.ledger import Ledger, Meter
from pet.serve.guard import Admission
from pet.serve.routes import add_routes
from pet.serve.routes._openai_shapes import StopScanner
from pet.serve.routes.openai import OpenAIRoutes
from pet.serve.schemas import ApiError
from tests.conftest import build_tiny_tokenizer

ANSWER = "Paris is the capital of France. It is on the Seine."


class FakeStream:
    """What ``handle.options(stream=True).generate_stream.remote(payload)`` returns: async pieces + cancel()."""

    def __init__(self, pieces: list[str], fail_after: int | None = None):
        self.pieces, self.fail_after, self.i, self.cancelled = pieces, fail_after, 0, False

    def __aiter__(self):
        return self

    async def __anext__(self) -> str:
        if self.fail_after is not None and self.i >= self.fail_after:
            raise RuntimeError("replica died")
        if self.i >= len(self.pieces):
            raise StopAsyncIteration
        self.i += 1
        return self.pieces[self.i - 1]

    def cancel(self) -> None:
        self.cancelled = True


class BackPressureError(RuntimeError):
    """Same name as ray.serve.exceptions.BackPressureError (the route matches it by name)."""


class FakeTraditional:
    def __init__(self) -> None:
        self.payloads: list[dict] = []
        self.streams: list[FakeStream] = []
        self.fail_after: int | None = None
        self.generate_stream = self

    def options(self, stream: bool = False) -> FakeTraditional:
        assert stream is True
        return self

    def remote(self, payload: dict) -> FakeStream:
        self.payloads.append(payload)
        self.streams.append(FakeStream(["Paris", " is", " the", " capital", ".", " STOP", " more"], self.fail_after))
        return self.streams[-1]


class FakeGateway(OpenAIRoutes):
    """The gateway's OpenAI routes over a stand-in for the rest: cfg, generate(payload), domains(refresh),
    traditional, admission and a meter (built from the config on first use)."""

    def __init__(self, cfg: PetConfig):
        self.cfg = cfg
        self._meter: Meter | None = None
        self.admission = Admission(cfg.serve.gateway.max_inflight, cfg.serve.gateway.retry_after_s)
        self.traditional = FakeTraditional()
        self.payloads: list[dict] = []
        self.raise_error: Exception | None = None

    @property
    def meter(self) -> Meter:
        if self._meter is None:
            self._meter = Meter.from_config(self.cfg)
        return self._meter

    def domains(self, refresh: bool = False) -> list[str]:
        return ["law"]

    async def generate(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.payloads.append(payload)
        if self.raise_error is not None:
            raise self.raise_error
        tier = "e" if payload["tier"] == "e" else "t"
        return {"request_id": payload["request_id"], "text": ANSWER, "tier": tier,
                "domain": payload.get("domain"), "fallback": False, "fallback_reason": None,
                "escalation": ["e"] if tier == "e" else ["e", "t"] if payload["tier"] == "auto" else ["t"],
                "signals": {"mean_logprob": -0.5, "min_token_prob": 0.1, "mean_entropy": 1.0},
                "usage": {"prompt_tokens": 20, "completion_tokens": 12, "seconds": 0.1},
                "finish_reason": "stop", "latency_ms": 5.0}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tok")
    build_tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def env(tmp_path: Path, tokenizer_dir: Path):
    cfg = PetConfig.model_validate({
        "traditional": {"model": str(tokenizer_dir)},
        "crypto": {"allow_plaintext": True},
        "ledger": {"path": str(tmp_path / "ledger.sqlite"), "prices": {"p": 0, "e": 0.5, "t": 1.0}},
    })
    gw = FakeGateway(cfg)
    app = FastAPI()
    add_routes(app, gw)
    http = TestClient(app)
    client = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=http, max_retries=0)
    return gw, http, client, Ledger(tmp_path / "ledger.sqlite")


MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]


def test_openai_client_non_streaming_is_answered_and_metered(env):
    gw, _, client, led = env
    resp = client.chat.completions.create(model="pet-auto", messages=MSGS, max_tokens=20, user="alice")
    assert resp.object == "chat.completion" and resp.choices[0].message.content == ANSWER
    assert resp.choices[0].finish_reason == "stop"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (20, 12, 32)
    assert resp.pet["tier"] == "t" and resp.pet["escalation"] == ["e", "t"] and resp.pet["metered"] is True
    sent = gw.payloads[0]
    assert sent["tier"] == "auto" and sent["max_new_tokens"] == 20 and sent["user"] == "alice"
    assert sent["messages"] == MSGS and sent["request_id"] == resp.pet["request_id"]
    [row] = led.summary()
    assert (row.user, row.tier, row.requests, row.tokens) == ("alice", "t", 1, 32)
    assert row.cost == pytest.approx(0.032)


def test_expert_model_and_text_parts(env):
    gw, _, client, led = env
    msgs = [{"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Is a "}, {"type": "text", "text": "tort bad?"}]}]
    resp = client.chat.completions.create(model="pet-e-law", messages=msgs, extra_headers={"X-Pet-User": "bob"})
    assert resp.pet["tier"] == "e" and resp.pet["domain"] == "law"
    assert gw.payloads[0]["messages"] == [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "Is a tort bad?"}]
    assert [(r.user, r.tier) for r in led.summary()] == [("bob", "e")]


def test_retried_request_id_is_billed_once(env):
    _, _, client, led = env
    for _ in range(3):
        resp = client.chat.completions.create(model="pet-t", messages=MSGS, extra_headers={"X-Request-Id": "r-77"})
        assert resp.id == "chatcmpl-r-77"
    assert resp.pet["metered"] is False  # the retries were recognised
    assert led.counts().usage == 1 and led.summary()[0].requests == 1


def test_streaming_pet_t_uses_generate_stream_and_stops_at_stop_string(env):
    gw, _, client, led = env
    stream = client.chat.completions.create(model="pet-t", messages=MSGS, stream=True, stop=[" STOP"],
                                            stream_options={"include_usage": True}, user="carol",
                                            extra_headers={"X-Request-Id": "s-1"})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" and c.id == "chatcmpl-s-1" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Paris is the capital."
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 3  # really incremental
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals[-1].choices[0].finish_reason == "stop" and finals[-1].pet["tier"] == "t"
    assert gw.traditional.streams[0].cancelled  # T is told to stop once the stop string is seen
    assert gw.traditional.payloads[0]["prompt"] == MSGS
    tok = build_tiny_tokenizer()
    from pet.models.lm import render_prompt

    want_prompt = len(tok(render_prompt(tok, MSGS), add_special_tokens=False)["input_ids"])
    want_completion = len(tok(text, add_special_tokens=False)["input_ids"])
    assert chunks[-1].usage.prompt_tokens == want_prompt
    assert chunks[-1].usage.completion_tokens == want_completion
    [row] = led.summary()
    assert (row.user, row.tier, row.prompt_tokens, row.completion_tokens) == ("carol", "t", want_prompt,
                                                                                 want_completion)


def test_streaming_other_models_sends_the_finished_answer_in_chunks(env):
    _, http, _, led = env
    with http.stream("POST", "/v1/chat/completions",
                     json={"model": "pet-e-law", "messages": MSGS, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    objs = [json.loads(line[len("data: "):]) for line in lines[:-1]]
    assert objs[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(o["choices"][0]["delta"].get("content", "") for o in objs) == ANSWER
    assert len(objs) > 5 and objs[-1]["pet"]["streamed"] == "finished_answer"
    assert led.counts().usage == 1


def test_stream_start_failures_get_status_codes(env):
    gw, http, _, _ = env
    gw.traditional.fail_after = 0
    body = {"model": "pet-t", "messages": MSGS, "stream": True}
    assert error_of(http, body, 502)["code"] == "stream_failed"

    class FullQueue(FakeStream):
        async def __anext__(self) -> str:
            raise BackPressureError("queue full")

    gw.traditional.remote = lambda payload: FullQueue([])
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded" and r.headers["retry-after"] == "1"


def test_mid_stream_failure_sends_an_openai_error_event(env):
    gw, http, _, _ = env
    gw.traditional.fail_after = 2
    with http.stream("POST", "/v1/chat/completions", json={"model": "pet-t", "messages": MSGS, "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line]
    last = json.loads(lines[-1][len("data: "):])
    assert last["error"]["type"] == "server_error" and last["error"]["code"] == "stream_failed"


def error_of(http: TestClient, body: Any, status: int, **kw: Any) -> dict:
    r = http.post("/v1/chat/completions", **({"content": body} if isinstance(body, str) else {"json": body}), **kw)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


def test_errors_use_openai_shape_and_status(env):
    gw, http, client, _ = env
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="gpt-4o", messages=MSGS)
    assert exc.value.code == "model_not_found"
    assert error_of(http, {"model": "pet-e-medicine", "messages": MSGS}, 404)["param"] == "model"
    assert error_of(http, "{not json", 400)["code"] == "invalid_json"
    secret = "my secret prompt"
    err = error_of(http, {"model": "pet-t", "messages": [{"role": "user"}], "temperature": secret}, 400)
    assert "temperature" in err["message"] and secret not in err["message"]
    assert error_of(http, {"model": "pet-t", "messages": MSGS, "n": 2}, 400)["param"] == "n"
    assert error_of(http, {"model": "pet-t", "messages": MSGS, "tools": [{"type": "function"}]}, 400)["param"] \
        == "tools"
    img = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
    assert error_of(http, {"model": "pet-t", "messages": img}, 400)["param"] == "messages[0].content"
    assert error_of(http, {"model": "pet-t", "messages": [{"role": "tool", "content": "x"}]}, 400)["code"] \
        == "invalid_value"
    gw.raise_error = ApiError(503, "overloaded", "the traditional model's queue is full; retry later",
                              {"Retry-After": "1"})
    r = http.post("/v1/chat/completions", json={"model": "pet-t", "messages": MSGS})
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and r.json()["error"]["type"] == "server_error"
    gw.raise_error = ApiError(422, "invalid_request", "max_new_tokens: must be <= 256")
    assert error_of(http, {"model": "pet-t", "messages": MSGS}, 400)["type"] == "invalid_request_error"
    gw.raise_error = ApiError(413, "prompt_too_long", "too long")
    assert error_of(http, {"model": "pet-t", "messages": MSGS}, 413)["code"] == "context_length_exceeded"
    gw.raise_error = ZeroDivisionError("secret text")
    err = error_of(http, {"model": "pet-t", "messages": MSGS}, 500)
    assert err["type"] == "server_error" and "secret" not in err["message"]


def test_streaming_limits_are_checked_before_the_stream_starts(env):
    gw, http, _, _ = env
    big = [{"role": "user", "content": "x" * (gw.cfg.serve.gateway.max_prompt_chars + 1)}]
    assert error_of(http, {"model": "pet-t", "messages": big, "stream": True}, 413)["param"] == "messages"
    assert error_of(http, {"model": "pet-t", "messages": MSGS, "stream": True, "max_tokens": 100000}, 400)[
        "param"] == "max_tokens"
    assert gw.traditional.payloads == []


def test_plaintext_off_gives_403_and_a_gateway_refusal_is_503(env, tokenizer_dir):
    gw, http, client, led = env
    gw.cfg.crypto.allow_plaintext = False
    with pytest.raises(openai.PermissionDeniedError) as exc:
        client.chat.completions.create(model="pet-t", messages=MSGS)
    assert exc.value.code == "plaintext_disabled"
    assert http.get("/v1/models").status_code == 403
    assert gw.payloads == [] and led.counts().usage == 0

    gw.cfg.crypto.allow_plaintext = True
    gw.raise_error = ApiError(503, "starting", "the gateway is starting", {"Retry-After": "1"})
    r = http.post("/v1/chat/completions", json={"model": "pet-auto", "messages": MSGS})
    assert r.status_code == 503 and r.json()["error"]["code"] == "starting"


def test_models_list_and_retrieve(env):
    _, http, client, _ = env
    assert [m.id for m in client.models.list()] == ["pet-auto", "pet-t", "pet-e-law"]
    assert client.models.retrieve("pet-e-law").owned_by == "pet"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("pet-e-nope")


def test_a_broken_ledger_never_fails_the_request(env, tmp_path: Path):
    gw, _, client, _ = env
    bad = tmp_path / "corrupt.sqlite"
    bad.write_bytes(b"definitely not sqlite" * 20)
    gw.cfg.ledger.path = str(bad)
    key = {"operation": "record_usage"}
    before = REGISTRY.get_sample_value("pet_ledger_failures_total", key) or 0.0
    resp = client.chat.completions.create(model="pet-t", messages=MSGS)
    assert resp.choices[0].message.content == ANSWER and resp.pet["metered"] is None
    chunks = list(client.chat.completions.create(model="pet-t", messages=MSGS, stream=True))
    assert chunks[-1].pet["metered"] is None
    assert REGISTRY.get_sample_value("pet_ledger_failures_total", key) - before == 2


@pytest.mark.parametrize("stops", [None, ["STOP"], ["xx", "ST"], ["never"]])
def test_stop_scanner_matches_a_plain_cut_for_every_split(stops):
    text = "abc STOP def xx ghi"
    cuts = [text.find(s) for s in stops or [] if s in text]
    want = text[:min(cuts)] if cuts else text
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            scan = StopScanner(stops)
            got = "".join(scan.feed(p) for p in (text[:i], text[i:j], text[j:])) + scan.flush()
            assert got == want and scan.stopped == bool(cuts)
