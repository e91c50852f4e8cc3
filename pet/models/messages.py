"""Chat messages: the one validation rule set shared by the cloud tiers and the device runtime (no torch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

ROLES = ("system", "user", "assistant")


def validate_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """Check a chat message list; raises ValueError naming what is wrong."""
    if not messages:
        raise ValueError("messages is empty")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"messages[{i}] must be an object with 'role' and 'content'")
        if m["role"] not in ROLES:
            raise ValueError(f"messages[{i}].role must be system, user or assistant")
        if not isinstance(m["content"], str):
            raise ValueError(f"messages[{i}].content must be a string")
        out.append({"role": m["role"], "content": m["content"]})
    return out
