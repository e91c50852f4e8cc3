"""A running graph switches T versions in place under steady traffic, and rolls back: no request fails.

A real T version is made from the session's SmolLM2 and its ``python`` adapter (peft merge, written as a version
folder). Two client threads keep posting tier-``t`` requests to the gateway on loopback while
:func:`pet.serve.control.rollout` updates the application to the version and then back; every reply names the
model that answered (``model``), so the switch is visible per request.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

pytestmark = pytest.mark.integration


class Traffic:
    """``workers`` threads posting small tier-t requests back to back; every outcome is recorded."""

    def __init__(self, url: str, workers: int = 2):
        self.url, self.stop_flag = url, threading.Event()
        self.replies: list[tuple[float, int, str | None]] = []  # (time answered, status, model)
        self.spans: list[tuple[float, float]] = []  # (sent, answered) of every request
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(workers)]

    def _run(self, i: int) -> None:
        with httpx.Client(timeout=90.0) as client:
            n = 0
            while not self.stop_flag.is_set():
                n += 1
                sent = time.monotonic()
                try:
                    r = client.post(f"{self.url}/v1/generate",
                                    json={"prompt": f"Say hello {i}-{n}", "tier": "t", "max_new_tokens": 4})
                    model = r.json().get("model") if r.status_code == 200 else None
                    self.replies.append((time.monotonic(), r.status_code, model))
                    self.spans.append((sent, self.replies[-1][0]))
                    if r.status_code != 200:
                        self.errors.append(f"{r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as err:
                    self.errors.append(f"{type(err).__name__}: {err}")
                time.sleep(0.05)

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=120)

    def wait_for_model(self, model: str, since: float, n: int = 3, timeout_s: float = 120.0) -> None:
        """Until ``n`` replies after ``since`` came from ``model``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if sum(1 for t, s, m in list(self.replies) if t > since and m == model) >= n:
                return
            time.sleep(0.2)
        raise AssertionError(f"no replies from {model} within {timeout_s} s; last: {self.replies[-3:]}")


@pytest.fixture(scope="module")
def t_version(_serve_env, real_lm_dir):
    """A T version folder: SmolLM2 with the session's python adapter merged in (linear, weight 1)."""
    from pet.config.schema.tiers import MergeMethod
    from pet.models.lora import load_base
    from pet.traditional.upgrade import ExpertSource, merge_experts, write_version
    from pet.traditional.versions import model_fingerprint

    reg = _serve_env["registry"]
    model, tok = load_base(real_lm_dir, 1)
    src = ExpertSource("python", reg.adapter_dir("python"), reg.get("python").fingerprint, "")
    merged = merge_experts(model, [src], [1.0], MergeMethod.linear, 0.5)
    record = {"parent": {"name": "smollm2-135m-instruct", "fingerprint": model_fingerprint(real_lm_dir)},
              "experts": [{"name": "python", "fingerprint": src.fingerprint}], "method": "linear", "weights": [1.0]}
    return write_version(_serve_env["root"] / "traditional", "smollm2-135m-instruct", merged, tok, record)


def test_switch_t_version_and_roll_back_under_traffic(_serve_env, serve_url, t_version):
    from pet.serve.control import rollout

    cfg = _serve_env["cfg"]
    upgraded = cfg.model_copy(update={"traditional": cfg.traditional.updated(model=str(t_version.path))})
    with Traffic(serve_url) as traffic:
        traffic.wait_for_model("smollm2-135m-instruct", since=0.0)
        t_switch = time.monotonic()
        assert rollout(upgraded, wait_s=240, log=print)["model"] == t_version.name
        t_switched = time.monotonic()
        traffic.wait_for_model(t_version.name, since=t_switch)
        t_back = time.monotonic()
        assert rollout(cfg, wait_s=240, log=print)["model"] == "smollm2-135m-instruct"
        t_backed = time.monotonic()
        traffic.wait_for_model("smollm2-135m-instruct", since=t_back)
        time.sleep(1.0)
    replies = traffic.replies
    print(f"\n[t rollout] {len(replies)} requests, {len(traffic.errors)} failed; "
          f"{sum(m == t_version.name for _, _, m in replies)} answered by {t_version.name}")
    assert traffic.errors == []
    assert all(s == 200 for _, s, _ in replies)
    # Traffic ran through both switches: requests were in flight while each rollout replaced the replica (how many
    # depends on the machine's speed, so the test asks for overlap, not a count).
    for start, end in ((t_switch, t_switched), (t_back, t_backed)):
        assert any(sent < end and answered > start for sent, answered in traffic.spans), (start, end)
    # After each switch has completed, no reply comes from the model switched away from.
    done_up = min(t for t, _, m in replies if t > t_switch and m == t_version.name)
    assert all(m == t_version.name for t, _, m in replies if done_up + 5 < t < t_back)
