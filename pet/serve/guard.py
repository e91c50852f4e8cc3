"""What the gateway refuses before any work: stalled or oversized uploads, hostile JSON, load over capacity.

- :class:`BodyGuard` is a pure ASGI middleware that Serve runs *in front of its own admission*: in the HTTP
  proxy and in each Gateway replica's direct-ingress server, through Ray's hook
  ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=pet.serve.guard:proxy_middlewares`` (set with its limits by
  :func:`guard_env` in the environment Ray starts with: ``pet deploy`` does it, ``pet build`` prints it for
  a cluster's ``ray start``). It reads the whole body
  under a deadline before the request reaches a replica, so a client that sends headers and then stalls holds a
  socket and a coroutine, never one of the Gateway's ``max_ongoing_requests`` slots: ``/healthz`` and other
  clients keep answering. It also caps header and body size.
- :func:`loads_strict` decodes a body with structural limits (depth, values, number length), refuses
  duplicate keys and non-JSON constants, and raises :class:`ApiError` 400/422 instead of a RecursionError or
  ValueError surfacing as 500.
- :class:`Admission` is the gateway's own capacity: over ``serve.gateway.max_inflight`` requests in flight a
  new one gets a JSON 503 with ``Retry-After`` before any tier's queue is touched.

uvicorn starts no timer until a request's headers are complete, so a client that never finishes its headers
holds only a socket: bound that with the load balancer in front (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from contextlib import contextmanager
from typing import Any

from pet.serve.schemas import ApiError

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
ENV_PREFIX = "PET_GUARD_"


class _TooLarge(Exception):
    pass


class _Gone(Exception):
    pass


async def _reply(send: Send, status: int, code: str, message: str) -> None:
    """A JSON error in the gateway's shape; ``Connection: close`` since the rest of the body is not read."""
    body = json.dumps({"error": {"code": code, "message": message, "status": status}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodyGuard:
    """ASGI middleware: header-size cap (431), body-size cap (413) and a whole-body deadline (408)."""

    def __init__(self, app: Any, body_timeout_s: float = 10.0, max_body_bytes: int = 1 << 20,
                 max_header_bytes: int = 16384):
        self.app = app
        self.body_timeout_s = float(body_timeout_s)
        self.max_body_bytes = int(max_body_bytes)
        self.max_header_bytes = int(max_header_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        size += sum(len(k) + len(v) + 4 for k, v in scope.get("headers") or ())
        if size > self.max_header_bytes:
            return await _reply(send, 431, "headers_too_large",
                                f"the request line and headers are {size} bytes; the limit is {self.max_header_bytes}")
        if scope.get("method") not in BODY_METHODS:
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return await _reply(send, 413, "too_large",
                                f"the body is {int(declared)} bytes; the limit is {self.max_body_bytes}")
        try:
            body = await asyncio.wait_for(self._read(receive), timeout=self.body_timeout_s)
        except TimeoutError:
            return await _reply(send, 408, "body_timeout",
                                f"the body did not arrive within {self.body_timeout_s:g} s of the headers")
        except _TooLarge:
            return await _reply(send, 413, "too_large", f"the body exceeds the limit of {self.max_body_bytes} bytes")
        except _Gone:
            return None  # the client hung up mid-upload: nobody to answer
        return await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> bytes:
        chunks, total = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise _Gone
            piece = msg.get("body", b"")
            total += len(piece)
            if total > self.max_body_bytes:
                raise _TooLarge
            chunks.append(piece)
            if not msg.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands out the buffered body once, then the client's own (for disconnect detection)."""
    sent = False

    async def inner() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return inner


def guard_options(cfg: Any) -> dict[str, Any]:
    """BodyGuard's keyword arguments from a PetConfig's ``serve.gateway`` section."""
    gw = cfg.serve.gateway
    return {"body_timeout_s": gw.body_timeout_s, "max_body_bytes": gw.max_body_bytes,
            "max_header_bytes": gw.max_header_bytes}


def guard_env(cfg: Any) -> dict[str, str]:
    """Environment for a cluster's ``ray start``: Ray's proxy hook plus the limits :func:`proxy_middlewares` reads."""
    env = {"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "pet.serve.guard:proxy_middlewares"}
    env |= {ENV_PREFIX + k.upper(): str(v) for k, v in guard_options(cfg).items()}
    return env


def proxy_middlewares() -> list[Any]:
    """Ray's ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` hook: a BodyGuard configured from ``PET_GUARD_*``."""
    from starlette.middleware import Middleware

    kinds = {"body_timeout_s": float, "max_body_bytes": int, "max_header_bytes": int}
    opts = {k: kind(os.environ[ENV_PREFIX + k.upper()]) for k, kind in kinds.items()
            if ENV_PREFIX + k.upper() in os.environ}
    return [Middleware(BodyGuard, **opts)]


# ----------------------------------------------------------------------------------------------------------------
# JSON with limits


def loads_strict(raw: bytes, max_depth: int = 32, max_items: int = 10000, max_number_chars: int = 32) -> Any:
    """Decode a JSON body; ApiError 400 for malformed or over-limit input, 422 for a repeated key."""
    def number(kind: Callable[[str], Any]) -> Callable[[str], Any]:
        def parse(text: str) -> Any:
            if len(text) > max_number_chars:
                raise ApiError(400, "number_too_long", f"a JSON number has {len(text)} characters; "
                                                       f"the limit is {max_number_chars}")
            return kind(text)
        return parse

    def constant(name: str) -> Any:
        raise ApiError(400, "invalid_json", f"{name} is not valid JSON")

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(items)
        if len(out) != len(items):
            raise ApiError(422, "duplicate_key", "a JSON object repeats a key; send each key once")
        return out

    if not raw.strip():
        raise ApiError(400, "invalid_json", "the body is empty; send a JSON object")
    try:
        data = json.loads(raw, parse_int=number(int), parse_float=number(float), parse_constant=constant,
                          object_pairs_hook=pairs)
    except RecursionError:
        raise ApiError(400, "too_deep", f"the JSON nests deeper than {max_depth} levels") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError(400, "invalid_json", f"malformed JSON at byte {getattr(err, 'pos', 0)}") from None
    _check_shape(data, max_depth, max_items)
    return data


def _check_shape(data: Any, max_depth: int, max_items: int) -> None:
    """Iterative walk (no recursion for an attacker to exhaust): depth and total number of values."""
    stack, count = [(data, 1)], 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > max_items:
            raise ApiError(400, "too_many_values", f"the JSON holds more than {max_items} values")
        if depth > max_depth:
            raise ApiError(400, "too_deep", f"the JSON nests deeper than {max_depth} levels")
        if isinstance(node, str):
            _check_text(node)
        elif isinstance(node, dict):
            for key in node:
                _check_text(key)
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def _check_text(text: str) -> None:
    # JSON's \\ud800 escapes decode to lone surrogates, which no tokenizer or UTF-8 writer takes.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "invalid_text", "a JSON string is not valid Unicode (an unpaired surrogate escape)") \
            from None


# ----------------------------------------------------------------------------------------------------------------
# Admission


class Admission:
    """The gateway's own capacity: at most ``limit`` answered requests in flight per replica, else JSON 503.

    One event loop per replica: the counter needs no lock.
    """

    def __init__(self, limit: int, retry_after_s: int = 1):
        self.limit = int(limit)
        self.retry_after_s = int(retry_after_s)
        self.active = 0

    def acquire(self) -> None:
        """Take a slot or raise ApiError 503 with ``Retry-After``."""
        if self.active >= self.limit:
            raise ApiError(503, "overloaded", f"the gateway is answering its limit of {self.limit} requests; "
                           "retry later", {"Retry-After": str(self.retry_after_s)})
        self.active += 1

    def release(self) -> None:
        """Give a slot back."""
        self.active = max(0, self.active - 1)

    @contextmanager
    def slot(self) -> Any:
        """``with admission.slot():`` around one answered request."""
        self.acquire()
        try:
            yield
        finally:
            self.release()
