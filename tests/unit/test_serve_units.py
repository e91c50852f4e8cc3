"""Ray-free parts of pet.serve: request validation, batching of payloads, serve-config building, fallback
reasons, and the gateway's tier logic over in-process handles (the real graph is in tests/integration)."""

from __future__ import annotations

import asyncio

import pytest
import yaml

from pet.config.loader import parse_config
from pet.config.schema.tiers import GenerationDefaults
from pet.models.engine import resolve_payload, run_batch
from pet.serve.schemas import ApiError, parse_generate

# -- request validation --------------------------------------------------------------------------------------

def test_generate_request_accepts_prompt_or_messages():
    r = parse_generate({"prompt": "hi", "tier": "e", "domain": "python", "max_new_tokens": 3})
    assert r.prompt_value() == "hi" and r.tier == "e" and r.prompt_chars() == 2
    m = parse_generate({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "yo"}]})
    assert m.routing_text() == "yo" and m.prompt_chars() == 10 and m.tier == "auto"
    assert m.prompt_value()[1] == {"role": "user", "content": "yo"}


@pytest.mark.parametrize("body,needle", [
    ({}, "exactly one"),
    ({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "exactly one"),
    ({"prompt": "a", "extra": 1}, "extra: unknown field"),
    ({"prompt": "a", "tier": "p"}, "tier"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "a", "top_p": 0}, "top_p"),
    ([1], "JSON object"),
])
def test_bad_requests_are_422_naming_the_field(body, needle):
    with pytest.raises(ApiError) as err:
        parse_generate(body)
    assert err.value.status == 422 and needle in err.value.message


def test_validation_messages_never_echo_values():
    secret = "patient-record-4711"
    with pytest.raises(ApiError) as err:
        parse_generate({"prompt": secret, "max_new_tokens": secret, "messages": [{"role": secret}]})
    assert secret not in err.value.message and secret not in str(err.value.body())


# -- payloads and batching -------------------------------------------------------------------------------------

def test_resolve_payload_fills_defaults_and_clamps():
    d = GenerationDefaults(max_new_tokens=5, max_new_tokens_limit=7, temperature=0.0)
    assert resolve_payload({"prompt": "x"}, d) == {"prompt": "x", "max_new_tokens": 5, "temperature": 0.0,
                                                    "top_p": 1.0}
    assert resolve_payload({"prompt": "x", "max_new_tokens": 99, "temperature": 0.5}, d)["max_new_tokens"] == 7


def test_run_batch_groups_by_parameters_and_keeps_order(tiny_lm):
    calls = []
    real = tiny_lm.generate_batch

    def spy(prompts, **kw):
        calls.append((len(prompts), kw["max_new_tokens"]))
        return real(prompts, **kw)

    tiny_lm.generate_batch = spy
    try:
        ps = [{"prompt": f"hello {i}", "max_new_tokens": 2 + (i % 2), "temperature": 0.0, "top_p": 1.0}
              for i in range(5)]
        out = run_batch(tiny_lm, ps)
    finally:
        tiny_lm.generate_batch = real
    assert sorted(calls) == [(2, 3), (3, 2)]
    assert [r["usage"]["completion_tokens"] <= p["max_new_tokens"] for r, p in zip(out, ps, strict=True)] == [True] * 5
    alone = tiny_lm.generate("hello 3", max_new_tokens=3)
    assert out[3]["text"] == alone.text  # batching (left padding) does not change a greedy answer
    assert set(out[0]["signals"]) == {"mean_logprob", "min_token_prob", "mean_entropy"}


def test_run_batch_isolates_a_bad_prompt(tiny_lm):
    ps = [{"prompt": "fine", "max_new_tokens": 2, "temperature": 0.0, "top_p": 1.0},
          {"prompt": [{"role": "wizard", "content": "x"}], "max_new_tokens": 2, "temperature": 0.0, "top_p": 1.0}]
    out = run_batch(tiny_lm, ps)
    assert "text" in out[0] and "role" in out[1]["error"]


# -- app building --------------------------------------------------------------------------------------------

