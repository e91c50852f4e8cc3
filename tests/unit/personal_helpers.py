"""Shared by the personalisation unit tests: one MiniLM per test session (loading it is the slow part)."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def minilm():
    """The real all-MiniLM-L6-v2 embedder, loaded once and reused by every personalisation test module."""
    from pet.models.embed import Embedder

    return Embedder(threads=1)
