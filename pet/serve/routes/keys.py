"""Key-service routes of the gateway: ``GET /v1/keys`` and ``GET /v1/keys/signing``.

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


def register_routes(app: Any, gateway_getter: Callable[[], Any]) -> None:
    """Add the key routes to the gateway's FastAPI ``app``."""
    from fastapi.responses import JSONResponse

    from pet.serve.schemas import ApiError

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
