"""HTTP client of the gateway (what ``pet ask`` and ``pet demo`` use).

    client = GatewayClient("http://127.0.0.1:8000", user="alice")
    out = client.generate({"prompt": "What is a bond?", "tier": "auto"})

When the gateway refuses plaintext (``GET /healthz`` says ``plaintext_allowed: false``) the client fetches
``GET /v1/keys`` and encrypts every request with the security module's ``DeviceCrypto``; the reply is
opened with the request's pending key, so the caller always sees the plain response dict.
"""

from __future__ import annotations

from typing import Any


class GatewayError(RuntimeError):
    """The gateway answered with an error status; ``status`` and ``code`` come from its JSON body."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code


class GatewayClient:
    """Calls ``/v1/generate`` (encrypting when required), ``/healthz``, ``/v1/experts`` and ``/v1/status``."""

    def __init__(self, url: str, user: str = "pet-cli", timeout_s: float = 300.0, encrypt: bool | None = None):
        import httpx

        self.url = url.rstrip("/")
        self.user = user
        self.http = httpx.Client(timeout=timeout_s, trust_env=False)
        self._encrypt = encrypt
        self._device: Any = None

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def _get(self, path: str) -> dict[str, Any]:
        r = self.http.get(f"{self.url}{path}")
        return self._json(r)

    @staticmethod
    def _json(r: Any) -> dict[str, Any]:
        try:
            body = r.json()
        except ValueError:
            body = {}
        if r.status_code >= 400:
            err = body.get("error", {}) if isinstance(body, dict) else {}
            raise GatewayError(r.status_code, err.get("code", "http_error"), err.get("message", r.text[:200]))
        return body

    def health(self) -> dict[str, Any]:
        """``GET /healthz``."""
        return self._get("/healthz")

    def experts(self) -> dict[str, Any]:
        """``GET /v1/experts``."""
        return self._get("/v1/experts")

    def status(self) -> dict[str, Any]:
        """``GET /v1/status``."""
        return self._get("/v1/status")

    def encrypts(self) -> bool:
        """Whether requests are sealed (decided once from ``/healthz`` unless forced)."""
        if self._encrypt is None:
            self._encrypt = not self.health().get("plaintext_allowed", False)
        return self._encrypt

    def _device_crypto(self) -> Any:
        if self._device is None:
            try:
                from pet.security.envelope import DeviceCrypto
            except ImportError as err:
                raise GatewayError(400, "no_crypto", "the gateway refuses plaintext and pet.security is missing") \
                    from err
            self._device = DeviceCrypto(self._get("/v1/keys"), self.user)
        return self._device

    def generate(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/generate``; raises GatewayError on an error status."""
        if not self.encrypts():
            return self._json(self.http.post(f"{self.url}/v1/generate", json=payload))
        envelope, pending = self._device_crypto().seal(payload)
        r = self.http.post(f"{self.url}/v1/generate", json={"pet_envelope": envelope})
        try:
            body = r.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and "pet_envelope" in body:  # answers and errors to an opened envelope
            body = pending.open(body["pet_envelope"])
            if r.status_code >= 400:
                err = body.get("error", {}) if isinstance(body, dict) else {}
                raise GatewayError(r.status_code, err.get("code", "http_error"), err.get("message", ""))
            return body
        return self._json(r)
