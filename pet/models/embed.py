"""Sentence embeddings (plain ``AutoModel`` + mean pooling, L2-normalised; all-MiniLM-L6-v2 by default).

    embedder = embedder_from_config(cfg)          # the model named by cfg.embedding.model
    vectors = embedder.encode(["How do I sort a list?"])

Used for domain routing (expert exemplars and queries), synthetic-data filtering and the embedding router
policies. Every one of them loads through :func:`load_embedder`, so exemplars stored at registration and the
queries routed against them are embedded by the same model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pet.paths import resolve_model, set_offline


class Embedder:
    """Encodes texts to unit-length float32 vectors (384 dims for MiniLM)."""

    def __init__(self, folder: str | Path | None = None, max_length: int = 128, threads: int | None = None):
        set_offline()
        import torch
        from transformers import AutoModel, AutoTokenizer

        if folder is None:
            from pet.models.prepare import minilm_folder

            folder = minilm_folder()
        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.folder = Path(folder)
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.folder, local_files_only=True).eval()
        self.max_length = max_length
        self.dim = int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """[len(texts), dim] float32, rows L2-normalised."""
        torch = self.torch
        out = []
        for i in range(0, len(texts), batch_size):
            enc = self.tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
            with torch.inference_mode():
                hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(out).astype(np.float32)


def load_embedder(model: str, models_dir: str | None = None, threads: int | None = 1) -> Embedder:
    """The embedder a config names: a builtin name (the packaged MiniLM) or a local model folder."""
    from pet.config.schema.base import BUILTIN_EMBEDDERS

    set_offline()
    return Embedder(None if model in BUILTIN_EMBEDDERS else resolve_model(model, models_dir), threads=threads)


def embedder_from_config(cfg: Any, threads: int | None = 1) -> Embedder:
    """The embedder of a :class:`~pet.config.schema.PetConfig` (``embedding.model`` under ``models_dir``)."""
    return load_embedder(cfg.embedding.model, cfg.models_dir, threads)
