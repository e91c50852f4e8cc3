"""The learned questioner encoder: a profile in, a few soft-prompt vectors for a frozen T out.

Two towers, as in dual-tower questioner models: the *questioner* tower reads the questioner embedding (who asks;
its code is what the contrastive term pulls together for one questioner's dialogues) and the *cross-questioner*
tower reads the mean embedding of the exemplars chosen for this query (what this person said about things like
it). A linear head maps both to ``soft_tokens`` vectors of T's hidden size, initialised at the embeddings of
real tokens so an untrained encoder is a harmless prompt.

The artifact is a folder written atomically: ``encoder.safetensors`` and ``questioner.json`` (dimensions, the
fingerprint = sha256 of the weights, the fingerprint of the T it was trained on, training facts). Loading
checks both fingerprints; a mismatch is :class:`EncoderError` and the tier answers without the learned profile.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pet.io import atomic_dir, sha256_file
from pet.paths import models_dir

MANIFEST = "questioner.json"
WEIGHTS = "encoder.safetensors"
ENCODERS = "questioner"


class EncoderError(RuntimeError):
    """An encoder artifact that is missing, damaged, or made for another T or another fingerprint."""


def build_encoder(in_dim: int, hidden: int, out_dim: int, soft_tokens: int) -> Any:
    """A fresh :class:`QuestionerEncoder` module (torch is imported here, not at module import)."""
    import torch
    from torch import nn

    class QuestionerEncoder(nn.Module):
        """Questioner tower + cross-questioner tower -> ``soft_tokens`` x ``out_dim`` soft prompt."""

        def __init__(self) -> None:
            super().__init__()
            self.dims = dict(in_dim=in_dim, hidden=hidden, out_dim=out_dim, soft_tokens=soft_tokens)
            self.questioner = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
            self.cross = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
            self.head = nn.Linear(2 * hidden, soft_tokens * out_dim)
            nn.init.normal_(self.head.weight, std=1e-3)

        def code(self, emb: torch.Tensor) -> torch.Tensor:
            """Unit questioner code of embeddings [n, in_dim] (the contrastive term's space)."""
            return nn.functional.normalize(self.questioner(emb), dim=-1)

        def forward(self, profile: torch.Tensor, exemplars: torch.Tensor) -> torch.Tensor:
            """Soft prompts [n, soft_tokens, out_dim] from questioner and exemplar embeddings [n, in_dim]."""
            z = torch.cat([nn.functional.gelu(self.questioner(profile)),
                           nn.functional.gelu(self.cross(exemplars))], dim=-1)
            return self.head(z).view(-1, soft_tokens, out_dim)

    return QuestionerEncoder()


def init_from_tokens(encoder: Any, token_embeddings: Any) -> None:
    """Set the head's bias to ``token_embeddings`` [soft_tokens, out_dim] (real tokens: a neutral start)."""
    import torch

    with torch.no_grad():
        encoder.head.bias.copy_(token_embeddings.reshape(-1))


def encoder_dir(ref: str, configured_models_dir: str | None = None) -> Path:
    """An encoder folder: ``ref`` as a path if it exists, else ``<models_dir>/questioner/<ref>``."""
    p = Path(ref).expanduser()
    return p if p.is_dir() else models_dir(configured_models_dir) / ENCODERS / ref


def save_encoder(encoder: Any, out: str | Path, base_fingerprint: str, facts: dict[str, Any],
                 replace: bool = False) -> dict[str, Any]:
    """Write the artifact folder atomically; its manifest (with the weights' fingerprint)."""
    from safetensors.torch import save_file

    with atomic_dir(out, replace=replace) as tmp:
        save_file({k: v.detach().contiguous() for k, v in encoder.state_dict().items()}, str(tmp / WEIGHTS))
        manifest = {"format": 1, **encoder.dims, "fingerprint": sha256_file(tmp / WEIGHTS),
                    "base_fingerprint": base_fingerprint, **facts}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of an encoder folder (EncoderError when absent or damaged)."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise EncoderError(f"{folder} is not a questioner encoder (no readable {MANIFEST})") from None
    if not isinstance(manifest, dict) or "fingerprint" not in manifest:
        raise EncoderError(f"{path} is damaged")
    return manifest


def load_encoder(folder: str | Path, base_fingerprint: str | None = None,
                 expected: str | None = None) -> tuple[Any, dict[str, Any]]:
    """(encoder in eval mode, manifest) after checking the weights' sha256, ``expected`` and T's fingerprint."""
    from safetensors.torch import load_file

    folder = Path(folder)
    manifest = read_manifest(folder)
    actual = sha256_file(folder / WEIGHTS) if (folder / WEIGHTS).is_file() else None
    if actual != manifest["fingerprint"]:
        raise EncoderError(f"{folder}: the weights do not match the manifest's fingerprint")
    if expected is not None and actual != expected:
        raise EncoderError(f"{folder}: fingerprint {actual[:12]} is not the configured {expected[:12]}")
    if base_fingerprint is not None and manifest.get("base_fingerprint") != base_fingerprint:
        raise EncoderError(f"{folder} was trained on another T (base fingerprint "
                           f"{str(manifest.get('base_fingerprint'))[:12]}, this T is {base_fingerprint[:12]})")
    enc = build_encoder(int(manifest["in_dim"]), int(manifest["hidden"]), int(manifest["out_dim"]),
                        int(manifest["soft_tokens"]))
    enc.load_state_dict(load_file(str(folder / WEIGHTS)))
    return enc.eval(), manifest
