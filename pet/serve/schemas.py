"""Request models of the gateway HTTP API and the one error type routes raise.

Every body is validated by a pydantic model with ``extra="forbid"``; :func:`validation_message` turns a
validation error into a message that names fields but never echoes their values (a prompt must not land
in an error body or a log line).
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)


class ApiError(Exception):
    """An HTTP error with a JSON body ``{"error": {"code", "message"}}``; never carries prompt text."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON error body."""
        return {"error": {"code": self.code, "message": self.message, "status": self.status}}


def unicode_text(value: str | None) -> str | None:
    """``value`` if it can be encoded as UTF-8; a lone surrogate (JSON ``"\\ud800"``) is refused by name only."""
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("not valid Unicode text (an unpaired surrogate)") from None
    return value


class Tier(StrEnum):
    """Which cloud tier answers: T, E, or let the gateway choose."""

    t = "t"
    e = "e"
    auto = "auto"


class Message(BaseModel):
    """One chat turn."""

    model_config = ConfigDict(extra="forbid")

    role: StrictStr = Field(pattern="^(system|user|assistant)$")
    content: StrictStr

    _content_is_text = field_validator("content")(lambda v: unicode_text(v))


class GenerateRequest(BaseModel):
    """Body of ``POST /v1/generate``."""

    model_config = ConfigDict(extra="forbid")

    prompt: StrictStr | None = Field(None, min_length=1, description="one user turn")
    messages: list[Message] | None = Field(None, min_length=1, description="a chat transcript")
    tier: Tier = Tier.auto
    domain: StrictStr | None = Field(None, min_length=1, max_length=128)
    max_new_tokens: StrictInt | None = Field(None, ge=1)
    temperature: StrictFloat | None = Field(None, ge=0, le=5)
    top_p: StrictFloat | None = Field(None, gt=0, le=1)
    user: StrictStr | None = Field(None, max_length=256)
    request_id: StrictStr | None = Field(None, min_length=1, max_length=128)
    questioner: dict[str, Any] | None = Field(
        None, description="the asker's profile (pet.questioner.profile), checked against questioner.* by the gateway")

    _text = field_validator("prompt", "domain", "user", "request_id")(lambda v: unicode_text(v))

    @model_validator(mode="after")
    def _one_input(self) -> GenerateRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        return self

    def prompt_value(self) -> str | list[dict[str, str]]:
        """The prompt as the model interface takes it."""
        if self.prompt is not None:
            return self.prompt
        return [m.model_dump() for m in self.messages or []]

    def prompt_chars(self) -> int:
        """Characters of user-supplied text (what ``max_prompt_chars`` limits)."""
        if self.prompt is not None:
            return len(self.prompt)
        return sum(len(m.content) for m in self.messages or [])

    def routing_text(self) -> str:
        """The text the domain classifier sees: the prompt, or the last user turn."""
        if self.prompt is not None:
            return self.prompt
        users = [m.content for m in self.messages or [] if m.role == "user"]
        return users[-1] if users else (self.messages or [])[-1].content

    def id(self) -> str:
        """The request id (given, or a fresh one)."""
        return self.request_id or uuid.uuid4().hex


def validation_message(err: ValidationError) -> str:
    """``field: problem`` lines without the offending values."""
    parts = []
    for e in err.errors(include_input=False, include_url=False):
        loc = ".".join(str(x) for x in e["loc"]) or "body"
        msg = "unknown field" if e["type"] == "extra_forbidden" else e["msg"]
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def parse_generate(payload: Any) -> GenerateRequest:
    """Validate a decoded JSON body; raises ApiError 422 naming the fields."""
    if not isinstance(payload, dict):
        raise ApiError(422, "invalid_request", "the body must be a JSON object")
    try:
        return GenerateRequest.model_validate(payload)
    except ValidationError as err:
        raise ApiError(422, "invalid_request", validation_message(err)) from None
