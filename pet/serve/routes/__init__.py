"""The gateway's routes, grouped by API: each module holds one mixin of :class:`pet.serve.gateway.GatewayReplica`.

- :mod:`.core`: ``POST /v1/generate``, ``GET /v1/experts``, ``GET /v1/status``, ``GET /healthz``, ``GET /metrics``.
- :mod:`.keys`: ``GET /v1/keys``, ``GET /v1/keys/signing``.
- :mod:`.augment`: ``POST /v1/augment``.
- :mod:`.openai`: ``POST /v1/chat/completions``, ``GET /v1/models[/{model}]``.

A route is a method marked with :func:`route`; :func:`add_routes` registers the marked methods of one object, bound
to it, on a FastAPI app (the replica builds its app that way, and tests build one over a stand-in gateway). A new
route group is a new mixin added to ``GatewayReplica``'s bases. Raise :class:`pet.serve.schemas.ApiError` for a
JSON error with a status code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ROUTE_ATTR = "__pet_route__"


def route(method: str, path: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a gateway method as the handler of ``method path``."""
    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        setattr(fn, ROUTE_ATTR, (method.upper(), path))
        return fn

    return mark


def route_table(cls: type) -> dict[str, tuple[str, str]]:
    """``{method name: (HTTP method, path)}`` of every marked method of ``cls`` and its bases."""
    table: dict[str, tuple[str, str]] = {}
    for base in reversed(cls.__mro__):
        for name, fn in vars(base).items():
            spec = getattr(fn, ROUTE_ATTR, None)
            if spec is not None:
                table[name] = spec
    return table


def add_routes(app: Any, obj: Any) -> list[str]:
    """Register every marked method of ``obj``, bound to it, on the FastAPI ``app``; returns ``["POST /path", ...]``.

    A path is registered once: two methods claiming the same route are a programming error.
    """
    added: list[str] = []
    for name, (method, path) in sorted(route_table(type(obj)).items(), key=lambda kv: kv[1][1]):
        key = f"{method} {path}"
        if key in added:
            raise ValueError(f"{key} is claimed by two methods of {type(obj).__name__}")
        app.add_api_route(path, getattr(obj, name), methods=[method])
        added.append(key)
    return added
