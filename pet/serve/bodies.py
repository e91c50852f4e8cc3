"""Request bodies in, answers out, for every gateway route: JSON errors, body limits, encrypted envelopes.

- :func:`install_error_handlers`: every error is JSON with the right status (never a 500 page for bad input).
- :func:`read_json`: the body under the gateway's deadline, size and JSON-shape limits.
- :func:`open_body`: a plaintext payload (refused unless ``crypto.allow_plaintext``) or ``{"pet_envelope": ...}``
  opened with :class:`pet.security.gateway.GatewayCrypto`, with the sealer for its reply.
- :func:`seal_reply` / :func:`sealed_error`: answers and errors to an opened envelope go back sealed.

Nothing here logs or quotes request content.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pet.security.envelope import EnvelopeError
from pet.serve.guard import loads_strict
from pet.serve.metrics import RequestTimer, gateway_metrics
from pet.serve.schemas import ApiError


async def _api_error(request: Request, err: ApiError) -> JSONResponse:
    gateway_metrics().observe_error(err.status, err.code)
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


async def _validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e.get("loc", ())) or "body"
        parts.append(f"{loc}: {'invalid JSON' if e.get('type') == 'json_invalid' else e.get('msg')}")
    status = 400 if any(e.get("type") == "json_invalid" for e in err.errors()) else 422
    return await _api_error(request, ApiError(status, "invalid_request", "; ".join(parts)))


async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
    return await _api_error(request, ApiError(err.status_code, code, str(err.detail), dict(err.headers or {})))


async def _unexpected(request: Request, err: Exception) -> JSONResponse:
    # Only the class name: an exception message could quote request content.
    return await _api_error(request, ApiError(500, "internal", f"internal error ({type(err).__name__})"))


def install_error_handlers(app: FastAPI) -> None:
    """JSON errors on ``app``: ApiError as raised, validation 400/422, unknown routes 404/405, anything else 500."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


async def read_json(request: Request, cfg: Any, timer: RequestTimer | None = None) -> Any:
    """The decoded JSON body under the limits of ``cfg.serve.gateway``; ApiError 400/408/413/422 for what breaks them.

    BodyGuard (``pet.serve.guard``) enforces the deadline and size before Serve admits the request; they are
    checked again here for graphs started without it (``serve run`` with Serve's own HTTP options).
    """
    t0 = time.perf_counter()
    g = cfg.serve.gateway
    try:
        raw = await asyncio.wait_for(request.body(), timeout=g.body_timeout_s)
    except TimeoutError:
        raise ApiError(408, "body_timeout", f"the body did not arrive within {g.body_timeout_s:g} s") from None
    if timer is not None:
        timer.body_s = time.perf_counter() - t0
    if len(raw) > g.max_body_bytes:
        raise ApiError(413, "too_large", f"the body is {len(raw)} bytes; the limit is {g.max_body_bytes}")
    return loads_strict(raw, g.json_max_depth, g.json_max_items, g.json_max_number_chars)


async def open_body(data: Any, cfg: Any, crypto: Callable[[], Any]) -> tuple[Any, Any]:
    """Split a request body into (plaintext payload, reply sealer or None), enforcing the plaintext policy.

    ``crypto()`` returns the GatewayCrypto; it is called only for an encrypted body.
    """
    if isinstance(data, dict) and "pet_envelope" in data:
        if len(data) != 1:
            raise ApiError(400, "invalid_envelope", "an encrypted body holds only 'pet_envelope'")
        opener = crypto()
        try:
            payload, reply = await asyncio.to_thread(opener.open, data["pet_envelope"])
        except Exception as err:  # EnvelopeError: generic on purpose (no oracle for attackers)
            reason = getattr(err, "reason", None) or "invalid"
            gateway_metrics().errors.labels(status="400", code=f"envelope_{reason}"[:48]).inc()
            # EnvelopeError's text is generic by design, except KeyIdError, which names a public key id.
            msg = str(err) if isinstance(err, EnvelopeError) else "the envelope could not be opened"
            raise ApiError(400, "invalid_envelope", msg) from None
        return payload, reply
    if not cfg.crypto.allow_plaintext:
        raise ApiError(400, "plaintext_refused", "plaintext requests are refused; fetch GET /v1/keys and send "
                       "{\"pet_envelope\": ...} (or set crypto.allow_plaintext for development)")
    return data, None


def seal_reply(reply: Any, result: dict[str, Any]) -> dict[str, Any]:
    """Wrap a response for an encrypted request (``reply`` None: plaintext, returned as is)."""
    if reply is None:
        return result
    sealed = reply.seal(result)
    return sealed if isinstance(sealed, dict) and "pet_envelope" in sealed else {"pet_envelope": sealed}


def sealed_error(reply: Any, err: ApiError) -> JSONResponse:
    """An error answer to an opened envelope, sealed to the device like an answer (raised again for plaintext)."""
    if reply is None:
        raise err
    gateway_metrics().observe_error(err.status, err.code)
    return JSONResponse(seal_reply(reply, err.body()), status_code=err.status, headers=err.headers)
