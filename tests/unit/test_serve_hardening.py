"""Hostile traffic and faults without Ray: the gateway's real routes on a TestClient over a GatewayReplica with
in-process tier handles. Each test names the failure class of issue 22 it guards (the real graph is covered in
tests/integration/test_serve_chaos.py)."""

from __future__ import annotations

import asyncio
import json
import stat
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from pet.config.loader import parse_config
from pet.serve.dispatch import Dispatcher
from pet.serve.gateway import GatewayReplica
from pet.serve.guard import Admission, BodyGuard, loads_strict
from pet.serve.schemas import ApiError, parse_generate

SIGNALS = {"mean_logprob": -0.1, "min_token_prob": 0.5, "mean_entropy": 1.0}


def _answer(text: str = "ok") -> dict:
    return {"text": text, "signals": SIGNALS, "finish_reason": "stop",
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "seconds": 0.01}}


class _Resp:
    def __init__(self, coro):
        self.coro = coro

    def __await__(self):
        return self.coro.__await__()

    def cancel(self):
        self.coro.close()


class _Method:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def remote(self, *args):
        self.calls += 1
        return _Resp(self.fn(*args))


class _Handle:
    """generate.remote(payload) / stats.remote() like a DeploymentHandle, backed by coroutines."""

    def __init__(self, fn, stats=None):
        self.generate = _Method(fn)

        async def ok():
            return {"replica": "r1", "loaded_adapters": []}

        self.stats = _Method(stats or ok)

    def options(self, **kw):
        return self


def _died():
    from ray.exceptions import ActorDiedError

    return ActorDiedError()


# -- 1, 8: per-item validation and strict types -------------------------------------------------------------------


def test_lone_surrogates_and_wrong_types_are_refused_by_the_request_schema():
    bad = [{"prompt": "a\ud800"}, {"messages": [{"role": "user", "content": "x\udfff"}]},
           {"prompt": "q", "max_new_tokens": "4"}, {"prompt": "q", "max_new_tokens": True},
           {"prompt": "q", "temperature": True}, {"prompt": "q", "top_p": "1"}, {"prompt": 5}]
    for body in bad:
        with pytest.raises(ApiError) as err:
            parse_generate(body)
        assert err.value.status == 422 and "\ud800" not in err.value.message
    assert parse_generate({"prompt": "q", "max_new_tokens": 4, "temperature": 0}).temperature == 0.0


def test_openai_request_types_are_strict():
    from pet.serve.routes._openai_shapes import OpenAIError, parse_chat

    msgs = [{"role": "user", "content": "hi"}]
    for extra in ({"stream": "yes"}, {"max_tokens": "4"}, {"temperature": True}, {"n": 1.0}):
        with pytest.raises(OpenAIError) as err:
            parse_chat({"model": "pet-t", "messages": msgs, **extra})
        assert err.value.status == 400
    assert parse_chat({"model": "pet-t", "messages": msgs, "stream": True}).stream is True


def test_a_prompt_the_tokenizer_cannot_take_fails_alone_in_its_batch(tiny_lm):
    from pet.models.engine import check_payload, run_batch

    good = {"prompt": "hello there", "max_new_tokens": 2, "temperature": 0.0, "top_p": 1.0}
    bad = {**good, "prompt": [{"role": "user", "content": "x\ud800"}]}
    assert check_payload(tiny_lm, good) is None
    err = check_payload(tiny_lm, bad)
    assert err is not None and "not valid Unicode" in err["error"] and "\ud800" not in err["error"]
    out = run_batch(tiny_lm, [good, bad, good])  # even inside a batch, only the bad one fails
    assert "text" in out[0] and "text" in out[2] and "error" in out[1]


