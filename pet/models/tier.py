"""The three tiers and the one interface their models share.

``pet`` answers a query with one of three tiers, escalating P -> E -> T when the router says so:

- **P, personal** (:mod:`pet.personal`): a small model on the device, an ONNX bundle run by onnxruntime.
- **E, expert** (:mod:`pet.expert`): one LoRA adapter per domain over T's base, served in the cloud.
- **T, traditional** (:mod:`pet.traditional`): the general model in the cloud.

Whatever runs a tier's model is a :class:`TierBackend`: one ``generate`` that returns a
:class:`~pet.models.signals.Generation` (text, per-token confidence signals for the router, token usage).
Backends are found by name in :data:`BACKENDS` (name -> ``"module:Class"``, imported on first use so the device
never imports torch); a new one is added with :func:`register_backend`, not by editing a switch::

    from pet.models.tier import load_backend
    p = load_backend("ort", "models/bundles/smollm2-135m-instruct-int8")    # P on the device
    print(p.generate("Hello!", max_new_tokens=16).text)

Torch-free: the device imports this module.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from pet.models.signals import Generation

Prompt = str | Sequence[dict[str, str]]


class TierBackend(ABC):
    """A tier's model: generates from a prompt (text, or chat messages) and reports confidence and usage."""

    @abstractmethod
    def generate(self, prompt: Prompt, max_new_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
                 **kwargs: Any) -> Generation:
        """One generation for ``prompt``; ``temperature`` 0 is greedy."""

    @classmethod
    @abstractmethod
    def load(cls, source: Any, **kwargs: Any) -> TierBackend:
        """Load the backend from a local folder (a device bundle, or a Hugging Face model folder)."""


BACKENDS: dict[str, str] = {
    "torch": "pet.models.lm:CausalLM",  # T, and E with a domain's adapter active (cloud; needs torch)
    "ort": "pet.personal.runtime:DeviceModel",  # P: pet's decode loop over onnxruntime (the default)
    "genai": "pet.personal.genai:GenaiModel",  # P: onnxruntime-genai's generator
}


def register_backend(name: str, target: str) -> None:
    """Make ``target`` (``"module:Class"``, a :class:`TierBackend` subclass) loadable as ``name``."""
    if ":" not in target:
        raise ValueError(f"backend target must be 'module:Class', got {target!r}")
    BACKENDS[name] = target


def backend_class(name: str) -> type[TierBackend]:
    """The class registered as ``name`` (imported now)."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown tier backend {name!r} (choose {', '.join(sorted(BACKENDS))})") from None
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, TierBackend)):
        raise TypeError(f"tier backend {name!r} ({target}) is not a TierBackend")
    return cls


def load_backend(name: str, source: Any, **kwargs: Any) -> TierBackend:
    """Load ``source`` with the backend registered as ``name``."""
    return backend_class(name).load(source, **kwargs)
