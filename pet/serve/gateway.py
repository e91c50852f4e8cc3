"""``Gateway``: the FastAPI ingress of the Serve graph, a replica whose routes are its own methods.

:class:`GatewayReplica` is the whole gateway without Serve: the :class:`pet.serve.dispatch.Dispatcher` (tier calls,
router decisions, fallbacks) plus the route groups of :mod:`pet.serve.routes` as mixins (the generate API, keys,
augment, OpenAI-compatible). :meth:`GatewayReplica.api` builds a FastAPI app whose routes are that replica's bound
methods; Serve calls it once the replica is constructed (``__serve_build_asgi_app__`` of ``@serve.ingress()``), so
no global holds the live replica and tests run the same app on a stand-in. :data:`Gateway` is the deployment.
Bodies are either plaintext JSON (refused unless ``crypto.allow_plaintext``) or ``{"pet_envelope": ...}`` opened with
:class:`pet.security.gateway.GatewayCrypto`; the reply is then sealed. Nothing here logs or labels prompt text.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import FastAPI
from ray import serve

from pet.config.schema import PetConfig
from pet.ledger import Meter
from pet.security.gateway import GatewayCrypto
from pet.serve.bodies import install_error_handlers
from pet.serve.dispatch import Dispatcher
from pet.serve.guard import Admission
from pet.serve.routes import add_routes
from pet.serve.routes.augment import AugmentRoutes
from pet.serve.routes.core import CoreRoutes
from pet.serve.routes.keys import KeyRoutes
from pet.serve.routes.openai import OpenAIRoutes
from pet.serve.schemas import ApiError

log = logging.getLogger("ray.serve")


class GatewayReplica(Dispatcher, CoreRoutes, KeyRoutes, AugmentRoutes, OpenAIRoutes):
    """One gateway replica: validates requests, asks the router, calls T and E through their handles."""

    def __init__(self, cfg_dict: dict[str, Any], traditional: Any, experts: Any, augmenter: Any = None):
        cfg = PetConfig.model_validate(cfg_dict)
        super().__init__(cfg, traditional, experts)
        self.augmenter = augmenter
        self.admission = Admission(cfg.serve.gateway.max_inflight, cfg.serve.gateway.retry_after_s)
        self.meter = Meter.from_config(cfg)
        self._crypto: GatewayCrypto | None = None
        self._background: set[asyncio.Task] = set()
        self.warm_up()

    def api(self) -> FastAPI:
        """A FastAPI app serving this replica's routes, with JSON errors."""
        app = FastAPI(title="pet gateway", version="1", docs_url=None, redoc_url=None, openapi_url=None)
        install_error_handlers(app)
        add_routes(app, self)
        return app

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Serve's hook: the replica's ASGI app, built after ``__init__``."""
        return self.api()

    def in_background(self, coro: Any) -> None:
        """Run ``coro`` without awaiting it, keeping a reference until it finishes (asyncio holds weak ones)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def crypto(self) -> GatewayCrypto:
        """The GatewayCrypto of the config's keys, loaded on first use (503 while there are no usable keys)."""
        if self._crypto is None:
            try:
                self._crypto = GatewayCrypto.from_config(self.cfg)
            except Exception as err:  # no key ring yet (`pet keys init`), unreadable keys: not the client's fault
                log.warning("pet gateway: keys unavailable (%s)", type(err).__name__)
                raise ApiError(503, "no_keys", "this gateway has no usable keys yet; retry later",
                               {"Retry-After": str(self.cfg.serve.gateway.retry_after_s)}) from None
        return self._crypto


Gateway = serve.deployment(name="Gateway")(serve.ingress()(GatewayReplica))
