"""The device client: answer with P on the device, escalate to the gateway when the router says so.

    from pet.personal.device import DeviceClient
    client = DeviceClient.from_config(cfg, personal=DeviceModel.load(bundle), url="http://127.0.0.1:8000")
    ans = client.ask("How do I read a file line by line in Python?")
    ans.text, ans.tier, ans.reason, ans.degraded

The router policy (``cfg.router``; see :mod:`pet.router.policy`) decides from P's confidence (``cascade``)
or from the query embedding (``pregen``). An escalation is one ``POST /v1/generate`` with tier "auto": the
gateway picks the expert domain and judges the expert (E -> T) with the same fitted router. Requests are
sealed with HPKE (:class:`pet.security.envelope.DeviceCrypto`) whenever the gateway publishes keys, and
always after a gateway refuses plaintext. When the network is down, slow (connect and read timeouts, plus
an overall deadline) or the gateway fails, the answer comes from P, marked ``degraded`` with the reason.
Nothing here imports torch unless the pregen policy needs an embedder.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from pet.router.policy import Action, RouterPolicy, RouteState, policy_from_config

Prompt = str | Sequence[dict[str, str]]


class PersonalModel(Protocol):
    """What the client needs from P: DeviceModel (onnxruntime) or any object with the same generate()."""

    def generate(self, prompt: Prompt, max_new_tokens: int = 64, temperature: float = 0.0,
                 top_p: float = 1.0) -> Any: ...


class GatewayError(Exception):
    """The gateway could not be reached or did not answer usefully; ``reason`` is short and holds no prompt text."""

    def __init__(self, reason: str, status: int | None = None, code: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.code = code


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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


# ----------------------------------------------------------------------------------------------------------------
# HTTP with separate connect / read timeouts and an overall deadline (stdlib only: no extra device dependency)


class GatewayHTTP:
    """Minimal JSON-over-HTTP(S) caller for the gateway."""

    def __init__(self, url: str, connect_timeout_s: float = 3.0, read_timeout_s: float = 30.0):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"gateway url must be http(s)://host[:port], got {url!r}")
        self.scheme, self.host = parts.scheme, parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.connect_timeout_s = float(connect_timeout_s)
        self.read_timeout_s = float(read_timeout_s)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """(status, decoded JSON) or GatewayError for network failures, timeouts and non-JSON replies."""
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        conn = cls(self.host, self.port, timeout=self.connect_timeout_s)
        deadline = time.monotonic() + self.connect_timeout_s + self.read_timeout_s
        try:
            conn.connect()
            conn.sock.settimeout(self.read_timeout_s)
            data = None if body is None else json.dumps(body).encode("utf-8")
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            conn.request(method, self.prefix + path, body=data, headers=headers)
            resp = conn.getresponse()
            chunks = []
            # Read in pieces so a server that drips bytes cannot hold us past the deadline.
            while chunk := resp.read(65536):
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise GatewayError(f"gateway reply exceeded {self.connect_timeout_s + self.read_timeout_s:.0f} s")
            raw = b"".join(chunks)
        except TimeoutError:
            raise GatewayError("gateway timed out") from None
        except ConnectionRefusedError:
            raise GatewayError("gateway refused the connection (not running?)") from None
        except socket.gaierror:
            raise GatewayError("gateway host name does not resolve") from None
        except (OSError, http.client.HTTPException) as err:
            raise GatewayError(f"network error ({type(err).__name__})") from None
        finally:
            conn.close()
        try:
            return resp.status, json.loads(raw) if raw else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise GatewayError(f"gateway answered HTTP {resp.status} without JSON", resp.status) from None


# ----------------------------------------------------------------------------------------------------------------
# The client


def _last_user_text(prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content", "") for m in prompt if m.get("role") == "user"]
    return users[-1] if users else ""


class DeviceClient:
    """Runs P locally and escalates through the gateway when the router policy says so."""

    def __init__(self, personal: PersonalModel, policy: RouterPolicy, url: str | None = None,
                 user_id: str = "device", connect_timeout_s: float = 3.0, read_timeout_s: float = 30.0,
                 encrypt: str = "auto", max_new_tokens: int = 64, embedder: Any | None = None):
        if encrypt not in ("auto", "always", "never"):
            raise ValueError("encrypt must be auto, always or never")
        self.personal = personal
        self.policy = policy
        self.http = GatewayHTTP(url, connect_timeout_s, read_timeout_s) if url else None
        self.user_id = user_id
        self.encrypt = encrypt
        self.max_new_tokens = max_new_tokens
        self.embedder = embedder
        self._crypto: Any | None = None  # DeviceCrypto once keys were fetched
        self._keys_checked = False

    @classmethod
    def from_config(cls, cfg: Any, personal: PersonalModel, url: str | None, user_id: str = "device",
                    embedder: Any | None = None) -> DeviceClient:
        """Policy, timeouts, encryption and generation length from a PetConfig."""
        policy = policy_from_config(cfg.router)
        if policy.needs_embedding and embedder is None:
            from pet.models.embed import Embedder  # torch: only the pregen policy needs it on the device

            embedder = Embedder(threads=1)
        r = cfg.router
        return cls(personal, policy, url, user_id, r.connect_timeout_s, r.read_timeout_s, r.encrypt,
                   cfg.personal.generation.max_new_tokens, embedder)

    # -- one question ------------------------------------------------------------------------------------------

    def ask(self, prompt: Prompt, max_new_tokens: int | None = None) -> Answer:
        """Answer one prompt (a string or chat messages)."""
        t0 = time.perf_counter()
        mnt = max_new_tokens or self.max_new_tokens
        state = RouteState(query=_last_user_text(prompt))
        if self.policy.needs_embedding:
            state.embedding = self.embedder.encode([state.query])[0]
        decisions, router_s = [], 0.0
        gen = None

        def decide():
            nonlocal router_s
            t = time.perf_counter()
            d = self.policy.decide(state)
            router_s += time.perf_counter() - t
            decisions.append(d.to_dict())
            return d

        d = decide()
        if d.action is Action.RUN_P:
            gen = self.personal.generate(prompt, max_new_tokens=mnt)
            state.p_signals = gen.signals.to_dict(per_token=False)
            d = decide()
        if d.action is not Action.ESCALATE:
            gen = gen or self.personal.generate(prompt, max_new_tokens=mnt)
            return self._p_answer(gen, d.reason, False, decisions, t0, router_s)
        if self.http is None:
            gen = gen or self.personal.generate(prompt, max_new_tokens=mnt)
            return self._p_answer(gen, f"{d.reason}; no gateway configured: answered on the device",
                                  True, decisions, t0, router_s)
        try:
            reply, encrypted = self._escalate(prompt, mnt)
        except GatewayError as err:
            gen = gen or self.personal.generate(prompt, max_new_tokens=mnt)
            return self._p_answer(gen, f"{d.reason}; {err.reason}: answered on the device",
                                  True, decisions, t0, router_s)
        tier = str(reply.get("tier", "t"))
        why = d.reason
        if reply.get("fallback"):
            why += f"; gateway fell back ({reply.get('fallback_reason')})"
        esc = list(reply.get("escalation") or [])
        return Answer(text=str(reply.get("text", "")), tier=tier, reason=f"{why}; answered by {tier.upper()}"
                      + (f" ({reply['domain']})" if reply.get("domain") else ""), domain=reply.get("domain"),
                      escalation=["p", *esc] if state.p_signals is not None else esc, decisions=decisions,
                      signals=reply.get("signals"), encrypted=encrypted,
                      latency_ms=1000 * (time.perf_counter() - t0), router_ms=1000 * router_s,
                      usage={k: int(v) for k, v in (reply.get("usage") or {}).items() if k.endswith("_tokens")},
                      route=dict(reply.get("route") or {}), request_id=reply.get("request_id"))

    def _p_answer(self, gen: Any, reason: str, degraded: bool, decisions: list, t0: float, router_s: float) -> Answer:
        u = getattr(gen, "usage", None)
        usage = {"prompt_tokens": int(u.prompt_tokens), "completion_tokens": int(u.completion_tokens)} if u else {}
        return Answer(text=gen.text, tier="p", reason=reason, degraded=degraded, escalation=["p"],
                      decisions=decisions, signals=gen.signals.to_dict(per_token=False),
                      latency_ms=1000 * (time.perf_counter() - t0), router_ms=1000 * router_s, usage=usage)

    # -- the cloud ---------------------------------------------------------------------------------------------

    def _device_crypto(self) -> Any | None:
        """DeviceCrypto from GET /v1/keys (cached), or None when the gateway publishes no keys."""
        if self._crypto is not None or (self._keys_checked and self.encrypt != "always"):
            return self._crypto
        assert self.http is not None
        status, body = self.http.request("GET", "/v1/keys")
        self._keys_checked = True
        if status != 200:
            if self.encrypt == "always":
                raise GatewayError(f"gateway publishes no keys (HTTP {status}) and encrypt is 'always'", status)
            return None
        from pet.security.envelope import DeviceCrypto

        try:
            self._crypto = DeviceCrypto(body, self.user_id)
        except ValueError:
            raise GatewayError("gateway sent unusable public keys") from None
        return self._crypto

    def _escalate(self, prompt: Prompt, max_new_tokens: int) -> tuple[dict[str, Any], bool]:
        """POST /v1/generate with tier "auto"; returns (response, encrypted)."""
        assert self.http is not None
        payload: dict[str, Any] = {"tier": "auto", "max_new_tokens": max_new_tokens, "user": self.user_id,
                                   "request_id": uuid.uuid4().hex}
        payload["prompt" if isinstance(prompt, str) else "messages"] = prompt if isinstance(prompt, str) \
            else [dict(m) for m in prompt]
        crypto = self._device_crypto() if self.encrypt != "never" else None
        status, body = self._post(payload, crypto)
        if status == 400 and _error_code(body) == "plaintext_refused" and self.encrypt != "never":
            self._keys_checked = False
            crypto = self._device_crypto()
            if crypto is None:
                raise GatewayError("gateway refuses plaintext but publishes no keys", status)
            status, body = self._post(payload, crypto)
        if status != 200:
            code = _error_code(body)
            raise GatewayError(f"gateway answered HTTP {status}" + (f" ({code})" if code else ""), status, code)
        if not isinstance(body, dict) or "text" not in body:
            raise GatewayError("gateway reply has no text")
        return body, crypto is not None

    def _post(self, payload: dict[str, Any], crypto: Any | None) -> tuple[int, Any]:
        assert self.http is not None
        if crypto is None:
            return self.http.request("POST", "/v1/generate", payload)
        envelope, pending = crypto.seal(payload)
        status, body = self.http.request("POST", "/v1/generate", {"pet_envelope": envelope})
        sealed = isinstance(body, dict) and "pet_envelope" in body
        if status == 200 and not sealed:
            raise GatewayError("gateway answered an encrypted request in plaintext", status)
        if sealed:  # the answer, or an error about the opened request's content, sealed to this device
            try:
                return status, pending.open(body["pet_envelope"])
            except Exception:  # EnvelopeError and malformed envelopes alike: never trust the reply
                raise GatewayError("gateway reply envelope could not be opened", status) from None
        return status, body


def _error_code(body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"].get("code")
    return None
