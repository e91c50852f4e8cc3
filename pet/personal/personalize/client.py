"""The device's one send path to the cloud Augmenter, observable before encryption.

Every augment request the device makes goes through :meth:`AugmentClient.request`, which first hands the
plaintext payload to each registered ``on_send`` hook (tests record it there to prove that unshared
messages never leave the device), then delivers it:

- :class:`HttpAugmentClient`: :meth:`pet.client.GatewayClient.augment`, which fetches ``GET /v1/keys``, seals the
  payload with HPKE and POSTs ``{"pet_envelope": ...}`` to ``/v1/augment``; the reply is opened with the pending
  reply key. Failures are :class:`pet.client.GatewayError`.
- :class:`LocalAugmentClient`: runs the same Augmenter logic in this process with a local T model
  (offline use and benchmarks). Nothing crosses a network, but the hook still sees exactly what would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pet.client import GatewayClient, GatewayError

log = logging.getLogger(__name__)


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
            raise GatewayError(None, "invalid_reply", "the augment reply has no 'samples' list")
        return reply

    def _deliver(self, payload: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


class HttpAugmentClient(AugmentClient):
    """Encrypted HTTP to a gateway's ``POST /v1/augment`` through ``gateway`` (a :class:`GatewayClient`)."""

    def __init__(self, url: str, user_id: str, timeout_s: float = 600.0, gateway: GatewayClient | None = None):
        super().__init__()
        self.gateway = gateway or GatewayClient(url, user_id, read_timeout_s=timeout_s)

    def _deliver(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self.gateway.augment(payload)


class LocalAugmentClient(AugmentClient):
    """The Augmenter logic in-process: T is a local :class:`pet.models.lm.CausalLM`, MiniLM filters."""

    def __init__(self, lm: Any, embedder: Any, cfg: Any, progress: Callable[[int], None] | None = None):
        super().__init__()
        self.lm, self.embedder, self.cfg, self.progress = lm, embedder, cfg, progress

    def _deliver(self, payload: dict[str, Any]) -> dict[str, Any]:
        from pet.personal.personalize.augment import augment_local

        return augment_local(payload, self.lm, self.embedder, self.cfg, progress=self.progress)
