"""Key-service routes of the gateway: ``GET /v1/keys`` and ``GET /v1/keys/signing``.

``GET /v1/keys`` returns :meth:`pet.security.gateway.GatewayCrypto.public_keys` (the current key id and every key
that still decrypts, with its suite, base64url public key, status and expiry). ``GET /v1/keys/signing`` returns the
Ed25519 public key that signs device bundles (algorithm, key id, base64url key) so a device can pin it at
enrolment; devices should compare its key id with one obtained out of band, since trusting it on first use is only
as good as that first connection. The envelope counters these keys produce are on ``GET /metrics``
(:class:`pet.serve.metrics.GatewayMetrics` registers them).
"""

from __future__ import annotations

import json

from fastapi.responses import JSONResponse

from pet.serve.routes import route
from pet.serve.schemas import ApiError


class KeyRoutes:
    """Routes of the key service. Mixed into the gateway, which provides ``crypto()`` (GatewayCrypto)."""

    @route("GET", "/v1/keys")
    async def keys_route(self) -> JSONResponse:
        """GET /v1/keys: public HPKE keys for devices to encrypt requests to."""
        return JSONResponse(self.crypto().public_keys())

    @route("GET", "/v1/keys/signing")
    async def signing_key_route(self) -> JSONResponse:
        """GET /v1/keys/signing: the public Ed25519 key that signs device bundles."""
        path = self.crypto().keyring.signing_public_key_path()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            body = {"alg": data["alg"], "key_id": data["key_id"], "public_key": data["public_key"]}
        except (OSError, ValueError, KeyError):
            raise ApiError(404, "no_signing_key", "no bundle-signing key exists; run `pet keys init`") from None
        return JSONResponse(body)
