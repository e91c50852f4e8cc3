"""Sentence embeddings with all-MiniLM-L6-v2 (plain ``AutoModel`` + mean pooling, L2-normalised).

Used for domain routing (expert exemplars), synthetic-data filtering and the pre-generation router.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pet.paths import set_offline


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
