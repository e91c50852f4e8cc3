"""The questioner profile: what the device shares about the person asking, and the caps the gateway enforces.

    builder = ProfileBuilder(store.texts(user), embedder, cfg.questioner)   # once per session
    profile = builder.for_query("any plans for the weekend?")             # per escalated request
    payload["questioner"] = profile.to_payload()

A profile is a unit MiniLM embedding of the user's own messages (their mean), the ``k`` messages of theirs
nearest the query (exemplars, cut to ``max_exemplar_chars``) and the mean embedding of those exemplars. It is
made on the device (numpy only: no torch is imported here), rides inside the HPKE envelope, and is checked by
:func:`parse_profile` on the gateway: dimensions, counts, characters and its JSON size; errors name the field and
never quote its content.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, ValidationError, field_validator

# Hard limits of the wire format; a config may only lower them.
MAX_DIM = 4096
MAX_EXEMPLARS = 8
MAX_EXEMPLAR_CHARS = 2000
DECIMALS = 5  # embeddings are rounded before they are sent: 384 dims stay under 4 KB of JSON


class ProfileError(ValueError):
    """A profile the gateway refuses: names the field and the limit, never the content."""


def _vector(v: list[float | int]) -> list[float]:
    out = [float(x) for x in v]
    if not all(math.isfinite(x) and abs(x) <= 1.0 + 1e-3 for x in out):
        raise ValueError("every value must be a finite number in [-1, 1]")
    return out


def _text(v: str) -> str:
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode text (an unpaired surrogate)") from None
    return v


class QuestionerProfile(BaseModel):
    """The profile in the ``questioner`` field of a request payload (the OpenAI route's ``pet_questioner``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    embedding: list[StrictFloat | StrictInt] = Field(min_length=8, max_length=MAX_DIM,
                                                     description="unit mean MiniLM embedding of the user's messages")
    exemplars: list[StrictStr] = Field(default_factory=list, max_length=MAX_EXEMPLARS,
                                       description="the user's own messages nearest the query")
    exemplar_embedding: list[StrictFloat | StrictInt] | None = Field(
        None, min_length=8, max_length=MAX_DIM, description="mean embedding of the exemplars (same dimensions)")

    _vectors = field_validator("embedding", "exemplar_embedding")(lambda v: None if v is None else _vector(v))

    @field_validator("exemplars")
    @classmethod
    def _exemplars(cls, v: list[str]) -> list[str]:
        for i, t in enumerate(v):
            if not t.strip() or len(t) > MAX_EXEMPLAR_CHARS:
                raise ValueError(f"exemplar {i} must have 1-{MAX_EXEMPLAR_CHARS} characters")
            _text(t)
        return v

    def to_payload(self) -> dict[str, Any]:
        """The JSON-ready dict a request carries."""
        return self.model_dump(exclude_none=True)

    def nbytes(self) -> int:
        """Size of the compact JSON: what the ledger counts as shared."""
        return payload_bytes(self.to_payload())

    def vector(self) -> np.ndarray:
        """The questioner embedding as float32."""
        return np.asarray(self.embedding, dtype=np.float32)

    def exemplar_vector(self) -> np.ndarray:
        """The exemplars' mean embedding (the questioner embedding when no exemplar was sent)."""
        return np.asarray(self.exemplar_embedding if self.exemplar_embedding is not None else self.embedding,
                          dtype=np.float32)


def payload_bytes(data: Any) -> int:
    """Bytes of ``data`` as compact UTF-8 JSON."""
    return len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))


