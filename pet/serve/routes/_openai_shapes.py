"""Request validation, error bodies and response objects of the OpenAI-compatible routes (no FastAPI, no Ray).

Kept apart from :mod:`pet.serve.routes.openai` (the HTTP side) so that the shapes can be tested and reused
without a gateway. Messages never quote request content: validation errors name fields, not values.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

MODEL_AUTO = "pet-auto"
MODEL_T = "pet-t"
EXPERT_PREFIX = "pet-e-"
MAX_ID_CHARS = 128


class OpenAIError(Exception):
    """An error in OpenAI's JSON shape: ``{"error": {"message", "type", "param", "code"}}``."""

    TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
             404: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error"}

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers or {}

    @property
    def type(self) -> str:
        """OpenAI's error type for the status (5xx: server_error)."""
        return self.TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    @classmethod
    def from_gateway(cls, err: Exception, model: str | None = None) -> OpenAIError:
        """Translate the gateway's ApiError (status, code, message) into OpenAI's shape and status codes."""
        status = int(getattr(err, "status", 500))
        code = getattr(err, "code", None) or "internal"
        message = getattr(err, "message", None) or f"internal error ({type(err).__name__})"
        if code == "unknown_domain" and model and model.startswith(EXPERT_PREFIX):
            return cls(404, "the requested model does not exist (no such expert domain)", "model_not_found", "model")
        if status == 422:  # OpenAI reports invalid parameters as 400
            status = 400
        if code == "prompt_too_long":
            code = "context_length_exceeded"
        return cls(status, message, code, headers=getattr(err, "headers", None))


class ChatMessage(BaseModel):
    """One OpenAI chat message; content is a string or a list of text parts."""

    model_config = ConfigDict(extra="ignore")

    role: StrictStr
    content: StrictStr | list[dict[str, Any]] | None = None

    def to_pet(self, index: int) -> dict[str, str]:
        """The {role, content} dict the tiers take; ``developer`` counts as ``system``."""
        role = "system" if self.role == "developer" else self.role
        if role not in ("system", "user", "assistant"):
            raise OpenAIError(400, f"messages[{index}].role is not supported (use system, developer, "
                              "user, assistant)", "invalid_value", f"messages[{index}].role")
        if isinstance(self.content, str):
            return {"role": role, "content": self.content}
        if not self.content:
            raise OpenAIError(400, f"messages[{index}].content is empty", "invalid_value",
                              f"messages[{index}].content")
        texts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise OpenAIError(400, f"messages[{index}].content: only text parts are supported",
                                  "invalid_value", f"messages[{index}].content")
            texts.append(part["text"])
        return {"role": role, "content": "".join(texts)}


