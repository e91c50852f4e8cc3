"""Chat-template rendering on the device without transformers.

The bundle carries the model's Jinja chat template (``chat_template.jinja``). It is rendered here with
jinja2's immutable sandbox using the same environment options Hugging Face uses (``trim_blocks``,
``lstrip_blocks``, loop controls, a ``raise_exception`` global and a ``tojson`` filter), so the text equals
``tokenizer.apply_chat_template(..., tokenize=False)`` (a test compares the two). Models without a template
get the same plain transcript :func:`pet.models.lm.render_prompt` uses.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from pet.models.messages import ROLES, validate_messages  # noqa: F401  (re-exported)


def _raise(message: str) -> None:
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=8)
def _compile(template: str) -> Any:
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


class ChatRenderer:
    """Turns a prompt (string = one user turn, or a message list) into the text the model continues."""

    def __init__(self, template: str | None, special_tokens: dict[str, str] | None = None):
        self.template = template or None
        self.special_tokens = dict(special_tokens or {})

    def render(self, prompt: str | Sequence[dict[str, str]], raw: bool = False,
               add_generation_prompt: bool = True) -> str:
        """The templated text (with the assistant turn opened), or ``prompt`` itself when ``raw``."""
        if raw:
            if not isinstance(prompt, str):
                raise ValueError("raw=True needs a string prompt")
            return prompt
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else validate_messages(prompt)
        if self.template is None:
            return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
        return _compile(self.template).render(
            messages=messages, add_generation_prompt=add_generation_prompt, **self.special_tokens
        )
