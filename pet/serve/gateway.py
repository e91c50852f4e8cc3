"""``Gateway``: the FastAPI ingress of the Serve graph (HTTP API of interface 3).

Routes: ``POST /v1/generate``, ``GET /v1/experts``, ``GET /v1/keys``, ``GET /v1/status``, ``GET /healthz``,
``GET /metrics``, plus every module of :mod:`pet.serve.routes` (``register_routes(app, gateway_getter)``).
The routing logic lives in :meth:`Gateway.generate` (a plaintext payload in, a response dict out), so
extra routes reuse it. Bodies are either plaintext JSON (refused unless ``crypto.allow_plaintext``) or
``{"pet_envelope": ...}`` opened with the security module's ``GatewayCrypto``; the reply is then sealed.
Nothing here logs or labels prompt text.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from pet.serve.dispatch import TierCaller
from pet.serve.guard import Admission, loads_strict
from pet.serve.metrics import RequestTimer, gateway_metrics
from pet.serve.schemas import ApiError

log = logging.getLogger("ray.serve")
app = FastAPI(title="pet gateway", version="1", docs_url=None, redoc_url=None, openapi_url=None)
_LIVE: dict[str, Any] = {}


def gateway_getter() -> Gateway:
    """The live Gateway replica instance of this process (for extra routes)."""
    gw = _LIVE.get("gateway")
    if gw is None:
        raise ApiError(503, "starting", "the gateway is starting", {"Retry-After": "1"})
    return gw


# ----------------------------------------------------------------------------------------------------------------
# Error handling: JSON everywhere, the right status, never a 500 for bad input


@app.exception_handler(ApiError)
async def _api_error(request: Request, err: ApiError) -> JSONResponse:
    gateway_metrics().observe_error(err.status, err.code)
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e.get("loc", ())) or "body"
        parts.append(f"{loc}: {'invalid JSON' if e.get('type') == 'json_invalid' else e.get('msg')}")
    status = 400 if any(e.get("type") == "json_invalid" for e in err.errors()) else 422
    return await _api_error(request, ApiError(status, "invalid_request", "; ".join(parts)))


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
    return await _api_error(request, ApiError(err.status_code, code, str(err.detail), dict(err.headers or {})))


@app.exception_handler(Exception)
async def _unexpected(request: Request, err: Exception) -> JSONResponse:
    # Only the class name: an exception message could quote request content.
    return await _api_error(request, ApiError(500, "internal", f"internal error ({type(err).__name__})"))


async def read_json(request: Request, gw: Gateway, timer: RequestTimer | None = None) -> Any:
    """The decoded JSON body under the gateway's limits; ApiError 400/408/413/422 for what breaks them.

    BodyGuard (``pet.serve.guard``) enforces the deadline and size before Serve admits the request; they are
    checked again here for graphs started without it (``serve run`` with Serve's own HTTP options).
    """
    t0 = time.perf_counter()
    g = gw.cfg.serve.gateway
    try:
        raw = await asyncio.wait_for(request.body(), timeout=g.body_timeout_s)
    except TimeoutError:
        raise ApiError(408, "body_timeout", f"the body did not arrive within {g.body_timeout_s:g} s") from None
    if timer is not None:
        timer.body_s = time.perf_counter() - t0
    if len(raw) > g.max_body_bytes:
        raise ApiError(413, "too_large", f"the body is {len(raw)} bytes; the limit is {g.max_body_bytes}")
    return loads_strict(raw, g.json_max_depth, g.json_max_items, g.json_max_number_chars)


async def open_body(gw: Gateway, data: Any) -> tuple[Any, Any]:
    """Split a request body into (plaintext payload, reply sealer or None), enforcing the plaintext policy."""
    if isinstance(data, dict) and "pet_envelope" in data:
        if len(data) != 1:
            raise ApiError(400, "invalid_envelope", "an encrypted body holds only 'pet_envelope'")
        crypto = gw.crypto()
        try:
            payload, reply = await asyncio.to_thread(crypto.open, data["pet_envelope"])
        except Exception as err:  # EnvelopeError: generic on purpose (no oracle for attackers)
            reason = getattr(err, "reason", None) or "invalid"
            gateway_metrics().errors.labels(status="400", code=f"envelope_{reason}"[:48]).inc()
            from pet.security.envelope import EnvelopeError

            # EnvelopeError's text is generic by design, except KeyIdError, which names a public key id.
            msg = str(err) if isinstance(err, EnvelopeError) else "the envelope could not be opened"
            raise ApiError(400, "invalid_envelope", msg) from None
        return payload, reply
    if not gw.cfg.crypto.allow_plaintext:
        raise ApiError(400, "plaintext_refused", "plaintext requests are refused; fetch GET /v1/keys and send "
                       "{\"pet_envelope\": ...} (or set crypto.allow_plaintext for development)")
    return data, None


def sealed_error(reply: Any, err: ApiError) -> JSONResponse:
    """An error answer to an opened envelope, sealed to the device like an answer (plain JSON for plaintext)."""
    if reply is None:
        raise err
    gateway_metrics().observe_error(err.status, err.code)
    return JSONResponse(seal_reply(reply, err.body()), status_code=err.status, headers=err.headers)


def seal_reply(reply: Any, result: dict[str, Any]) -> dict[str, Any]:
    """Wrap a response for an encrypted request."""
    if reply is None:
        return result
    sealed = reply.seal(result)
    return sealed if isinstance(sealed, dict) and "pet_envelope" in sealed else {"pet_envelope": sealed}


# ----------------------------------------------------------------------------------------------------------------
# Routes


@app.post("/v1/generate")
async def generate_route(request: Request) -> JSONResponse:
    """POST /v1/generate: plaintext or encrypted; see :meth:`Gateway.generate`."""
    with RequestTimer() as timer:
        gw = gateway_getter()
        data = await read_json(request, gw, timer)
        payload, reply = await open_body(gw, data)
        try:
            with gw.admission.slot():
                result = await gw.generate(payload)
        except ApiError as err:
            return sealed_error(reply, err)
        # Metering never fails or delays a user request: the ledger write (an fsync with synchronous=FULL,
        # ~7 ms) runs after the response is on its way; the Meter counts its own failures.
        gw.in_background(gw.meter.arecord_result(result, payload.get("user") or getattr(reply, "user_id", None)))
        response = JSONResponse(seal_reply(reply, result))
        response.headers["Server-Timing"] = timer.server_timing()
        return response


@app.get("/v1/experts")
async def experts_route() -> JSONResponse:
    """GET /v1/experts: registered domains and the adapters loaded on the expert replicas."""
    return JSONResponse(await gateway_getter().experts_info())


@app.get("/v1/keys")
async def keys_route() -> JSONResponse:
    """GET /v1/keys: the gateway's public keys for clients to encrypt to."""
    return JSONResponse(gateway_getter().crypto().public_keys())


@app.get("/v1/status")
async def status_route() -> JSONResponse:
    """GET /v1/status: Serve deployment states (what `pet status` prints)."""
    return JSONResponse(await gateway_getter().status())


@app.get("/healthz")
async def healthz_route() -> JSONResponse:
    """GET /healthz: the gateway is up and holds its handles."""
    gw = gateway_getter()
    return JSONResponse({"status": "ok", "app": gw.cfg.serve.app_name, "http_port": gw.cfg.serve.http.port,
                         "plaintext_allowed": gw.cfg.crypto.allow_plaintext, "augmenter": gw.augmenter is not None})


@app.get("/metrics")
async def metrics_route() -> Response:
    """GET /metrics: Prometheus text of this gateway process."""
    from pet.ledger.metrics import exposition

    body, ctype = gateway_metrics().render()
    return Response(content=body + exposition(), media_type=ctype)


def _include_extra_routes() -> list[str]:
    from pet.serve.routes import include_routes

    return include_routes(app, gateway_getter)


EXTRA_ROUTE_MODULES = _include_extra_routes()


def router_info(cfg: Any) -> dict[str, Any]:
    """The router in force (what `pet status` prints): policy, calibration file, thresholds, domain floor."""
    from pet.router.defaults import resolve_calibration
    from pet.router.policy import RouterFile

    r = cfg.router
    cal = resolve_calibration(r.calibration)
    out = {"policy": r.policy.value, "calibration": str(cal) if cal else None, "p_threshold": r.p_threshold,
           "e_threshold": r.e_threshold, "domain_floor": r.domain_similarity_floor}
    if cal is not None:
        try:
            fitted = RouterFile.load(cal)
            out.update(p_threshold=fitted.p_threshold, e_threshold=fitted.e_threshold)
        except (OSError, ValueError):
            out["calibration"] = f"{cal} (unreadable)"
    return out


# ----------------------------------------------------------------------------------------------------------------
# The deployment


@serve.deployment(name="Gateway")
@serve.ingress(app)
class Gateway(TierCaller):
    """Ingress: validates requests, picks the tier and domain, calls T and E through DeploymentHandles."""

    def __init__(self, cfg_dict: dict[str, Any], traditional: Any, experts: Any, augmenter: Any = None):
        from pet.config.schema import PetConfig

        cfg = PetConfig.model_validate(cfg_dict)
        super().__init__(cfg, traditional, experts)
        self.augmenter = augmenter
        self.admission = Admission(cfg.serve.gateway.max_inflight, cfg.serve.gateway.retry_after_s)
        self._crypto: Any = None
        from pet.ledger import Meter

        self.meter = Meter.from_config(cfg)
        self._background: set[asyncio.Task] = set()
        self._status_cache: tuple[float, dict[str, Any]] = (0.0, {})
        # Through sys.modules: Serve pickles this class by value, so its own globals are a copy, while the
        # route functions above read the real module's _LIVE.
        importlib.import_module("pet.serve.gateway")._LIVE["gateway"] = self
        self.warm_up()

    def in_background(self, coro: Any) -> None:
        """Run ``coro`` without awaiting it, keeping a reference until it finishes (asyncio holds weak ones)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def crypto(self) -> Any:
        """The security module's GatewayCrypto, loaded on first use (404 when the module is absent)."""
        if self._crypto is None:
            try:
                from pet.security.envelope import GatewayCrypto
            except ImportError:
                raise ApiError(404, "no_crypto", "encryption is not available on this gateway") from None
            try:
                self._crypto = GatewayCrypto.from_config(self.cfg)
            except Exception as err:  # no key ring yet (`pet keys init`), unreadable keys: not the client's fault
                log.warning("pet gateway: keys unavailable (%s)", type(err).__name__)
                raise ApiError(503, "no_keys", "this gateway has no usable keys yet; retry later",
                               {"Retry-After": str(self.cfg.serve.gateway.retry_after_s)}) from None
        return self._crypto

    async def experts_info(self) -> dict[str, Any]:
        """Registered domains (name, base model, created, metrics) and adapters loaded per replica."""
        out = []
        reg = self.registry()
        for name in self.domains(refresh=True):
            try:
                rec = reg.get(name)
                out.append({"name": name, "base_model": rec.base_model, "created": rec.created,
                            "exemplars": rec.exemplar_count, "metrics": rec.metrics})
            except Exception:  # removed or broken between listing and reading
                out.append({"name": name, "error": "unreadable"})
        loaded: dict[str, Any] = {}
        try:
            stats = await asyncio.wait_for(self.experts.stats.remote(), timeout=2.0)
            loaded[stats["replica"]] = stats["loaded_adapters"]
        except Exception:
            pass
        return {"experts": out, "loaded_adapters": loaded}

    async def status(self) -> dict[str, Any]:
        """Serve's view of the deployments of this application (cached for 2 s)."""
        when, cached = self._status_cache
        if time.monotonic() - when < 2.0:
            return cached
        from pet.serve.control import app_status

        result = await asyncio.to_thread(app_status, self.cfg.serve.app_name)
        result["experts"] = await self.experts_info()
        result["router"] = router_info(self.cfg)
        self._status_cache = (time.monotonic(), result)
        return result
