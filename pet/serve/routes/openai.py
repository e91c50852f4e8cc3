"""OpenAI-compatible routes of the gateway: ``POST /v1/chat/completions`` and ``GET /v1/models[/{id}]``.

Standard OpenAI clients work unchanged (``base_url="http://127.0.0.1:8000/v1"``). ``model`` selects
``pet-auto`` (the router: E when a domain matches and the expert is confident, else T), ``pet-t`` or
``pet-e-<domain>``. Responses carry an extra ``pet`` field (answering tier, escalation path, domain,
fallback, confidence signals) that standard clients ignore. Errors use OpenAI's error JSON shape.

Why only with ``crypto.allow_plaintext``: OpenAI clients send plaintext JSON, while pet's device traffic is
HPKE-encrypted end to end to the gateway. Serving these routes on a gateway that refuses plaintext would
open a plaintext side door, so they answer 403 (OpenAI ``permission_error``) unless plaintext is allowed.

Streaming (``stream: true``): ``pet-t`` streams tokens as T generates them (``generate_stream`` through
``handle.options(stream=True)``); ``pet-auto`` and ``pet-e-*`` are generated in full (the router must see
the whole expert answer before it can escalate) and then sent as chunks of SSE.

Metering: every answered request is recorded in the ledger (``pet.ledger.Meter``, which never fails the
request) under the request id (``X-Request-Id`` / ``Idempotency-Key`` header, else a fresh id), so a
retried request is billed once; the user is the body's ``user`` (or ``safety_identifier``), else the
``X-Pet-User`` header, else ``anonymous``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from functools import lru_cache
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from pet.questioner.profile import ProfileError, parse_profile, payload_bytes
from pet.serve.bodies import read_json
from pet.serve.dispatch import replica_died
from pet.serve.routes import route
from pet.serve.routes._openai_shapes import (
    EXPERT_PREFIX,
    MODEL_T,
    OpenAIError,
    StopScanner,
    chunk,
    completion,
    model_card,
    model_list,
    parse_chat,
    request_id,
    tier_of,
    usage_dict,
)
from pet.serve.schemas import ApiError

log = logging.getLogger("ray.serve")
STARTED = int(time.time())


async def domains_of(gw: Any) -> list[str]:
    """Registered expert domains (the registry is read from disk, so off the event loop)."""
    return list(await asyncio.to_thread(gw.domains, True))


@lru_cache(maxsize=4)
def _tokenizer(folder: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def count_stream_tokens(cfg: Any, messages: list[dict[str, str]], text: str) -> tuple[int, int, bool]:
    """(prompt, completion, estimated) token counts of a streamed T answer, with T's own tokenizer and template.

    The stream yields text only, so the answer is re-tokenized; if the tokenizer cannot be loaded the counts
    are estimated from characters (about 4 per token) and flagged.
    """
    try:
        from pet.models.lm import render_prompt
        from pet.paths import resolve_model

        tok = _tokenizer(str(resolve_model(cfg.traditional.model, cfg.models_dir)))
        prompt = len(tok(render_prompt(tok, messages), add_special_tokens=False)["input_ids"])
        return prompt, len(tok(text, add_special_tokens=False)["input_ids"]), False
    except Exception as err:  # counting must never fail an answered request
        log.warning("pet openai: token counting fell back to an estimate (%s)", type(err).__name__)
        chars = sum(len(m["content"]) for m in messages)
        return max(1, chars // 4), max(1, len(text) // 4) if text else 0, True


async def _released(stream: AsyncIterator[bytes], release: Callable[[], None]) -> AsyncIterator[bytes]:
    """``stream`` that gives its admission slot back when it ends, fails or the client goes away."""
    try:
        async for piece in stream:
            yield piece
    finally:
        release()


def _sse(obj: Any) -> bytes:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n".encode()


def _pet_field(result: dict[str, Any], metered: bool | None, streamed: str) -> dict[str, Any]:
    keys = ("request_id", "tier", "domain", "escalation", "fallback", "fallback_reason", "signals", "latency_ms")
    out = {k: result.get(k) for k in keys}
    out.update(metered=metered, streamed=streamed)
    return out


# ----------------------------------------------------------------------------------------------------------------
# The request


class _Call:
    """One validated chat request, bound to the gateway that answers it."""

    def __init__(self, gw: Any, data: Any, headers: Any):
        self.gw, self.req = gw, parse_chat(data)
        self.rid = request_id(headers)
        self.user = self.req.user or self.req.safety_identifier or headers.get("x-pet-user") or "anonymous"
        self.messages = self.req.pet_messages()
        self.t0 = time.perf_counter()

    async def payload(self) -> dict[str, Any]:
        """The payload of the gateway's generate (the body of ``POST /v1/generate``)."""
        expert = self.req.model.startswith(EXPERT_PREFIX)
        self.tier, self.domain = tier_of(self.req.model, await domains_of(self.gw) if expert else [])
        out = {"messages": self.messages, "tier": self.tier, "max_new_tokens": self.req.max_new_tokens(),
               "temperature": self.req.temperature, "top_p": self.req.top_p, "user": self.user[:256],
               "request_id": self.rid}
        if self.domain is not None:
            out["domain"] = self.domain
        if self.req.pet_questioner is not None:
            out["questioner"] = self.req.pet_questioner
        return out

    async def generate(self) -> dict[str, Any]:
        """The gateway's answer, with stop strings applied."""
        try:
            result = await self.gw.generate(await self.payload())
        except OpenAIError:
            raise
        except Exception as err:
            raise OpenAIError.from_gateway(err, self.req.model) from None
        text, finish = result["text"], result.get("finish_reason") or "stop"
        scan = StopScanner(self.req.stop)
        cut = scan.feed(text) + scan.flush()
        if scan.stopped:
            text, finish = cut, "stop"
        result["text"], result["finish_reason"] = text, finish
        return result

    async def meter(self, tier: str, prompt_tokens: int, completion_tokens: int) -> bool | None:
        """Record the answered request and the size of a profile it carried (never raises)."""
        if self.req.pet_questioner is not None:
            await self.gw.meter.arecord_shared(self.rid, self.user, tier,
                                               {"questioner_profile": payload_bytes(self.req.pet_questioner)})
        return await self.gw.meter.arecord_usage(self.rid, self.user, tier, prompt_tokens, completion_tokens)

    # -- streaming ---------------------------------------------------------------------------------------------

    def _check_t_limits(self) -> None:
        # /v1/generate checks these for non-streamed calls; the T stream bypasses it, so check here.
        cfg = self.gw.cfg
        chars, limit = sum(len(m["content"]) for m in self.messages), cfg.serve.gateway.max_prompt_chars
        if chars > limit:
            raise OpenAIError(413, f"the prompt has {chars} characters; the limit is {limit}",
                              "context_length_exceeded", "messages")
        tok_limit = cfg.traditional.generation.max_new_tokens_limit
        if (self.req.max_new_tokens() or 0) > tok_limit:
            raise OpenAIError(400, f"max_tokens must be <= {tok_limit}", "invalid_value", "max_tokens")

    async def t_stream(self) -> tuple[AsyncIterator[str], Any]:
        """T's piece generator, started, and its first piece (so early failures still get a status code)."""
        payload = await self.payload()
        self._check_t_limits()
        t_payload = {"prompt": self.messages, "max_new_tokens": payload["max_new_tokens"],
                     "temperature": self.req.temperature, "top_p": self.req.top_p}
        if self.req.pet_questioner is not None:  # /v1/generate validates it for the other models
            try:
                parse_profile(self.req.pet_questioner, self.gw.cfg.questioner)
            except ProfileError as err:
                raise OpenAIError(400, str(err), "invalid_profile", "pet_questioner") from None
            if self.gw.cfg.questioner.mode != "off":
                t_payload["questioner"] = self.req.pet_questioner
        gen = self.gw.traditional.options(stream=True).generate_stream.remote(t_payload)
        try:
            first = await asyncio.wait_for(gen.__anext__(), timeout=self.gw.cfg.serve.gateway.request_timeout_s)
        except StopAsyncIteration:
            first = None
        except TimeoutError:
            gen.cancel()
            raise OpenAIError(504, "the traditional model did not answer in time", "timeout") from None
        except Exception as err:
            # matched by name: importing ray.serve here would cost seconds in every process that imports routes
            retry = {"Retry-After": str(self.gw.cfg.serve.gateway.retry_after_s)}
            if "BackPressureError" in {c.__name__ for c in type(err).__mro__}:
                raise OpenAIError(503, "the traditional model's queue is full; retry later", "overloaded",
                                  headers=retry) from None
            if replica_died(err):
                raise OpenAIError(503, "the traditional model's replica is restarting; retry later",
                                  "replica_unavailable", headers=retry) from None
            raise OpenAIError(502, f"the traditional model failed ({type(err).__name__})", "stream_failed") from None
        return gen, first

    async def sse_t(self, gen: Any, first: str | None) -> AsyncIterator[bytes]:
        """SSE of T's answer as it is generated, then usage, ``pet`` and ``[DONE]``."""
        model, created, scan, sent = self.req.model, int(time.time()), StopScanner(self.req.stop), []
        yield _sse(chunk(self.rid, model, created, {"role": "assistant", "content": ""}))
        error = None
        try:
            piece = first
            while piece is not None:
                out = scan.feed(piece)
                if out:
                    sent.append(out)
                    yield _sse(chunk(self.rid, model, created, {"content": out}))
                if scan.stopped:
                    gen.cancel()  # stop T generating text nobody will read
                    break
                piece = await gen.__anext__()
        except StopAsyncIteration:
            pass
        except (asyncio.CancelledError, GeneratorExit):
            gen.cancel()  # the client went away: free T's replica (the partial answer is not billed)
            raise
        except Exception as err:  # mid-stream failure: OpenAI sends an error event and ends the stream
            error = OpenAIError(502, f"the traditional model failed while streaming ({type(err).__name__})",
                                "stream_failed")
        rest = scan.flush()
        if rest:
            sent.append(rest)
            yield _sse(chunk(self.rid, model, created, {"content": rest}))
        text = "".join(sent)
        prompt_tokens, completion_tokens, estimated = await asyncio.to_thread(
            count_stream_tokens, self.gw.cfg, self.messages, text)
        metered = await self.meter("t", prompt_tokens, completion_tokens) if text else None
        if error is not None:
            yield _sse(error.body())
            return
        limit = self.req.max_new_tokens() or self.gw.cfg.traditional.generation.max_new_tokens
        finish = "stop" if scan.stopped or completion_tokens < limit else "length"
        result = {"request_id": self.rid, "tier": "t", "domain": None, "escalation": ["t"], "fallback": False,
                  "fallback_reason": None, "signals": None,
                  "latency_ms": round((time.perf_counter() - self.t0) * 1000.0, 2)}
        pet = _pet_field(result, metered, "tokens") | {"usage_estimated": estimated}
        yield _sse(chunk(self.rid, model, created, {}, finish, pet=pet))
        if (self.req.stream_options or {}).get("include_usage"):
            yield _sse(chunk(self.rid, model, created, {}, usage=usage_dict(prompt_tokens, completion_tokens),
                             choices=False))
        yield b"data: [DONE]\n\n"

    async def sse_finished(self, result: dict[str, Any], metered: bool | None) -> AsyncIterator[bytes]:
        """SSE of an answer generated in full (auto and expert models), in word-sized chunks."""
        model, created = self.req.model, int(time.time())
        yield _sse(chunk(self.rid, model, created, {"role": "assistant", "content": ""}))
        text, start = result["text"], 0
        while start < len(text):
            end = text.find(" ", start + 1)
            end = len(text) if end < 0 else end
            yield _sse(chunk(self.rid, model, created, {"content": text[start:end]}))
            start = end
        u = result["usage"]
        yield _sse(chunk(self.rid, model, created, {}, result["finish_reason"],
                         pet=_pet_field(result, metered, "finished_answer")))
        if (self.req.stream_options or {}).get("include_usage"):
            yield _sse(chunk(self.rid, model, created, {}, usage=usage_dict(u["prompt_tokens"],
                                                                             u["completion_tokens"]), choices=False))
        yield b"data: [DONE]\n\n"


