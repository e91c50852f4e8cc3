"""``POST /v1/augment``: the device's shared samples in, synthetic samples in the user's style out.

The body is ``{"pet_envelope": ...}`` sealed by :class:`pet.security.envelope.DeviceCrypto` over
``{"shared": [str], "n": int, "seed": int}``; the reply ``{"samples": [str], "stats": {...}}`` is sealed back.
Plaintext bodies are refused with 400 unless ``crypto.allow_plaintext`` (development). Errors are JSON:
400 for a malformed payload (the message names the field, never its content), 503 when no Augmenter is
bound into the Serve graph.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# At module level: FastAPI resolves the (string) annotation of the handler's ``request`` in module globals.
from fastapi import Request
from fastapi.responses import JSONResponse


def register_routes(app: Any, gateway_getter: Callable[[], Any]) -> None:
    """Add ``POST /v1/augment`` to the gateway's FastAPI ``app``."""

    @app.post("/v1/augment")
    async def augment_route(request: Request) -> JSONResponse:
        """POST /v1/augment: generate filtered synthetic samples from a user's shared samples."""
        # Imported here: the gateway module imports this package while it is itself being imported.
        from pet.personal.personalize.augment import AugmentRequestError, parse_request
        from pet.serve.gateway import open_body, read_json, seal_reply, sealed_error
        from pet.serve.schemas import ApiError

        gw = gateway_getter()
        data = await read_json(request, gw)
        payload, reply = await open_body(gw, data)
        try:
            try:
                parse_request(payload, gw.cfg.personalization)
            except AugmentRequestError as err:
                raise ApiError(400, "invalid_request", str(err)) from None
            if getattr(gw, "augmenter", None) is None:
                raise ApiError(503, "no_augmenter", "this gateway has no Augmenter deployment")
            with gw.admission.slot():
                result = await gw.augmenter.augment.remote(payload)
        except ApiError as err:
            return sealed_error(reply, err)
        user, rid = getattr(reply, "user_id", None), getattr(reply, "request_id", None)
        meter = getattr(gw, "meter", None)
        if meter is not None and user and rid and result.get("samples"):
            # The user's shared samples were used to generate synthetic data: credit them (once per request).
            await meter.acredit_contribution(f"augment:{rid}", user, len(payload["shared"]), "synthetic_data")
        return JSONResponse(seal_reply(reply, result))
