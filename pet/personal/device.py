"""The device client: answer with P on the device, escalate to the gateway when the router says so.

    from pet.personal.device import DeviceClient
    client = DeviceClient.from_config(cfg, personal=DeviceModel.load(bundle), url="http://127.0.0.1:8000")
    ans = client.ask("How do I read a file line by line in Python?")
    ans.text, ans.tier, ans.reason, ans.degraded

The router (:meth:`pet.router.router.Router.device_step`, configured by ``cfg.router``) decides from P's
confidence (``cascade``), from the query embedding (``pregen``) or from both (``stacked``) whether P's answer is
kept. An escalation is one ``POST /v1/generate`` with tier "auto" through :class:`pet.client.GatewayClient`: the
gateway's Router picks the expert domain and judges the expert (E -> T) with the same fitted router file.
Requests are sealed with HPKE whenever the gateway publishes keys, and always after a gateway refuses plaintext.
When the network is down, slow (connect and read timeouts, plus an overall deadline) or the gateway fails, the
answer comes from P, marked ``degraded`` with the reason. Nothing here imports torch unless the policy needs an
embedder.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from pet.client import ENCRYPT_MODES, GatewayClient, GatewayError
from pet.router.policy import Action, Decision, RouteState
from pet.router.router import Router

Prompt = str | Sequence[dict[str, str]]


class PersonalModel(Protocol):
    """What the client needs from P: DeviceModel (onnxruntime) or any object with the same generate()."""

    def generate(self, prompt: Prompt, max_new_tokens: int = 64, temperature: float = 0.0,
                 top_p: float = 1.0) -> Any: ...


@dataclass
class Answer:
    """What the user sees: the text, which tier answered, why, and whether it is a degraded (offline) answer."""

    text: str
    tier: str  # "p" | "e" | "t"
    reason: str
    degraded: bool = False
    domain: str | None = None
    escalation: list[str] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    signals: dict[str, float] | None = None
    encrypted: bool = False
    latency_ms: float = 0.0
    router_ms: float = 0.0
    usage: dict[str, int] = field(default_factory=dict)  # prompt_tokens, completion_tokens of the answering tier
    route: dict[str, Any] = field(default_factory=dict)  # the gateway's why: domain similarity vs floor, E score
    request_id: str | None = None  # of the escalation (the ledger's event id)
    shared_bytes: int = 0  # size of the questioner profile sent with the escalation (0: none was sent)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


# ----------------------------------------------------------------------------------------------------------------
# The client


def _last_user_text(prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content", "") for m in prompt if m.get("role") == "user"]
    return users[-1] if users else ""


class DeviceClient:
    """Runs P locally and escalates through the gateway when the router says so."""

    def __init__(self, personal: PersonalModel, router: Router, url: str | None = None,
                 user_id: str = "device", connect_timeout_s: float = 3.0, read_timeout_s: float = 30.0,
                 encrypt: str = "auto", max_new_tokens: int = 64, embedder: Any | None = None,
                 questioner: Any | None = None):
        if encrypt not in ENCRYPT_MODES:
            raise ValueError(f"encrypt must be one of {', '.join(ENCRYPT_MODES)}")
        self.personal = personal
        self.router = router
        self.gateway = GatewayClient(url, user_id, connect_timeout_s, read_timeout_s, encrypt) if url else None
        self.user_id = user_id
        self.max_new_tokens = max_new_tokens
        self.embedder = embedder
        # a pet.questioner.profile.ProfileBuilder when the user opted in to sharing a profile; None: nothing is sent
        self.questioner = questioner

    @classmethod
    def from_config(cls, cfg: Any, personal: PersonalModel, url: str | None, user_id: str = "device",
                    embedder: Any | None = None, questioner: Any | None = None) -> DeviceClient:
        """Router, timeouts, encryption and generation length from a PetConfig (``questioner``: the opted-in
        profile builder, see :meth:`DeviceClient.__init__`)."""
        router = Router.from_config(cfg)
        if router.needs_embedding and embedder is None:
            from pet.models.embed import embedder_from_config  # torch: only the embedding policies need it here

            embedder = embedder_from_config(cfg)
        r = cfg.router
        return cls(personal, router, url, user_id, r.connect_timeout_s, r.read_timeout_s, r.encrypt,
                   cfg.personal.generation.max_new_tokens, embedder, questioner)

    # -- one question ------------------------------------------------------------------------------------------

    def ask(self, prompt: Prompt, max_new_tokens: int | None = None) -> Answer:
        """Answer one prompt (a string or chat messages)."""
        t0 = time.perf_counter()
        mnt = max_new_tokens or self.max_new_tokens
        state = RouteState(query=_last_user_text(prompt))
        if self.router.needs_embedding:
            state.embedding = self.embedder.encode([state.query])[0]
        steps = _Steps(self.router, state)
        gen = None
        d = steps.next()
        if d.action is Action.RUN_P:
            gen = self.personal.generate(prompt, max_new_tokens=mnt)
            state.p_signals = gen.signals.to_dict(per_token=False)
            d = steps.next()
        if d.action is Action.ESCALATE and self.gateway is not None:
            try:
                return self._cloud_answer(prompt, mnt, d, steps, t0)
            except GatewayError as err:
                why, degraded = f"{d.reason}; {err.reason}: answered on the device", True
        elif d.action is Action.ESCALATE:
            why, degraded = f"{d.reason}; no gateway configured: answered on the device", True
        else:
            why, degraded = d.reason, False
        gen = gen or self.personal.generate(prompt, max_new_tokens=mnt)
        u = getattr(gen, "usage", None)
        usage = {"prompt_tokens": int(u.prompt_tokens), "completion_tokens": int(u.completion_tokens)} if u else {}
        return Answer(text=gen.text, tier="p", reason=why, degraded=degraded, escalation=["p"],
                      decisions=steps.decisions, signals=gen.signals.to_dict(per_token=False),
                      latency_ms=1000 * (time.perf_counter() - t0), router_ms=1000 * steps.seconds, usage=usage)

    def _cloud_answer(self, prompt: Prompt, max_new_tokens: int, d: Decision, steps: _Steps, t0: float) -> Answer:
        """The gateway's answer to an escalated prompt (GatewayError when there is none)."""
        assert self.gateway is not None
        payload: dict[str, Any] = {"tier": "auto", "max_new_tokens": max_new_tokens, "user": self.user_id,
                                   "request_id": uuid.uuid4().hex}
        payload["prompt" if isinstance(prompt, str) else "messages"] = prompt if isinstance(prompt, str) \
            else [dict(m) for m in prompt]
        shared = 0
        if self.questioner is not None:  # opted in: the profile rides inside the same (sealed) request
            profile = self.questioner.for_query(_last_user_text(prompt))
            payload["questioner"], shared = profile.to_payload(), profile.nbytes()
        reply, encrypted = self.gateway.call("/v1/generate", payload)
        if "text" not in reply:
            raise GatewayError(None, "invalid_reply", "gateway reply has no text")
        tier = str(reply.get("tier", "t"))
        why = d.reason
        if reply.get("fallback"):
            why += f"; gateway fell back ({reply.get('fallback_reason')})"
        esc = list(reply.get("escalation") or [])
        return Answer(text=str(reply.get("text", "")), tier=tier, reason=f"{why}; answered by {tier.upper()}"
                      + (f" ({reply['domain']})" if reply.get("domain") else ""), domain=reply.get("domain"),
                      escalation=["p", *esc] if steps.state.p_signals is not None else esc,
                      decisions=steps.decisions, signals=reply.get("signals"), encrypted=encrypted,
                      latency_ms=1000 * (time.perf_counter() - t0), router_ms=1000 * steps.seconds,
                      usage={k: int(v) for k, v in (reply.get("usage") or {}).items() if k.endswith("_tokens")},
                      route=dict(reply.get("route") or {}), request_id=reply.get("request_id"), shared_bytes=shared)


class _Steps:
    """The router's device steps for one query, recorded with the time they took."""

    def __init__(self, router: Router, state: RouteState):
        self.router, self.state = router, state
        self.decisions: list[dict[str, Any]] = []
        self.seconds = 0.0

    def next(self) -> Decision:
        """Ask the router for the next step on the current state."""
        t = time.perf_counter()
        d = self.router.device_step(self.state)
        self.seconds += time.perf_counter() - t
        self.decisions.append(d.to_dict())
        return d
