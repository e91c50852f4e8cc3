"""The router fitted to the user's own tiers: the workflows behind ``pet router label`` and ``pet router calibrate``.

They sit above the tiers and the router (they load P, E and T as the configuration names them and hand their
answers to :mod:`pet.router.label` and :mod:`pet.router.fit`), so the router package itself never imports a tier.

    tiers = tiers_from_config(cfg)                                   # P (device bundle), T, the registered E
    label_file("my_queries.txt", "labelled.jsonl", cfg)              # pet router label
    fitted = fit_router_file("labelled.jsonl", cfg, cloud_budget=0.3)  # pet router calibrate
    fitted.save("router.yaml")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pet.personal.bundle.default import default_bundle_recipe
from pet.router.fit import fit_router
from pet.router.label import (
    Experts,
    Log,
    Tiers,
    label_queries,
    query_embedder,
    query_embeddings,
    read_labelled,
    read_queries,
    write_labelled,
)
from pet.router.policy import RouterFile


def experts_from_config(cfg: Any) -> Experts | None:
    """The registered experts (None when there are none): domain choice by the configured domain classifier, each
    domain's model = ``expert.base_model`` with its adapter, as the expert pool serves it."""
    from pet.expert.registry import ExpertRegistry
    from pet.models.lm import CausalLM
    from pet.paths import resolve_model
    from pet.router.domains import DomainClassifier

    registry = ExpertRegistry.from_config(cfg)
    if not registry.names():
        return None
    classifier = DomainClassifier.from_registry(registry, query_embedder(cfg),
                                                floor=cfg.router.domain_similarity_floor)

    def domain_of(texts: Sequence[str]) -> list[str | None]:
        return [d for d, _ in classifier.classify_batch(list(texts))]

    def load(domain: str) -> Any:
        from peft import PeftModel

        lm = CausalLM.load(resolve_model(cfg.expert.base_model, cfg.models_dir), threads=cfg.expert.torch_threads)
        lm.model = PeftModel.from_pretrained(lm.model, str(registry.adapter_dir(domain))).eval()
        return lm

    return Experts(domain_of, load)


def tiers_from_config(cfg: Any, bundle: str | Path | None = None, runtime: str | None = None,
                      allow_unsigned: bool = False, log: Log = print) -> Tiers:
    """P from the device bundle (``bundle``, else ``personal.bundle``; ``default`` is built when missing), T from
    ``traditional.model`` and the registered experts (:func:`experts_from_config`), all local."""
    from pet.models.lm import CausalLM
    from pet.paths import resolve_model
    from pet.personal.bundle.default import DEFAULT, ensure_default_bundle, resolve_bundle
    from pet.personal.bundle.sign import trusted_public_key_path
    from pet.personal.runtime import load_model

    if bundle is None and cfg.personal.bundle == DEFAULT:
        bundle = ensure_default_bundle(cfg, log)
    bundle = bundle or resolve_bundle(cfg)
    if not bundle:
        raise ValueError("no P: pass --bundle or set personal.bundle in the configuration")
    p = load_model(bundle, runtime, num_threads=cfg.personal.num_threads, public_key=trusted_public_key_path(cfg),
                   allow_unsigned=allow_unsigned)
    t = CausalLM.load(resolve_model(cfg.traditional.model, cfg.models_dir), threads=cfg.traditional.torch_threads)
    experts = experts_from_config(cfg)
    if experts is None:
        log("no experts registered: no E answers (every escalation goes to T)")
    return Tiers(p, t, experts)


def label_file(queries: str | Path, out: str | Path, cfg: Any, bundle: str | Path | None = None,
               runtime: str | None = None, max_new_tokens: int | None = None, batch: int = 8,
               log: Log = print) -> list[dict[str, Any]]:
    """``pet router label``: read the query file, load the configured tiers, label every query, write ``out``.

    ``max_new_tokens`` defaults to the device's (``personal.generation.max_new_tokens``). Returns the records.
    """
    todo = read_queries(queries)
    tiers = tiers_from_config(cfg, bundle, runtime, log=log)
    mnt = max_new_tokens or cfg.personal.generation.max_new_tokens
    log(f"{len(todo)} queries, max_new_tokens={mnt}")
    records = label_queries(todo, tiers, mnt, batch, log)
    write_labelled(records, out)
    return records


def fit_router_file(data: str | Path, cfg: Any, embed: bool = True, for_default_p: bool = False,
                    log: Callable[[str], None] = print, **options: Any) -> RouterFile:
    """``pet router calibrate``: read the labelled file, embed its queries for the pregen and stacked scorers
    (unless ``embed`` is False), :func:`fit_router` with ``options``, and with ``for_default_p`` record the default
    P's recipe (the data must hold answers of that bundle)."""
    records = read_labelled(data)
    fitted = fit_router(records, embeddings=query_embeddings(records, cfg, log) if embed else None, **options)
    if for_default_p:
        fitted.p_bundle = default_bundle_recipe(cfg)
    return fitted