def test_serve_config_passes_rays_schema(tmp_path):
    from pet.serve.app import serve_config, validate_serve_config

    cfg = parse_config({"serve": {"http": {"port": 8123}, "app_name": "pet-x"}})
    f = tmp_path / "pet.yaml"
    f.write_text("version: 1\n")
    for data in (serve_config(cfg, f), serve_config(cfg, inline=True)):
        parsed = validate_serve_config(yaml.safe_load(yaml.safe_dump(data)))
        app = parsed.applications[0]
        assert app.name == "pet-x" and app.import_path == "pet.serve.app:app_builder"
        assert parsed.http_options.port == 8123 and parsed.http_options.host == "127.0.0.1"
    assert serve_config(cfg, f)["applications"][0]["args"] == {"config": str(f.resolve())}


def test_build_app_passes_yaml_options_unchanged():
    from pet.serve.app import app_builder, build_app

    cfg = parse_config({"traditional": {"deployment": {"num_replicas": 2, "max_queued_requests": 5,
                                                       "ray_actor_options": {"num_cpus": 0.25}}},
                        "expert": {"deployment": {"autoscaling_config": {"min_replicas": 1, "max_replicas": 3}}}})
    app = build_app(cfg)
    gw = app._bound_deployment
    assert gw.name == "Gateway"
    t, e = gw.init_args[1], gw.init_args[2]
    tc = t._bound_deployment._deployment_config
    assert t._bound_deployment.name == "Traditional" and tc.num_replicas == 2 and tc.max_queued_requests == 5
    assert t._bound_deployment.ray_actor_options["num_cpus"] == 0.25
    ac = e._bound_deployment._deployment_config.autoscaling_config
    assert ac.min_replicas == 1 and ac.max_replicas == 3
    assert tc.logging_config["enable_access_log"] is False
    with pytest.raises(ValueError, match="unknown app_builder args"):
        app_builder({"cfg": "x"})


# -- fallback reasons and tier logic -------------------------------------------------------------------------

def test_fallback_reasons_from_real_exception_types():
    from ray.exceptions import ActorDiedError
    from ray.serve.exceptions import BackPressureError

    from pet.expert.registry import CorruptAdapterError
    from pet.serve.dispatch import fallback_reason

    assert fallback_reason(TimeoutError()) == "timeout"
    assert fallback_reason(CorruptAdapterError("x")) == "corrupt_adapter"
    assert fallback_reason(BackPressureError(num_queued_requests=3, max_queued_requests=2)) == "overloaded"
    assert fallback_reason(ActorDiedError()) == "replica_died"
    assert fallback_reason(RuntimeError("boom")) == "expert_error"


class _Resp:
    def __init__(self, coro):
        self.coro = coro
        self.cancelled = False

    def __await__(self):
        return self.coro.__await__()

    def cancel(self):
        self.cancelled = True


class _Method:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, payload):
        return _Resp(self.fn(payload))


class _Handle:
    """An in-process stand-in for a DeploymentHandle (same call shape: .options(...).generate.remote(p))."""

    def __init__(self, fn):
        self.generate = _Method(fn)

    def options(self, **kw):
        return self


def _answer(text):
    async def fn(payload):
        return {"text": text, "signals": {"mean_logprob": -0.1, "min_token_prob": 0.5, "mean_entropy": 1.0},
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "seconds": 0.01}, "finish_reason": "stop"}
    return fn


def test_dispatcher_falls_back_to_t_on_expert_timeout(tmp_path, monkeypatch):
    from pet.serve.dispatch import Dispatcher

    async def slow(payload):
        await asyncio.sleep(5)

    cfg = parse_config({"expert": {"timeout_s": 0.2, "registry_dir": str(tmp_path)}})
    tc = Dispatcher(cfg, _Handle(_answer("from T")), _Handle(slow))
    monkeypatch.setattr(tc, "domains", lambda refresh=False: ["python"])
    out = asyncio.run(tc.generate({"prompt": "q", "tier": "e", "domain": "python"}))
    assert out["tier"] == "t" and out["fallback"] is True and out["fallback_reason"] == "timeout"
    assert out["escalation"] == ["e", "t"] and out["text"] == "from T" and out["domain"] == "python"
    with pytest.raises(ApiError) as err:
        asyncio.run(tc.generate({"prompt": "q", "tier": "e", "domain": "nope"}))
    assert err.value.status == 404
    with pytest.raises(ApiError) as err:
        asyncio.run(tc.generate({"prompt": "q" * 9000, "tier": "t"}))
    assert err.value.status == 413


# -- extra routes --------------------------------------------------------------------------------------------