# -- 3: structural limits -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw,status,code", [
    (b"[" * 1000 + b"]" * 1000, 400, "too_deep"),
    (b"[" * 40 + b"]" * 40, 400, "too_deep"),
    (b'{"n": ' + b"9" * 5000 + b"}", 400, "number_too_long"),
    (b'{"a": 1, "a": 2}', 422, "duplicate_key"),
    (b'{"x": NaN}', 400, "invalid_json"),
    (b'{"x": "\\ud800"}', 400, "invalid_text"),
    (b"[" + b"1," * 20000 + b"1]", 400, "too_many_values"),
    (b'{"a": ', 400, "invalid_json"),
    (b"  ", 400, "invalid_json"),
    (b"\xff\xfe", 400, "invalid_json"),
])
def test_hostile_json_is_a_4xx_never_a_crash(raw, status, code):
    with pytest.raises(ApiError) as err:
        loads_strict(raw)
    assert (err.value.status, err.value.code) == (status, code)


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                    lambda kids: st.lists(kids) | st.dictionaries(st.text(), kids), max_leaves=30))
def test_any_json_value_decodes_or_is_refused_with_api_error(value):
    raw = json.dumps(value).encode()
    try:
        assert loads_strict(raw) == json.loads(raw)
    except ApiError as err:
        assert 400 <= err.status < 500


# -- 2: stalled and oversized uploads never reach the app ------------------------------------------------------


def _run_asgi(app, scope, messages, stall=False):
    sent = []

    async def receive():
        if messages:
            return messages.pop(0)
        if stall:
            await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(msg):
        sent.append(msg)

    asyncio.run(app(scope, receive, send))
    return sent


def _scope(method="POST", headers=()):
    return {"type": "http", "method": method, "path": "/v1/generate", "raw_path": b"/v1/generate",
            "query_string": b"", "headers": list(headers)}