def parse_profile(data: Any, cfg: Any) -> QuestionerProfile:
    """Validate a received profile against the wire format and the caps of ``cfg`` (a QuestionerConfig).

    Raises ProfileError naming the field (``questioner.<field>``) and the limit it broke.
    """
    if not isinstance(data, dict):
        raise ProfileError("questioner: must be a JSON object")
    size = payload_bytes(data)
    if size > cfg.max_profile_bytes:
        raise ProfileError(f"questioner: the profile is {size} bytes; the limit is {cfg.max_profile_bytes}")
    try:
        profile = QuestionerProfile.model_validate(data)
    except ValidationError as err:
        parts = []
        for e in err.errors(include_input=False, include_url=False):
            loc = ".".join(str(x) for x in ("questioner", *e["loc"]))
            parts.append(f"{loc}: {'unknown field' if e['type'] == 'extra_forbidden' else e['msg']}")
        raise ProfileError("; ".join(parts)) from None
    if len(profile.embedding) != cfg.embedding_dim:
        raise ProfileError(f"questioner.embedding: must have {cfg.embedding_dim} dimensions")
    if profile.exemplar_embedding is not None and len(profile.exemplar_embedding) != cfg.embedding_dim:
        raise ProfileError(f"questioner.exemplar_embedding: must have {cfg.embedding_dim} dimensions")
    if len(profile.exemplars) > cfg.exemplars:
        raise ProfileError(f"questioner.exemplars: at most {cfg.exemplars} exemplars")
    if any(len(t) > cfg.max_exemplar_chars for t in profile.exemplars):
        raise ProfileError(f"questioner.exemplars: an exemplar may have at most {cfg.max_exemplar_chars} characters")
    return profile


# ----------------------------------------------------------------------------------------------------------------
# Making a profile (the device)


def unit(v: np.ndarray) -> np.ndarray:
    """``v`` scaled to unit length (zeros stay zeros)."""
    n = float(np.linalg.norm(v))
    return (v / n).astype(np.float32) if n > 0 else v.astype(np.float32)


def nearest(query: np.ndarray, vectors: np.ndarray, k: int) -> list[int]:
    """Indices of the ``k`` rows of ``vectors`` most cosine-similar to ``query`` (rows are unit), best first."""
    if k <= 0 or len(vectors) == 0:
        return []
    sims = vectors @ query
    order = np.argsort(-sims, kind="stable")
    return [int(i) for i in order[:k]]


def make_profile(embedding: np.ndarray, exemplars: Sequence[str], exemplar_vectors: np.ndarray | None,
                 max_chars: int) -> QuestionerProfile:
    """A profile from a questioner embedding and chosen exemplars (their texts and embeddings)."""
    ex_vec = None
    if exemplar_vectors is not None and len(exemplar_vectors):
        ex_vec = [round(float(x), DECIMALS) for x in unit(exemplar_vectors.mean(0))]
    return QuestionerProfile(embedding=[round(float(x), DECIMALS) for x in unit(embedding)],
                             exemplars=[t[:max_chars] for t in exemplars], exemplar_embedding=ex_vec)


class ProfileBuilder:
    """A user's messages (from the encrypted store) and their embeddings, ready to make a profile per query.

    ``embedder`` is anything with ``encode(texts) -> unit float32 rows`` (:class:`pet.models.embed.Embedder`).
    """

    def __init__(self, texts: Sequence[str], embedder: Any, cfg: Any):
        self.cfg = cfg
        self.embedder = embedder
        self.texts = [t for t in texts if t.strip()][-cfg.max_profile_messages:]
        if not self.texts:
            raise ProfileError("the store holds no messages to make a profile from")
        self.vectors = np.asarray(embedder.encode(self.texts), dtype=np.float32)
        self.embedding = unit(self.vectors.mean(0))

    def for_query(self, query: str, query_vector: np.ndarray | None = None) -> QuestionerProfile:
        """The profile for one query: the questioner embedding plus the exemplars nearest ``query``."""
        k = self.cfg.exemplars
        idx: list[int] = []
        if k > 0:
            q = query_vector if query_vector is not None else self.embedder.encode([query])[0]
            idx = [i for i in nearest(np.asarray(q, dtype=np.float32), self.vectors, k + 1)
                   if self.texts[i].strip() != query.strip()][:k]
        profile = make_profile(self.embedding, [self.texts[i] for i in idx],
                               self.vectors[idx] if idx else None, self.cfg.max_exemplar_chars)
        while profile.nbytes() > self.cfg.max_profile_bytes and profile.exemplars:  # drop exemplars to fit the cap
            idx = idx[:-1]
            profile = make_profile(self.embedding, [self.texts[i] for i in idx],
                                   self.vectors[idx] if idx else None, self.cfg.max_exemplar_chars)
        return profile
