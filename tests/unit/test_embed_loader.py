"""Every path that embeds text loads the embedder the config names (``embedding.model``), through one loader.

With a non-default embedding model, expert exemplars stored at registration and the queries routed against them
must come from the same model; before issue 24 three of the five loaders ignored the config.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import pet.models.embed
from pet.config.schema import PetConfig


class FakeEmbedder:
    """A deterministic 8-dim embedder standing in for the configured model."""

    dim = 8

    def encode(self, texts, batch_size: int = 32):
        out = np.array([[hash((t, i)) % 97 + 1 for i in range(self.dim)] for t in texts], dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True) if len(out) else out.reshape(0, self.dim)


@pytest.fixture
def asked(monkeypatch):
    """The model names every load asked the loader for."""
    names: list[str] = []

    def fake_loader(model, models_dir=None, threads=1):
        names.append(model)
        return FakeEmbedder()

    monkeypatch.setattr(pet.models.embed, "load_embedder", fake_loader)
    return names


@pytest.fixture
def cfg(tmp_path, tiny_lm_dir):
    other = tmp_path / "my-embedder"
    other.mkdir()
    return PetConfig.model_validate({
        "models_dir": str(tmp_path / "models"),
        "embedding": {"model": str(other)},
        "traditional": {"model": str(tiny_lm_dir)},
        "expert": {"base_model": str(tiny_lm_dir), "registry_dir": str(tmp_path / "experts"),
                   "training": {"steps": 1, "batch_size": 2, "max_seq_len": 48, "max_heldout": 2,
                                "heldout_fraction": 0.25, "warmup_steps": 1},
                   "data": {"chunk_chars": 120, "max_exemplars": 3}},
    })


def test_registration_exemplars_use_the_configured_embedder(asked, cfg, tmp_path):
    from pet.expert.register import RegisterOptions, register_from_config
    from pet.expert.registry import ExpertRegistry

    data = tmp_path / "py.txt"
    data.write_text("\n\n".join(f"def f{i}(a, b): return a + b  # python function number {i}" for i in range(12)))
    reg = ExpertRegistry.from_config(cfg)
    res = register_from_config(cfg, reg, "python", data, RegisterOptions(force=True, progress=False),
                               log=lambda m: None)
    assert res.record.exemplar_count > 0 and reg.exemplars("python").shape[1] == FakeEmbedder.dim
    assert asked == [cfg.embedding.model]


def test_routing_paths_use_the_configured_embedder(asked, cfg, monkeypatch):
    from pet.personal.device import DeviceClient
    from pet.router.label import query_embedder
    from pet.router.router import Router
    from pet.serve.dispatch import Dispatcher

    query_embedder(cfg)  # routing calibration and labelling: query embeddings and the domain classifier
    assert Dispatcher(cfg, None, None).load_classifier()  # the gateway's domain classifier
    # The device loads an embedder only for the embedding policies (pregen, stacked), which need a fitted file.
    monkeypatch.setattr(Router, "from_config", classmethod(lambda cls, c, classifier=None: SimpleNamespace(
        needs_embedding=True)))
    DeviceClient.from_config(cfg, None, None)
    assert asked == [cfg.embedding.model] * 3