# ----------------------------------------------------------------------------------------------------------------
# The routes


def _error_response(err: OpenAIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


class OpenAIRoutes:
    """The OpenAI-compatible routes. Mixed into the gateway, which provides ``cfg``, ``generate``, ``domains()``,
    ``admission``, ``meter`` and ``traditional`` (T's handle, for streaming)."""

    def _check_plaintext(self) -> None:
        if not self.cfg.crypto.allow_plaintext:
            raise OpenAIError(403, "the OpenAI-compatible API is disabled: this gateway accepts only encrypted "
                              "requests (set crypto.allow_plaintext to enable it)", "plaintext_disabled")

    @route("POST", "/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Any:
        """POST /v1/chat/completions in OpenAI's shape (``stream: true`` answers as server-sent events)."""
        try:
            self._check_plaintext()
            try:
                data = await read_json(request, self.cfg)
            except Exception as err:  # ApiError 400/408/413/422 from the body's limits
                raise OpenAIError.from_gateway(err) from None
            call = _Call(self, data, request.headers)
            headers = {"X-Request-Id": call.rid}
            if call.req.stream and call.req.model == MODEL_T:
                self.admission.acquire()  # held until the stream ends
                try:
                    gen, first = await call.t_stream()
                except BaseException:
                    self.admission.release()
                    raise
                return StreamingResponse(_released(call.sse_t(gen, first), self.admission.release),
                                         media_type="text/event-stream",
                                         headers=headers | {"Cache-Control": "no-cache"})
            with self.admission.slot():
                result = await call.generate()
            u = result["usage"]
            metered = await call.meter(result["tier"], u["prompt_tokens"], u["completion_tokens"])
            if call.req.stream:
                return StreamingResponse(call.sse_finished(result, metered), media_type="text/event-stream",
                                         headers=headers | {"Cache-Control": "no-cache"})
            body = completion(call.rid, call.req.model, result["text"], result["finish_reason"],
                              usage_dict(u["prompt_tokens"], u["completion_tokens"]),
                              _pet_field(result, metered, "no"))
            return JSONResponse(body, headers=headers)
        except OpenAIError as err:
            return _error_response(err)
        except ApiError as err:  # the gateway's own refusals (admission 503) in OpenAI's shape
            return _error_response(OpenAIError.from_gateway(err))
        except Exception as err:  # never a bare 500 page; the message names the class, never request content
            log.warning("pet openai: unexpected %s", type(err).__name__)
            return _error_response(OpenAIError(500, f"internal error ({type(err).__name__})", "internal"))

    @route("GET", "/v1/models")
    async def list_models(self) -> Any:
        """GET /v1/models: pet-auto, pet-t and one pet-e-<domain> per registered expert."""
        try:
            self._check_plaintext()
            return JSONResponse(model_list(await domains_of(self), STARTED))
        except OpenAIError as err:
            return _error_response(err)

    @route("GET", "/v1/models/{model}")
    async def retrieve_model(self, model: str) -> Any:
        """GET /v1/models/{model}: one model, or 404 in OpenAI's shape."""
        try:
            self._check_plaintext()
            tier_of(model, await domains_of(self))
            return JSONResponse(model_card(model, STARTED))
        except OpenAIError as err:
            return _error_response(err)
