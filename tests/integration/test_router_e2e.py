"""The full P -> E -> T path against the running gateway (session serve fixture of tests/integration/conftest.py).

P is the tiny random Llama (never confident, so the cascade escalates); the gateway runs tier "auto" with
pet.router.router.Router: the domain classifier picks the `python` expert for Python questions, and the
expert's answer is judged against the E threshold of the gateway's router config -> E or T.
"""

from __future__ import annotations

import json
import urllib.request

from pet.personal.device import DeviceClient
from pet.router.policy import RouterFile, make_policy
from pet.router.router import Router

PY_QUESTION = "How do I read a file line by line in Python?"


def post(url: str, body: dict, timeout: float = 120) -> dict:
    req = urllib.request.Request(url + "/v1/generate", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def test_p_e_t_path_through_the_gateway(serve_url, serve_config, tiny_lm):
    # Warm up: the first auto request loads the embedder, the classifier and the adapter (slow on busy cores).
    post(serve_url, {"prompt": PY_QUESTION, "tier": "auto", "max_new_tokens": 2}, timeout=300)
    client = DeviceClient(tiny_lm, Router(make_policy("cascade", RouterFile(p_threshold=1.0))), serve_url,
                          user_id="router-e2e", connect_timeout_s=5, read_timeout_s=120, max_new_tokens=8)
    ans = client.ask(PY_QUESTION)
    assert not ans.degraded, ans.reason
    assert ans.encrypted  # the gateway publishes keys, so the prompt went sealed with HPKE
    assert ans.escalation[:2] == ["p", "e"] and ans.decisions[-1]["action"] == "escalate"
    # What the gateway should have decided about the expert, recomputed here with the same router config.
    expert = post(serve_url, {"prompt": PY_QUESTION, "tier": "e", "domain": "python", "max_new_tokens": 8})
    keep = Router.from_config(serve_config, None).expert_good_enough(expert["signals"])
    if keep:
        assert (ans.tier, ans.domain, ans.escalation) == ("e", "python", ["p", "e"])
    else:
        assert (ans.tier, ans.escalation) == ("t", ["p", "e", "t"])
    assert ans.text.strip() and f"answered by {ans.tier.upper()}" in ans.reason

    general = client.ask("Who painted the Mona Lisa?")
    assert (general.tier, general.escalation, general.domain) == ("t", ["p", "t"], None)


def test_confident_p_stays_on_device_with_gateway_up(serve_url, tiny_lm):
    client = DeviceClient(tiny_lm, Router(make_policy("cascade", RouterFile(p_threshold=0.0))), serve_url,
                          max_new_tokens=4)
    ans = client.ask(PY_QUESTION)
    assert (ans.tier, ans.degraded, ans.escalation) == ("p", False, ["p"])
