"""The gateway's own API: ``POST /v1/generate``, ``GET /v1/experts``, ``GET /v1/status``, ``GET /healthz``,
``GET /metrics``.

``POST /v1/generate`` takes plaintext JSON (refused unless ``crypto.allow_plaintext``) or ``{"pet_envelope": ...}``
and answers in kind; the routing itself is :meth:`pet.serve.dispatch.Dispatcher.generate` (a plaintext payload in,
a response dict out), which the other route groups reuse.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from pet.questioner.profile import payload_bytes
from pet.router.defaults import router_in_force
from pet.serve.bodies import open_body, read_json, seal_reply, sealed_error
from pet.serve.metrics import RequestTimer, gateway_metrics
from pet.serve.routes import route
from pet.serve.schemas import ApiError
from pet.serve.status import app_status, experts_info, traditional_info

STATUS_CACHE_S = 2.0


def shared_data(payload: dict[str, Any]) -> dict[str, int] | None:
    """What the ledger counts as shared for a request: the size of its questioner profile (never the profile)."""
    profile = payload.get("questioner")
    return {"questioner_profile": payload_bytes(profile)} if profile is not None else None


class CoreRoutes:
    """Routes of the generate API. Mixed into the gateway, which provides ``cfg``, ``generate``, ``admission``,
    ``crypto()``, ``meter``, ``in_background``, ``registry()``, ``domains()``, ``experts`` and ``augmenter``."""

    _status_cache: tuple[float, dict[str, Any]] = (0.0, {})

    @route("POST", "/v1/generate")
    async def generate_route(self, request: Request) -> JSONResponse:
        """POST /v1/generate: plaintext or encrypted; see :meth:`pet.serve.dispatch.Dispatcher.generate`."""
        with RequestTimer() as timer:
            data = await read_json(request, self.cfg, timer)
            payload, reply = await open_body(data, self.cfg, self.crypto)
            try:
                with self.admission.slot():
                    result = await self.generate(payload)
            except ApiError as err:
                return sealed_error(reply, err)
            # Metering never fails or delays a user request: the ledger write (an fsync with synchronous=FULL,
            # ~7 ms) runs after the response is on its way; the Meter counts its own failures.
            user = payload.get("user") or getattr(reply, "user_id", None)
            self.in_background(self.meter.arecord_result(result, user, shared_data(payload)))
            response = JSONResponse(seal_reply(reply, result))
            response.headers["Server-Timing"] = timer.server_timing()
            return response

    @route("GET", "/v1/experts")
    async def experts_route(self) -> JSONResponse:
        """GET /v1/experts: registered domains and the adapters loaded on the expert replicas."""
        return JSONResponse(await self.experts_info())

    @route("GET", "/v1/status")
    async def status_route(self) -> JSONResponse:
        """GET /v1/status: Serve deployment states, experts and the router in force (what `pet status` prints)."""
        return JSONResponse(await self.status())

    @route("GET", "/healthz")
    async def healthz_route(self) -> JSONResponse:
        """GET /healthz: the gateway is up and holds its handles."""
        c = self.cfg
        return JSONResponse({"status": "ok", "app": c.serve.app_name, "http_port": c.serve.http.port,
                             "plaintext_allowed": c.crypto.allow_plaintext, "augmenter": self.augmenter is not None})

    @route("GET", "/metrics")
    async def metrics_route(self) -> Response:
        """GET /metrics: Prometheus text of this gateway process."""
        from pet.ledger.metrics import exposition

        body, ctype = gateway_metrics().render()
        return Response(content=body + exposition(), media_type=ctype)

    async def experts_info(self) -> dict[str, Any]:
        """Registered domains (name, base model, created, metrics) and adapters loaded per replica."""
        return await experts_info(self.registry(), self.domains(refresh=True), self.experts)

    async def status(self) -> dict[str, Any]:
        """Serve's view of the deployments of this application, experts and router (cached for 2 s)."""
        when, cached = self._status_cache
        if time.monotonic() - when < STATUS_CACHE_S:
            return cached
        result = await asyncio.to_thread(app_status, self.cfg.serve.app_name)
        result["experts"] = await self.experts_info()
        result["router"] = router_in_force(self.cfg)
        result["traditional"] = await traditional_info(self.cfg, self.traditional)
        self._status_cache = (time.monotonic(), result)
        return result
