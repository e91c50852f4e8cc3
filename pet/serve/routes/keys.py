"""Key-service routes of the gateway: ``GET /v1/keys`` and ``GET /v1/keys/signing``, plus the envelope counters.

``GET /v1/keys`` returns :meth:`pet.security.envelope.GatewayCrypto.public_keys` (the current key id and every key
that still decrypts, with its suite, base64url public key, status and expiry); it is registered here only when
the gateway module has not registered it itself. ``GET /v1/keys/signing`` returns the Ed25519 public key that
signs device bundles (algorithm, key id, base64url key) so a device can pin it at enrolment; devices should
compare its key id with one obtained out of band, since trusting it on first use is only as good as that first
connection.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def _has_route(app: Any, path: str) -> bool:
    return any(getattr(r, "path", None) == path for r in app.routes)


def _expose_envelope_counters() -> None:
    """Add the envelope counters (``pet_envelope_rejections_total{reason}``, ``pet_envelope_opened_total``) to the
    gateway's private metrics registry, so ``GET /metrics`` shows them; a collector may live in several registries.
    """
    from pet.security.metrics import OPENED, REJECTIONS
    from pet.serve.metrics import gateway_metrics

    registry = gateway_metrics().registry
    for collector in (REJECTIONS, OPENED):
        try:
            registry.register(collector)
        except ValueError:  # already registered in this process (module re-imported)
            pass


def register_routes(app: Any, gateway_getter: Callable[[], Any]) -> None:
    """Add the key routes to the gateway's FastAPI ``app`` and expose the envelope counters on its /metrics."""
    from fastapi.responses import JSONResponse

    from pet.serve.schemas import ApiError

    _expose_envelope_counters()

    if not _has_route(app, "/v1/keys"):
        @app.get("/v1/keys")
        async def keys_route() -> JSONResponse:
            """GET /v1/keys: public HPKE keys for devices to encrypt requests to."""
            return JSONResponse(gateway_getter().crypto().public_keys())

    @app.get("/v1/keys/signing")
    async def signing_key_route() -> JSONResponse:
        """GET /v1/keys/signing: the public Ed25519 key that signs device bundles."""
        ring = gateway_getter().crypto().keyring
        path = ring.signing_public_key_path()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            body = {"alg": data["alg"], "key_id": data["key_id"], "public_key": data["public_key"]}
        except (OSError, ValueError, KeyError):
            raise ApiError(404, "no_signing_key", "no bundle-signing key exists; run `pet keys init`") from None
        return JSONResponse(body)