def test_every_route_group_registers_its_routes_once():
    from fastapi import FastAPI

    from pet.serve.gateway import GatewayReplica
    from pet.serve.routes import add_routes, route, route_table

    paths = sorted(route_table(GatewayReplica).values())
    assert ("GET", "/v1/keys") in paths and ("POST", "/v1/generate") in paths and ("POST", "/v1/augment") in paths
    assert ("POST", "/v1/chat/completions") in paths and ("GET", "/v1/keys/signing") in paths
    assert len(paths) == len(set(paths))  # each route in one place

    class Twice(GatewayReplica):
        @route("GET", "/v1/keys")
        async def other_keys(self):
            return {}

    with pytest.raises(ValueError, match="GET /v1/keys"):
        add_routes(FastAPI(), Twice.__new__(Twice))


def test_request_timer_splits_own_time_from_downstream_awaits():
    """Tier-call time recorded in any coroutine of the request is subtracted; outside a request it is ignored."""
    import asyncio
    import time

    from pet.serve.metrics import RequestTimer, gateway_metrics

    async def tier_call(seconds: float) -> None:
        t0 = time.perf_counter()
        await asyncio.sleep(seconds)
        RequestTimer.add_downstream(t0, {"text": "...", "replica_ms": seconds * 1e3 - 1.0})

    async def route() -> tuple[float, float, str]:
        with RequestTimer() as timer:
            await asyncio.gather(tier_call(0.05), tier_call(0.02))  # concurrent calls: counted once
            await tier_call(0.02)
            t_body = time.perf_counter()
            await asyncio.sleep(0.005)  # waiting for the request body
            timer.body_s = time.perf_counter() - t_body
            time.sleep(0.01)  # the gateway's own work
            own, down = timer.split()
            return own, down, timer.server_timing()

    before = gateway_metrics().own._sum.get()
    own, down, header = asyncio.run(route())
    assert 0.069 <= down < 0.1 and 0.009 <= own < 0.05
    assert header.startswith("body;dur=") and ", gateway;dur=" in header and ", upstream;dur=" in header
    assert header.endswith(", tier;dur=87.000")  # the replicas' own reports: 49 + 19 + 19 ms
    assert gateway_metrics().own._sum.get() > before
    RequestTimer.add_downstream(0.0)  # no request in progress: nothing recorded, no error


def test_serve_env_follows_the_config():
    """Direct ingress and the throughput switch become the environment a local Ray starts with."""
    from pet.serve.control import base_url, env_assignments, serve_env
    from pet.serve.guard import guard_env

    cfg = parse_config({"serve": {"http": {"host": "0.0.0.0", "port": 8200, "direct_port": 9000},
                                  "route_prefix": "/pet/"}})
    guard = guard_env(cfg)  # the body guard is always part of the environment
    assert guard["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] == "pet.serve.guard:proxy_middlewares"
    env = serve_env(cfg)
    assert env == guard | {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "9000",
                           "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": "9063"}
    assert "RAY_SERVE_ENABLE_DIRECT_INGRESS=1 RAY_SERVE_DIRECT_INGRESS_MIN" in env_assignments(env)
    assert base_url(cfg) == "http://127.0.0.1:8200/pet"
    # the throughput switch alone would turn direct ingress on; a config without direct_port keeps it off
    off = parse_config({"serve": {"http": {"direct_port": None}, "throughput_optimized": True}})
    assert serve_env(off) == guard | {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}
    assert serve_env(parse_config({"serve": {"http": {"direct_port": None}}})) == guard


def test_the_proxy_hook_builds_the_guard_from_the_environment(monkeypatch):
    """What Ray's proxy and direct-ingress servers call: a BodyGuard with the config's limits."""
    from pet.serve.guard import BodyGuard, guard_env, proxy_middlewares

    cfg = parse_config({"serve": {"gateway": {"body_timeout_s": 2.5, "max_header_bytes": 4096}}})
    for k, v in guard_env(cfg).items():
        monkeypatch.setenv(k, v)
    (mw,) = proxy_middlewares()
    guard = mw.cls(lambda *a: None, *mw.args, **mw.kwargs)
    assert isinstance(guard, BodyGuard) and guard.body_timeout_s == 2.5 and guard.max_header_bytes == 4096
    with pytest.raises(Exception, match="direct_port"):
        parse_config({"serve": {"http": {"direct_port": 80}}})