def test_body_guard_times_out_stalled_uploads_and_caps_sizes():
    seen = []

    async def inner(scope, receive, send):
        seen.append((await receive())["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = BodyGuard(inner, body_timeout_s=0.2, max_body_bytes=100, max_header_bytes=1024)
    out = _run_asgi(guard, _scope(), [{"type": "http.request", "body": b'{"a"', "more_body": True}], stall=True)
    assert out[0]["status"] == 408 and json.loads(out[1]["body"])["error"]["code"] == "body_timeout"
    out = _run_asgi(guard, _scope(headers=[(b"x-big", b"x" * 2000)]), [])
    assert out[0]["status"] == 431
    out = _run_asgi(guard, _scope(headers=[(b"content-length", b"5000")]), [])
    assert out[0]["status"] == 413
    chunks = [{"type": "http.request", "body": b"x" * 60, "more_body": True}] * 2
    assert _run_asgi(guard, _scope(), chunks)[0]["status"] == 413
    assert not seen  # nothing above reached the application
    parts = [{"type": "http.request", "body": b'{"a":', "more_body": True},
             {"type": "http.request", "body": b" 1}", "more_body": False}]
    assert _run_asgi(guard, _scope(), parts)[0]["status"] == 200 and seen == [b'{"a": 1}']
    assert _run_asgi(guard, _scope(), [{"type": "http.disconnect"}]) == []  # client gone: nothing sent
    assert _run_asgi(guard, _scope(method="GET"), [{"type": "http.request", "body": b""}])[0]["status"] == 200


# -- the real routes over a GatewayReplica ---------------------------------------------------------------------------


class _Gateway(GatewayReplica):
    """The gateway replica with in-process tier handles, no ledger and a given GatewayCrypto (None: no keys)."""

    def __init__(self, cfg, t, e, crypto=None):
        Dispatcher.__init__(self, cfg, t, e)
        self.admission = Admission(cfg.serve.gateway.max_inflight, cfg.serve.gateway.retry_after_s)
        self._crypto = crypto
        self.augmenter = None

        class _Meter:
            async def arecord_result(self, *a):
                return True

        self.meter = _Meter()

    def crypto(self):
        return self._crypto

    def in_background(self, coro):
        coro.close()


@pytest.fixture
def routes(tmp_path):
    """(TestClient, gateway) on the replica's real FastAPI app."""
    def make(t=None, e=None, **cfg_over):
        cfg = parse_config({"crypto": {"allow_plaintext": True, "keys_dir": str(tmp_path / "keys")},
                            "expert": {"registry_dir": str(tmp_path / "reg"), "timeout_s": 2.0},
                            "serve": {"gateway": {"max_inflight": 2, "request_timeout_s": 5.0,
                                                  "deployment": {"max_ongoing_requests": 8}, **cfg_over}}})
        gw = _Gateway(cfg, t or _Handle(lambda p: _ok()), e or _Handle(lambda p: _ok()))
        return TestClient(gw.api(), raise_server_exceptions=False), gw

    return make


async def _ok(text="ok"):
    return _answer(text)


def test_bad_bodies_are_json_4xx_on_the_real_route(routes):
    client, _ = routes()
    cases = [(b"[" * 5000 + b"]" * 5000, 400), (b'{"prompt": "q", "max_new_tokens": ' + b"1" * 3000 + b"}", 400),
             (b'{"prompt": "q", "prompt": "r"}', 422), (b'{"prompt": "q", "max_new_tokens": "4"}', 422),
             (b'{"messages": [{"role": "user", "content": "\\ud800"}]}', 400)]
    for raw, status in cases:
        r = client.post("/v1/generate", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == status and r.json()["error"]["status"] == status, (raw[:40], r.text)


def test_over_capacity_is_a_json_503_with_retry_after(routes):
    gate = threading.Event()

    async def slow(payload):
        while not gate.is_set():
            await asyncio.sleep(0.01)
        return _answer()

    client, gw = routes(t=_Handle(slow), retry_after_s=7)
    results = []
    threads = [threading.Thread(target=lambda: results.append(client.post("/v1/generate", json={
        "prompt": "q", "tier": "t"}))) for _ in range(2)]
    for th in threads:
        th.start()
    while gw.admission.active < 2:
        threading.Event().wait(0.01)
    r = client.post("/v1/generate", json={"prompt": "q", "tier": "t"})
    assert r.status_code == 503 and r.headers["retry-after"] == "7" and r.json()["error"]["code"] == "overloaded"
    assert client.get("/healthz").status_code == 200  # cheap routes are not admitted against max_inflight
    gate.set()
    for th in threads:
        th.join()
    assert [x.status_code for x in results] == [200, 200] and gw.admission.active == 0


# -- 5: replica faults ---------------------------------------------------------------------------------------------


def test_t_replica_death_is_retried_once_then_503_never_500(routes):
    attempts = []

    async def dies_once(payload):
        attempts.append(1)
        if len(attempts) == 1:
            raise _died()
        return _answer("after retry")

    client, _ = routes(t=_Handle(dies_once))
    r = client.post("/v1/generate", json={"prompt": "q", "tier": "t"})
    assert r.status_code == 200 and r.json()["text"] == "after retry" and len(attempts) == 2

    async def always_dies(payload):
        raise _died()

    client, _ = routes(t=_Handle(always_dies), retry_after_s=3)
    r = client.post("/v1/generate", json={"prompt": "q", "tier": "t"})
    assert r.status_code == 503 and r.headers["retry-after"] == "3"
    assert r.json()["error"]["code"] == "replica_unavailable"

    async def broken(payload):
        raise RuntimeError("secret prompt text")

    client, _ = routes(t=_Handle(broken))
    r = client.post("/v1/generate", json={"prompt": "q", "tier": "t"})
    assert r.status_code == 502 and "secret" not in r.text


def test_while_the_expert_restarts_e_falls_back_to_t_at_once(tmp_path, monkeypatch):
    state = {"alive": False}

    async def expert(payload):
        if not state["alive"]:
            raise _died()
        return {**_answer("from E"), "replica": "r2", "loaded_adapters": 1}

    async def stats():
        if not state["alive"]:
            await asyncio.sleep(10)  # a call to a restarting deployment waits for a replica
        return {"replica": "r2"}

    cfg = parse_config({"expert": {"registry_dir": str(tmp_path), "timeout_s": 30.0}})
    e = _Handle(expert, stats)
    tc = Dispatcher(cfg, _Handle(lambda p: _ok("from T")), e)
    monkeypatch.setattr(tc, "domains", lambda refresh=False: ["python"])
    req = {"prompt": "q", "tier": "e", "domain": "python"}

    async def scenario():
        first = await tc.generate(req)  # in flight when the replica died
        calls = e.generate.calls
        second = await tc.generate(req)  # while it restarts: no call into E at all
        assert e.generate.calls == calls and tc.expert_down()
        state["alive"] = True
        for _ in range(100):
            if not tc.expert_down():
                break
            await asyncio.sleep(0.05)
        third = await tc.generate(req)
        return first, second, third

    first, second, third = asyncio.run(scenario())
    assert first["tier"] == "t" and first["fallback_reason"] == "replica_died"
    assert second["tier"] == "t" and second["fallback"] and second["fallback_reason"] == "expert_unavailable"
    assert third["tier"] == "e" and third["text"] == "from E"


# -- 6: registration during routing --------------------------------------------------------------------------------


def test_classifier_readers_never_see_half_a_registration():
    from pet.router.domains import DomainClassifier

    rng = np.random.default_rng(0)
    small = {"a": rng.normal(size=(4, 16))}
    big = {d: rng.normal(size=(4, 16)) for d in "abcdefgh"}
    clf = DomainClassifier(small, floor=0.0)
    errors, stop = [], threading.Event()

    def read():
        while not stop.is_set():
            try:
                clf.classify_embedding(rng.normal(size=16))
            except Exception as err:  # the old zip() race raised ValueError here
                errors.append(err)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for th in readers:
        th.start()
    for i in range(300):
        clf._set(big if i % 2 else small)
    stop.set()
    for th in readers:
        th.join()
    assert not errors


# -- 7: errors to an opened envelope are sealed ------------------------------------------------------------------


def test_errors_to_an_opened_envelope_come_back_sealed_and_quote_nothing(routes, tmp_path):
    from pet.security.envelope import DeviceCrypto
    from pet.security.gateway import GatewayCrypto
    from pet.security.keys import KeyRing

    ring = KeyRing(tmp_path / "keys")
    rec = ring.init()
    client, gw = routes()
    gw._crypto = GatewayCrypto(ring, rec.suite)
    device = DeviceCrypto(gw._crypto.public_keys(), "alice")
    secret = "zebra-domain-secret"
    for payload, status in [({"prompt": "q", "tier": "e", "domain": secret}, 404),
                            ({"prompt": "q", "max_new_tokens": "4", "top_p": secret}, 422)]:
        env, pending = device.seal(payload)
        r = client.post("/v1/generate", json={"pet_envelope": env})
        assert r.status_code == status and set(r.json()) == {"pet_envelope"} and secret not in r.text
        err = pending.open(r.json()["pet_envelope"])["error"]
        assert err["status"] == status and secret not in json.dumps(err)


# -- 9: server-side stores are private ------------------------------------------------------------------------------


def test_ledger_and_replay_store_are_0600_in_a_0700_folder(tmp_path):
    from pet.ledger.sqlite import SqliteLedgerStore
    from pet.security.replay import SqliteReplayGuard

    SqliteLedgerStore(tmp_path / "state" / "ledger.sqlite")
    SqliteReplayGuard(tmp_path / "state2" / "replay.sqlite", window_s=60)
    for folder, name in (("state", "ledger.sqlite"), ("state2", "replay.sqlite")):
        assert stat.S_IMODE((tmp_path / folder).stat().st_mode) == 0o700 and (tmp_path / folder / name).exists()
        for f in (tmp_path / folder).iterdir():  # the database and SQLite's -wal / -shm beside it
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f.name
    old = tmp_path / "old.sqlite"
    old.write_bytes(b"")
    old.chmod(0o644)
    SqliteLedgerStore(old)  # a store created world-readable by an older pet is tightened
    assert stat.S_IMODE(old.stat().st_mode) == 0o600
