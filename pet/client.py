"""The one client of the gateway's HTTP API: the device, the CLI (``pet ask``, ``pet status``) and personalisation.

    from pet.client import GatewayClient, GatewayError
    gw = GatewayClient("http://127.0.0.1:8000", user="alice")
    out = gw.generate({"prompt": "What is a bond?", "tier": "auto"})
    gw.status(), gw.experts(), gw.health()
    gw.augment({"shared": ["..."], "n": 4, "seed": 0})      # always sealed

Encryption (``encrypt``): ``"auto"`` seals every request with HPKE (:class:`pet.security.envelope.DeviceCrypto`)
when the gateway publishes keys (``GET /v1/keys``), and again after a gateway refuses plaintext; ``"always"``
never sends plaintext; ``"never"`` never encrypts. Replies to a sealed request, answers and errors alike, are opened
with that request's reply key, so callers see plain dicts.

Every failure is a :class:`GatewayError` (``status`` None when no HTTP answer came: refused, timed out, not JSON).
The transport is the standard library's ``http.client`` with separate connect and read timeouts and an overall
deadline, so the device needs no HTTP package; this module imports neither Ray nor torch.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

ENCRYPT_MODES = ("auto", "always", "never")


class GatewayError(Exception):
    """The gateway could not be reached or answered with an error; nothing in it quotes request content.

    ``status`` is the HTTP status (None without an HTTP answer), ``code`` the gateway's error code (or a transport
    code such as ``timeout``), ``message`` a sentence for people.
    """

    def __init__(self, status: int | None, code: str, message: str):
        super().__init__(message if status is None else f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    @property
    def reason(self) -> str:
        """A short reason for an answer's why-line (the status and code, never the server's whole message)."""
        return self.message if self.status is None else f"gateway answered HTTP {self.status} ({self.code})"


class HttpTransport:
    """JSON over HTTP(S) to one gateway URL, with connect and read timeouts and an overall deadline."""

    def __init__(self, url: str, connect_timeout_s: float = 3.0, read_timeout_s: float = 30.0):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"gateway url must be http(s)://host[:port], got {url!r}")
        self.scheme, self.host = parts.scheme, parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.connect_timeout_s = float(connect_timeout_s)
        self.read_timeout_s = float(read_timeout_s)

    def send(self, method: str, path: str, data: bytes | None = None) -> tuple[int, bytes]:
        """(status, raw body); GatewayError for network failures and timeouts."""
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        conn = cls(self.host, self.port, timeout=self.connect_timeout_s)
        budget = self.connect_timeout_s + self.read_timeout_s
        deadline = time.monotonic() + budget
        try:
            conn.connect()
            conn.sock.settimeout(self.read_timeout_s)
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            conn.request(method, self.prefix + path, body=data, headers=headers)
            resp = conn.getresponse()
            chunks = []
            # Read in pieces so a server that drips bytes cannot hold us past the deadline.
            while chunk := resp.read(65536):
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise GatewayError(None, "timeout", f"gateway reply exceeded {budget:.0f} s")
            return resp.status, b"".join(chunks)
        except TimeoutError:
            raise GatewayError(None, "timeout", "gateway timed out") from None
        except ConnectionRefusedError:
            raise GatewayError(None, "unreachable", "gateway refused the connection (not running?)") from None
        except socket.gaierror:
            raise GatewayError(None, "unreachable", "gateway host name does not resolve") from None
        except (OSError, http.client.HTTPException) as err:
            raise GatewayError(None, "network", f"network error ({type(err).__name__})") from None
        finally:
            conn.close()

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """(status, decoded JSON or None for an empty body); GatewayError also for a reply that is not JSON."""
        status, raw = self.send(method, path, None if body is None else json.dumps(body).encode("utf-8"))
        try:
            return status, json.loads(raw) if raw else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise GatewayError(status, "not_json", "the gateway's reply is not JSON") from None


def error_code(body: Any) -> str | None:
    """The ``error.code`` of a gateway error body, or None."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"].get("code")
    return None


def checked(status: int, body: Any) -> dict[str, Any]:
    """``body`` of a 2xx JSON object reply; GatewayError with the gateway's code and message otherwise."""
    if status >= 400:
        err = body.get("error", {}) if isinstance(body, dict) else {}
        raise GatewayError(status, str(err.get("code") or "http_error"), str(err.get("message") or "no error body"))
    if not isinstance(body, dict):
        raise GatewayError(status, "invalid_reply", "the gateway's reply is not a JSON object")
    return body


