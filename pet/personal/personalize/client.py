"""The device's one send path to the cloud Augmenter, observable before encryption.

Every augment request the device makes goes through :meth:`AugmentClient.request`, which first hands the
plaintext payload to each registered ``on_send`` hook (tests record it there to prove that unshared
messages never leave the device), then delivers it:

- :class:`HttpAugmentClient`: fetches ``GET /v1/keys``, seals the payload with
  :class:`pet.security.envelope.DeviceCrypto` (HPKE) and POSTs ``{"pet_envelope": ...}`` to ``/v1/augment``;
  the reply is opened with the pending reply key.
- :class:`LocalAugmentClient`: runs the same Augmenter logic in this process with a local T model
  (offline use and benchmarks). Nothing crosses a network, but the hook still sees exactly what would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class AugmentClientError(RuntimeError):
    """The cloud refused or failed an augment request (message has the status and error code, no text)."""


class AugmentClient:
    """Base: hooks + :meth:`request`; subclasses implement :meth:`_deliver`."""

    def __init__(self) -> None:
        self.on_send: list[Callable[[dict[str, Any]], None]] = []

    def request(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Send ``{"shared", "n", "seed"}``; returns ``{"samples", "stats"}``."""
        for hook in self.on_send:
            hook(payload)
        log.info("augment request: %d shared samples, %d asked", len(payload.get("shared", [])),
                 payload.get("n", 0))
        reply = self._deliver(payload)
        if not isinstance(reply, dict) or not isinstance(reply.get("samples"), list):
            raise AugmentClientError("the augment reply has no 'samples' list")
        return reply

    def _deliver(self, payload: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


class HttpAugmentClient(AugmentClient):
    """Encrypted HTTP to a gateway's ``POST /v1/augment`` (``http`` is any httpx-like client, for tests)."""

    def __init__(self, url: str, user_id: str, timeout_s: float = 600.0, http: Any = None):
        super().__init__()
        self.url = url.rstrip("/")
        self.user_id = user_id
        self.timeout_s = timeout_s
        self._http = http

    def _client(self) -> Any:
        if self._http is None:
            import httpx

            self._http = httpx.Client(timeout=self.timeout_s)
        return self._http

    def _check(self, resp: Any, what: str) -> Any:
        if resp.status_code != 200:
            try:
                err = resp.json().get("error", {})
                detail = f"{err.get('code')}: {err.get('message')}"
            except Exception:
                detail = "no JSON error body"
            raise AugmentClientError(f"{what} failed with HTTP {resp.status_code} ({detail})")
        return resp.json()

    def _deliver(self, payload: dict[str, Any]) -> dict[str, Any]:
        from pet.security.envelope import DeviceCrypto

        http = self._client()
        keys = self._check(http.get(f"{self.url}/v1/keys"), "GET /v1/keys")
        try:
            envelope, pending = DeviceCrypto(keys, self.user_id).seal(payload)
        except ValueError as err:
            raise AugmentClientError(f"cannot encrypt to this gateway: {err}") from None
        resp = http.post(f"{self.url}/v1/augment", json={"pet_envelope": envelope})
        if resp.status_code != 200:
            try:  # an error about the opened request comes back sealed like an answer
                err = pending.open(resp.json()["pet_envelope"]).get("error", {})
                detail = f"{err.get('code')}: {err.get('message')}"
            except Exception:
                detail = None
            if detail is not None:
                raise AugmentClientError(f"POST /v1/augment failed with HTTP {resp.status_code} ({detail})")
        body = self._check(resp, "POST /v1/augment")
        sealed = body.get("pet_envelope") if isinstance(body, dict) else None
        if sealed is None:
            raise AugmentClientError("the gateway answered an encrypted request in plaintext")
        try:
            return pending.open(sealed)
        except ValueError:  # EnvelopeError: the reply was not sealed for this request
            raise AugmentClientError("the augment reply could not be decrypted") from None


class LocalAugmentClient(AugmentClient):
    """The Augmenter logic in-process: T is a local :class:`pet.models.lm.CausalLM`, MiniLM filters."""

    def __init__(self, lm: Any, embedder: Any, cfg: Any, progress: Callable[[int], None] | None = None):
        super().__init__()
        self.lm, self.embedder, self.cfg, self.progress = lm, embedder, cfg, progress

    def _deliver(self, payload: dict[str, Any]) -> dict[str, Any]:
        from pet.personal.personalize.augment import augment_local

        return augment_local(payload, self.lm, self.embedder, self.cfg, progress=self.progress)
