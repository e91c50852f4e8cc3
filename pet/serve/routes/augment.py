"""``POST /v1/augment``: the device's shared samples in, synthetic samples in the user's style out.

The body is ``{"pet_envelope": ...}`` sealed by :class:`pet.security.envelope.DeviceCrypto` over
``{"shared": [str], "n": int, "seed": int}``; the reply ``{"samples": [str], "stats": {...}}`` is sealed back.
Plaintext bodies are refused with 400 unless ``crypto.allow_plaintext`` (development). Errors are JSON:
400 for a malformed payload (the message names the field, never its content), 503 when no Augmenter is
bound into the Serve graph.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse

from pet.personal.personalize.augment import AugmentRequestError, parse_request
from pet.serve.bodies import open_body, read_json, seal_reply, sealed_error
from pet.serve.routes import route
from pet.serve.schemas import ApiError


class AugmentRoutes:
    """The personalisation route. Mixed into the gateway, which provides ``cfg``, ``crypto()``, ``admission``,
    ``meter`` and ``augmenter`` (the Augmenter deployment's handle, or None)."""

    @route("POST", "/v1/augment")
    async def augment_route(self, request: Request) -> JSONResponse:
        """POST /v1/augment: generate filtered synthetic samples from a user's shared samples."""
        data = await read_json(request, self.cfg)
        payload, reply = await open_body(data, self.cfg, self.crypto)
        try:
            try:
                parse_request(payload, self.cfg.personalization)
            except AugmentRequestError as err:
                raise ApiError(400, "invalid_request", str(err)) from None
            if self.augmenter is None:
                raise ApiError(503, "no_augmenter", "this gateway has no Augmenter deployment")
            with self.admission.slot():
                result = await self.augmenter.augment.remote(payload)
        except ApiError as err:
            return sealed_error(reply, err)
        user, rid = getattr(reply, "user_id", None), getattr(reply, "request_id", None)
        if user and rid and result.get("samples"):
            # The user's shared samples were used to generate synthetic data: credit them (once per request).
            await self.meter.acredit_contribution(f"augment:{rid}", user, len(payload["shared"]), "synthetic_data")
        return JSONResponse(seal_reply(reply, result))
