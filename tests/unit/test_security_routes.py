"""The key-service routes on a FastAPI app over a stand-in gateway (the real Gateway is integration-tested)."""

from __future__ import annotations

import os

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from pet.security.envelope import DeviceCrypto, EnvelopeError
from pet.security.gateway import GatewayCrypto
from pet.security.keys import KeyRing
from pet.serve.metrics import gateway_metrics
from pet.serve.routes import add_routes
from pet.serve.routes.keys import KeyRoutes
from pet.serve.schemas import ApiError


class _Gateway(KeyRoutes):
    def __init__(self, crypto: GatewayCrypto):
        self._crypto = crypto

    def crypto(self) -> GatewayCrypto:
        return self._crypto


def test_keys_routes_and_counters_on_metrics(tmp_path):
    ring = KeyRing(tmp_path / "keys")
    rec = ring.init()
    gw = GatewayCrypto(ring, rec.suite)
    app = FastAPI()

    @app.exception_handler(ApiError)  # the gateway's app installs the same JSON error handler
    async def _api_error(request, err: ApiError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status)

    add_routes(app, _Gateway(gw))
    add_routes(FastAPI(), _Gateway(gw))  # a second registration in one process must not fail
    client = TestClient(app)
    keys = client.get("/v1/keys").json()
    assert keys["current"] == rec.kid and keys["keys"][0]["public_key"]
    env, _ = DeviceCrypto(keys, "route-user").seal({"prompt": "hi"})
    gw.open(env)
    signing = client.get("/v1/keys/signing").json()
    assert signing["alg"] == "Ed25519" and signing["key_id"] in (ring.root / "signing.pub").read_text()
    try:
        gw.open({"v": 1})
    except EnvelopeError:
        pass
    text = gateway_metrics().render()[0].decode()
    assert 'pet_envelope_rejections_total{reason="malformed"}' in text
    assert 'pet_envelope_opened_total{suite="x25519-hkdf-sha256-aes256gcm"}' in text
    os.unlink(ring.root / "signing.pub")
    r = client.get("/v1/keys/signing")
    assert r.status_code == 404 and "pet keys init" in r.text