class GatewayClient:
    """Calls the gateway: ``generate``, ``augment`` (sealed as ``encrypt`` says), ``health``, ``experts``,
    ``status``, ``keys``."""

    def __init__(self, url: str, user: str = "pet-cli", connect_timeout_s: float = 3.0,
                 read_timeout_s: float = 300.0, encrypt: str = "auto"):
        if encrypt not in ENCRYPT_MODES:
            raise ValueError(f"encrypt must be one of {', '.join(ENCRYPT_MODES)}, got {encrypt!r}")
        self.url = url.rstrip("/")
        self.transport = HttpTransport(self.url, connect_timeout_s, read_timeout_s)
        self.user = user
        self.encrypt = encrypt
        self._crypto: Any = None  # DeviceCrypto once keys were fetched
        self._keys_checked = False

    def get(self, path: str) -> dict[str, Any]:
        """``GET path`` as a dict; GatewayError on an error status."""
        return checked(*self.transport.request("GET", path))

    def health(self) -> dict[str, Any]:
        """``GET /healthz``."""
        return self.get("/healthz")

    def experts(self) -> dict[str, Any]:
        """``GET /v1/experts``."""
        return self.get("/v1/experts")

    def status(self) -> dict[str, Any]:
        """``GET /v1/status``."""
        return self.get("/v1/status")

    def keys(self) -> dict[str, Any]:
        """``GET /v1/keys``: the public keys requests are sealed to."""
        return self.get("/v1/keys")

    def generate(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/generate``; the plain response dict."""
        return self.call("/v1/generate", payload)[0]

    def augment(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/augment`` (``{"shared", "n", "seed"}``), always sealed: it carries the user's own samples."""
        return self.call("/v1/augment", payload, require_seal=True)[0]

    # -- sealing ---------------------------------------------------------------------------------------------

    def device_crypto(self, required: bool = False) -> Any | None:
        """DeviceCrypto from ``GET /v1/keys`` (cached); None when the gateway publishes none and none is required."""
        required = required or self.encrypt == "always"
        if self._crypto is not None or (self._keys_checked and not required):
            return self._crypto
        status, body = self.transport.request("GET", "/v1/keys")
        self._keys_checked = True
        if status != 200:
            if required:
                raise GatewayError(status, error_code(body) or "no_keys",
                                   "the gateway publishes no keys and this request must be encrypted")
            return None
        from pet.security.envelope import DeviceCrypto

        try:
            self._crypto = DeviceCrypto(body, self.user)
        except ValueError:
            raise GatewayError(status, "invalid_keys", "the gateway sent unusable public keys") from None
        return self._crypto

    def call(self, path: str, payload: dict[str, Any], require_seal: bool = False) -> tuple[dict[str, Any], bool]:
        """``POST path`` with ``payload``, sealed when keys allow; returns (plain reply, whether it was sealed)."""
        if require_seal and self.encrypt == "never":
            raise ValueError(f"POST {path} is always encrypted; this client has encrypt='never'")
        crypto = self.device_crypto(require_seal) if self.encrypt != "never" else None
        status, body = self._post(path, payload, crypto)
        if status == 400 and error_code(body) == "plaintext_refused" and crypto is None and self.encrypt != "never":
            self._keys_checked = False
            crypto = self.device_crypto(required=True)
            status, body = self._post(path, payload, crypto)
        return checked(status, body), crypto is not None

    def _post(self, path: str, payload: dict[str, Any], crypto: Any | None) -> tuple[int, Any]:
        if crypto is None:
            return self.transport.request("POST", path, payload)
        try:
            envelope, pending = crypto.seal(payload)
        except ValueError as err:  # an id the envelope cannot carry
            raise GatewayError(None, "invalid_request", f"cannot encrypt this request: {err}") from None
        status, body = self.transport.request("POST", path, {"pet_envelope": envelope})
        sealed = isinstance(body, dict) and "pet_envelope" in body
        if status == 200 and not sealed:
            raise GatewayError(status, "plaintext_reply", "the gateway answered an encrypted request in plaintext")
        if not sealed:  # errors before the envelope was opened (bad body, unknown route) come in plaintext
            return status, body
        try:  # the answer, or an error about the opened request's content, sealed to this device
            return status, pending.open(body["pet_envelope"])
        except Exception:  # EnvelopeError and malformed envelopes alike: never trust the reply
            raise GatewayError(status, "invalid_envelope", "the gateway's reply envelope could not be opened") \
                from None