class ChatRequest(BaseModel):
    """Body of ``POST /v1/chat/completions``. Unknown OpenAI fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: StrictStr = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: StrictBool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: StrictInt | None = Field(None, ge=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    temperature: StrictFloat | None = Field(None, ge=0, le=2)
    top_p: StrictFloat | None = Field(None, gt=0, le=1)
    n: StrictInt | None = Field(None, ge=1)
    stop: StrictStr | list[StrictStr] | None = None
    user: StrictStr | None = Field(None, max_length=256)
    safety_identifier: StrictStr | None = Field(None, max_length=256)
    pet_questioner: dict[str, Any] | None = Field(
        None, description="pet extension: the asker's questioner profile (see docs/questioner.md)")

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> list[str] | None:
        stops = [v] if isinstance(v, str) else v
        if stops is not None and (len(stops) > 4 or any(not s for s in stops)):
            raise ValueError("at most 4 non-empty stop strings")
        return stops

    def unsupported(self) -> None:
        """Refuse what pet cannot honour instead of silently ignoring it."""
        extra = self.model_extra or {}
        if self.n not in (None, 1):
            raise OpenAIError(400, "n > 1 is not supported", "unsupported_value", "n")
        for key in ("tools", "functions"):
            if extra.get(key):
                raise OpenAIError(400, f"{key} are not supported by pet models", "unsupported_parameter", key)
        if extra.get("logprobs"):
            raise OpenAIError(400, "logprobs are not supported; the pet field carries confidence signals",
                              "unsupported_parameter", "logprobs")
        fmt = extra.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
            raise OpenAIError(400, "only response_format type 'text' is supported", "unsupported_value",
                              "response_format")

    def max_new_tokens(self) -> int | None:
        """``max_completion_tokens`` (the current name) or ``max_tokens`` (the old one)."""
        return self.max_completion_tokens or self.max_tokens

    def pet_messages(self) -> list[dict[str, str]]:
        """The messages as the tiers take them."""
        return [m.to_pet(i) for i, m in enumerate(self.messages)]


def parse_chat(data: Any) -> ChatRequest:
    """Validate a decoded body; OpenAIError 400 naming the fields (never their values)."""
    if not isinstance(data, dict):
        raise OpenAIError(400, "the body must be a JSON object", "invalid_json")
    try:
        req = ChatRequest.model_validate(data)
    except ValidationError as err:
        problems = [f"{'.'.join(str(x) for x in e['loc']) or 'body'}: {e['msg']}"
                    for e in err.errors(include_input=False, include_url=False)]
        first = err.errors()[0]["loc"]
        raise OpenAIError(400, "; ".join(problems), "invalid_value",
                          ".".join(str(x) for x in first) or None) from None
    req.unsupported()
    return req


def tier_of(model: str, domains: list[str]) -> tuple[str, str | None]:
    """``model`` -> (gateway tier, domain); OpenAIError 404 for a model that does not exist."""
    if model == MODEL_AUTO:
        return "auto", None
    if model == MODEL_T:
        return "t", None
    if model.startswith(EXPERT_PREFIX) and model[len(EXPERT_PREFIX):] in domains:
        return "e", model[len(EXPERT_PREFIX):]
    raise OpenAIError(404, "the requested model does not exist; GET /v1/models lists "
                      f"{MODEL_AUTO}, {MODEL_T} and {EXPERT_PREFIX}<domain>", "model_not_found", "model")


def model_list(domains: list[str], created: int) -> dict[str, Any]:
    """Body of ``GET /v1/models``."""
    ids = [MODEL_AUTO, MODEL_T] + [EXPERT_PREFIX + d for d in domains]
    return {"object": "list", "data": [model_card(i, created) for i in ids]}


def model_card(model: str, created: int) -> dict[str, Any]:
    """One model object."""
    return {"id": model, "object": "model", "created": created, "owned_by": "pet"}


def request_id(headers: Any) -> str:
    """``X-Request-Id`` or ``Idempotency-Key`` (so that a client retry is billed once), else a fresh id."""
    rid = headers.get("x-request-id") or headers.get("idempotency-key")
    if rid is None:
        return uuid.uuid4().hex
    if not 1 <= len(rid) <= MAX_ID_CHARS or not rid.isprintable():
        raise OpenAIError(400, f"the request id header must be 1-{MAX_ID_CHARS} printable characters",
                          "invalid_value", "X-Request-Id")
    return rid


class StopScanner:
    """Cuts streamed text at the first stop string, holding back just enough to see one split across pieces."""

    def __init__(self, stops: list[str] | None):
        self.stops = stops or []
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.buf = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """Text that is safe to send now."""
        if self.stopped:
            return ""
        self.buf += piece
        hits = [i for i in (self.buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.buf, self.stopped = self.buf[:min(hits)], "", True
            return out
        cut = len(self.buf) - self.hold
        out, self.buf = self.buf[:max(cut, 0)], self.buf[max(cut, 0):]
        return out

    def flush(self) -> str:
        """The held-back rest at the end of the stream."""
        out, self.buf = ("" if self.stopped else self.buf), ""
        return out


def completion(rid: str, model: str, text: str, finish: str, usage: dict[str, int], pet: dict[str, Any]) -> dict:
    """A ``chat.completion`` object with the extra ``pet`` field."""
    return {
        "id": f"chatcmpl-{rid}", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                     "logprobs": None, "finish_reason": finish}],
        "usage": usage, "system_fingerprint": None, "pet": pet,
    }


def chunk(rid: str, model: str, created: int, delta: dict[str, Any], finish: str | None = None,
          pet: dict[str, Any] | None = None, usage: dict[str, int] | None = None, choices: bool = True) -> dict:
    """A ``chat.completion.chunk`` object (the last one carries ``pet``; a usage chunk has no choices)."""
    out: dict[str, Any] = {
        "id": f"chatcmpl-{rid}", "object": "chat.completion.chunk", "created": created, "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}] if choices else [],
    }
    if usage is not None:
        out["usage"] = usage
    if pet is not None:
        out["pet"] = pet
    return out


def usage_dict(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's usage object."""
    return {"prompt_tokens": int(prompt_tokens), "completion_tokens": int(completion_tokens),
            "total_tokens": int(prompt_tokens) + int(completion_tokens)}
