"""Extra gateway routes (interface 3): every module in this package defines
``register_routes(app: FastAPI, gateway_getter)``; the gateway includes them all when it is imported.

``gateway_getter()`` returns the live Gateway replica, which offers ``await generate(payload)`` (the
/v1/generate logic on a plaintext dict), ``crypto()`` (GatewayCrypto), ``cfg`` and the handles
``.traditional``, ``.experts`` and ``.augmenter`` (None unless bound). Raise
:class:`pet.serve.schemas.ApiError` for a JSON error with a status code.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def route_modules() -> list[str]:
    """Names of the route modules in this package, sorted (the order routes are registered in)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def include_routes(app: Any, gateway_getter: Callable[[], Any]) -> list[str]:
    """Import each route module and call its ``register_routes``; returns the modules included.

    A module that fails to import or register is skipped with a logged error naming it, so one broken
    extension cannot take the whole gateway down.
    """
    included = []
    for name in route_modules():
        try:
            module = importlib.import_module(f"{__name__}.{name}")
            register = getattr(module, "register_routes", None)
            if register is None:
                log.error("pet.serve.routes.%s has no register_routes(app, gateway_getter); skipped", name)
                continue
            register(app, gateway_getter)
            included.append(name)
        except Exception as err:
            log.error("pet.serve.routes.%s failed to load (%s: %s); skipped", name, type(err).__name__, err)
    return included
