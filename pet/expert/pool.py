"""``ExpertPool``: the E tier -- one shared base model with a PEFT LoRA adapter per registered domain.

Adapters are loaded on demand through ``@serve.multiplexed`` keyed by domain (an LRU of
``expert.max_adapters_per_replica`` adapters per replica); callers pick the domain with
``handle.options(multiplexed_model_id=domain)``. Concurrent requests are merged by ``@serve.batch``,
which Serve splits per multiplexed id, so every batch runs under one active adapter.

Adapters come from the expert registry (``pet.expert.registry``), whose ``adapter_dir(name, verify=True)``
checks the files' sha256 against the manifest; a ``CorruptAdapterError`` propagates to the gateway, which
then answers from T for that request. An adapter trained on another base than this replica's (another T version:
its manifest's ``base_fingerprint``) is never applied: ``BaseMismatchError`` propagates the same way and names
the fix (``pet expert register NAME --rebase``).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from ray import serve

from pet.models.engine import ModelLock, check_payload, resolve_payload, run_batch
from pet.paths import resolve_model
from pet.questioner.condition import Conditioner
from pet.traditional.deployment import load_tier_model
from pet.traditional.versions import model_fingerprint


class LoadedAdapter:
    """What the multiplexed loader returns for one domain; Serve calls ``__del__`` on LRU eviction."""

    def __init__(self, pool: ExpertPool, domain: str):
        self.pool = pool
        self.domain = domain

    def __del__(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            pool._evict(self.domain)


@serve.deployment(name="ExpertPool")
class ExpertPool:
    """The shared base plus LoRA adapters, one per domain, loaded lazily and evicted LRU."""

    def __init__(self, cfg_dict: dict[str, Any]):
        from pet.config.schema import PetConfig

        self.cfg = PetConfig.model_validate(cfg_dict)
        ec = self.cfg.expert
        self.base = load_tier_model(ec.base_model, self.cfg.models_dir, ec.torch_threads)
        self.base_fingerprint = model_fingerprint(resolve_model(ec.base_model, self.cfg.models_dir))
        self.conditioner = Conditioner.from_config(self.cfg, self.base_fingerprint)
        self.peft: Any = None  # PeftModel wrapping the base once the first adapter is loaded
        self.lm: Any = None  # CausalLM over the PeftModel
        # PEFT adapter names are "<domain>@<registry fingerprint>", so a domain replaced in the registry while
        # it is loaded is noticed (the manifest's fingerprint changes) and its new adapter loaded.
        self.active: dict[str, str] = {}  # domain -> adapter name in use
        self.loaded: set[str] = set()  # adapter names present in the PeftModel
        self.stale: set[str] = set()  # evicted or replaced, still in the PeftModel (deleted under the lock)
        self.lock = ModelLock()
        self.batching = ec.batching.enabled
        self._batched.set_max_batch_size(ec.batching.max_batch_size)
        self._batched.set_batch_wait_timeout_s(ec.batching.batch_wait_timeout_s)

        async def load(domain: str) -> LoadedAdapter:
            await asyncio.to_thread(self._load_sync, domain)
            return LoadedAdapter(self, domain)

        self.get_adapter = serve.multiplexed(max_num_models_per_replica=ec.max_adapters_per_replica)(load)

    # -- adapter management ----------------------------------------------------------------------------------

    def _registry(self) -> Any:
        from pet.expert.registry import ExpertRegistry

        return ExpertRegistry.from_config(self.cfg)

    def _current(self, domain: str, name: str) -> bool:
        """Under the lock: is ``name`` loaded and in use for ``domain`` (re-activating an evicted copy)?"""
        if name in self.stale:  # evicted but never deleted: reuse it
            self.stale.discard(name)
        if name in self.loaded:
            old = self.active.get(domain)
            if old and old != name:
                self.stale.add(old)
            self.active[domain] = name
            return True
        return False

    def _load_sync(self, domain: str) -> None:
        """Make the registry's current adapter of ``domain`` the one in use (loading it if needed)."""
        from peft import PeftModel

        from pet.expert.registry import check_base
        from pet.models.lm import CausalLM

        reg = self._registry()
        rec = reg.get(domain)  # a manifest read: cheap, catches --replace
        check_base(rec, self.base_fingerprint, self.cfg.expert.base_model, self.cfg.models_dir)
        name = f"{domain}@{rec.fingerprint}"
        with self.lock:
            if self._current(domain, name):
                return
        folder = reg.adapter_dir(domain, verify=True)  # CorruptAdapterError on tampering
        with self.lock:
            if self._current(domain, name):
                return
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.base.model, str(folder), adapter_name=name)
                self.peft.eval()
                self.lm = CausalLM(self.peft, self.base.tokenizer, name=f"{self.base.name}+lora")
            else:
                self.peft.load_adapter(str(folder), adapter_name=name)
            self.loaded.add(name)
            self._current(domain, name)
            self._drop_stale()

    def _drop_stale(self) -> None:
        # PEFT refuses to delete the last adapter, so evictions are applied once a newer one is present.
        for name in sorted(self.stale):
            if len(self.loaded) > 1:
                self.peft.delete_adapter(name)
                self.loaded.discard(name)
                self.stale.discard(name)

    def _evict(self, domain: str) -> None:
        with self.lock:
            name = self.active.get(domain)
            if name in self.loaded:
                self.stale.add(name)

    def _in_use(self) -> list[str]:
        return sorted(d for d, n in self.active.items() if n in self.loaded and n not in self.stale)

    def _run(self, domain: str, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self._load_sync(domain)  # evicted since the multiplexed load, or replaced in the registry
        with self.lock:
            self.peft.set_adapter(self.active[domain])
            out = run_batch(self.lm, payloads)
        for r in out:
            r["domain"] = domain
            r["replica"] = self._replica_name()
            r["loaded_adapters"] = len(self._in_use())
        return out

    # -- requests ----------------------------------------------------------------------------------------------

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _batched(self, items: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        by_domain: dict[str, list[int]] = {}
        for i, (domain, _) in enumerate(items):
            by_domain.setdefault(domain, []).append(i)
        results: list[dict[str, Any]] = [{} for _ in items]
        for domain, idx in by_domain.items():
            out = await asyncio.to_thread(self._run, domain, [items[i][1] for i in idx])
            for i, r in zip(idx, out, strict=True):
                results[i] = r
        return results

    async def generate(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Answer one payload with the adapter of the request's multiplexed id (or ``payload["domain"]``)."""
        domain = serve.get_multiplexed_model_id() or payload.get("domain")
        if not domain:
            raise ValueError("ExpertPool.generate needs a domain (multiplexed_model_id)")
        t0 = time.perf_counter()
        payload = resolve_payload(self.conditioner.apply(payload), self.cfg.expert.generation)
        bad = await asyncio.to_thread(check_payload, self.base, payload)
        if bad is not None:
            return bad
        await self.get_adapter(domain)
        if self.batching:
            out = await self._batched((domain, payload))
        else:
            out = (await asyncio.to_thread(self._run, domain, [payload]))[0]
        return {**out, "replica_ms": round((time.perf_counter() - t0) * 1e3, 3)}  # adapter load, batch, compute

    def _replica_name(self) -> str:
        try:
            return serve.get_replica_context().replica_id.unique_id
        except Exception:  # outside a replica (direct construction in a test)
            return str(os.getpid())

    def stats(self) -> dict[str, Any]:
        """Replica facts: loaded adapters and the actor name (tests use it to kill this replica)."""
        import ray

        return {"pid": os.getpid(), "replica": self._replica_name(), "actor_name": ray.get_runtime_context()
                .get_actor_name(), "loaded_adapters": self._in_use(), "batching": self.batching,
                "fingerprints": {d: self.active[d].split("@", 1)[1] for d in self._in_use()}}

    def check_health(self) -> None:
        """Serve health check: the base model must still be loaded."""
        if self.base is None:
            raise RuntimeError("base model not loaded")
