"""Register one expert domain end to end: validate, (synthesise), train, evaluate, accept, store.

    result = register_from_config(cfg, registry, "python", "data/python.txt", RegisterOptions(examples=...))
    result = register_domain(registry, "python", "data/python.txt", base_dir, "smollm2-135m-instruct",
                             embedder, cfg.expert, opts)      # the same with models chosen by the caller

Order matters for "bad input loses nothing": the name, the existing-domain check and the data file are
validated before any model is loaded; training writes to a temporary folder; the registry is touched once,
at the end, by the atomic :meth:`ExpertRegistry.add`. An adapter whose held-out perplexity is not lower
than the base's (by ``expert.training.min_ppl_gain``) is refused with :class:`NoImprovementError` unless
``force``. Training and data limits come from the ``expert`` config section
(:class:`pet.config.schema.ExpertConfig`); :class:`RegisterOptions` holds only what one registration asks.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pet.config.schema import PetConfig
from pet.config.schema.tiers import ExpertConfig
from pet.expert.data import DataError, DomainData, load_domain_data, load_queries, sample_queries, split_heldout
from pet.expert.registry import DomainExistsError, ExpertRecord, ExpertRegistry, check_name
from pet.expert.train import TrainReport, train_lora


class NoImprovementError(RuntimeError):
    """The trained adapter does not beat the base on held-out data; nothing was registered."""

    def __init__(self, message: str, report: TrainReport):
        super().__init__(message)
        self.report = report


@dataclass
class RegisterOptions:
    """What one registration asks for, beyond the ``expert`` config section."""

    examples: str | Path | None = None  # routing example queries (.txt one per line, or .jsonl)
    synthesize: int = 0  # extra question/answer pairs T writes, seeded by the training split
    replace: bool = False  # overwrite an existing domain of that name
    force: bool = False  # register even when the adapter does not improve on the base
    progress: bool = True  # progress bars (else log lines)


@dataclass
class RegisterResult:
    """Outcome of a successful registration."""

    record: ExpertRecord
    report: TrainReport
    seconds: float
    synth: dict = field(default_factory=dict)
    credited: bool | None = None  # contributor credit: True, False (already credited), None (not asked/unavailable)


def preflight(registry: ExpertRegistry, name: str, data: str | Path, opts: RegisterOptions,
              expert: ExpertConfig | None = None) -> tuple[DomainData, list[str] | None]:
    """Every check that needs no model: name, existing domain, data file, examples file."""
    limits = (expert or ExpertConfig()).data
    check_name(name)
    if name in registry.names() and not opts.replace:
        raise DomainExistsError(f"expert domain {name!r} already exists; pass --replace to overwrite it")
    dd = load_domain_data(data, max_bytes=limits.max_data_bytes, chunk_chars=limits.chunk_chars)
    queries = load_queries(opts.examples) if opts.examples else None
    return dd, queries


def register_domain(registry: ExpertRegistry, name: str, data: str | Path, base_dir: str | Path, base_model: str,
                    embedder: Any, expert: ExpertConfig | None = None, opts: RegisterOptions | None = None,
                    t_lm: Any = None, log: Callable[[str], None] = print,
                    threads: int | None = None) -> RegisterResult:
    """Validate, optionally synthesise with ``t_lm``, train and evaluate a LoRA adapter, then store it atomically.

    ``t_lm`` (a :class:`pet.models.lm.CausalLM`) is needed only when ``opts.synthesize > 0``.
    Raises DataError / InvalidDomainNameError / DomainExistsError before any model work, and
    NoImprovementError after training when the adapter does not help (registry unchanged in every case).
    """
    from pet.models.lora import load_base
    from pet.traditional.versions import model_fingerprint

    t0 = time.perf_counter()
    opts, expert = opts or RegisterOptions(), expert or ExpertConfig()
    tcfg = expert.training
    dd, queries = preflight(registry, name, data, opts, expert)
    log(f"data: {dd.path} ({dd.bytes:,} bytes, {len(dd.samples)} samples, sha256 {dd.sha256[:12]}...)")

    train, held = split_heldout(dd.samples, tcfg.heldout_fraction, seed=tcfg.seed, max_heldout=tcfg.max_heldout)
    synth_stats: dict = {}
    if opts.synthesize > 0:
        pairs, synth_stats = _synthesize(t_lm, train, embedder, expert, opts, log)
        train = train + pairs

    model, tok = load_base(base_dir, threads)
    train_texts = [s.item(tok) for s in train]  # pairs: only the response tokens are trained on and scored
    held_texts = [s.item(tok) for s in held]
    with tempfile.TemporaryDirectory(prefix="pet-expert-") as tmp:
        report = train_lora(base_dir, train_texts, held_texts, Path(tmp) / "adapter", tcfg, log=log,
                            progress=opts.progress, base=(model, tok))
        forced = _accept(name, report, tcfg.min_ppl_gain, opts.force, log)
        queries, exemplar_source = _exemplar_queries(train, queries, expert.data.max_exemplars, tcfg.seed)
        exemplars = _embed(embedder, queries)
        metrics = report.metrics()
        metrics["forced"] = forced
        rec = registry.add(
            name, Path(tmp) / "adapter", exemplars, metrics, base_model, data_sha256=dd.sha256,
            replace=opts.replace,
            extra={"data": {"file": dd.path.name, "bytes": dd.bytes, "kind": dd.kind, **dd.stats},
                   "exemplar_source": exemplar_source, "synthesis": synth_stats,
                   "base_fingerprint": model_fingerprint(base_dir)},  # the pool serves it on this base only
        )
    return RegisterResult(record=rec, report=report, seconds=time.perf_counter() - t0, synth=synth_stats)


def _synthesize(t_lm: Any, train: list[Any], embedder: Any, expert: ExpertConfig, opts: RegisterOptions,
                log: Callable[[str], None]) -> tuple[list[Any], dict]:
    """T's question/answer pairs seeded by the training split (held-out text never leaks into training via T)."""
    from dataclasses import asdict

    from pet.expert.synth import synthesize

    if t_lm is None:
        raise ValueError("synthesize > 0 needs the T model (t_lm)")
    d = expert.data
    pairs, st = synthesize(t_lm, train, opts.synthesize, embedder, seed=expert.training.seed,
                           max_new_tokens=d.synth_max_new_tokens, temperature=d.synth_temperature,
                           min_similarity=d.synth_min_similarity, log=log, progress=opts.progress)
    return pairs, asdict(st)


def _accept(name: str, report: TrainReport, min_gain: float, force: bool, log: Callable[[str], None]) -> bool:
    """Whether the adapter is registered only because of ``force``; NoImprovementError when it may not be."""
    gain = report.ppl_gain
    if gain > min_gain:
        return False
    if not force:
        raise NoImprovementError(
            f"adapter for {name!r} does not improve on the base: held-out perplexity {report.ppl_expert:.3f} "
            f"vs base {report.ppl_base:.3f} (gain {gain:+.1%}, required > {min_gain:.1%}); "
            "nothing registered. Use more or cleaner data, more steps, or --force to register anyway.",
            report,
        )
    log(f"warning: registering {name!r} although it does not improve on the base (--force)")
    return True


def _exemplar_queries(train: list[Any], given: list[str] | None, limit: int, seed: int) -> tuple[list[str], str]:
    """Routing exemplars: the user's example queries plus snippets of the training data, and their source.

    Both together route better than either alone (benchmarks/domain_routing.py: "both" vs "examples" vs "data").
    """
    data_queries = sample_queries(train, limit, seed=seed)
    if given is None:
        return data_queries, "data"
    given = given[:limit]
    return given + [q for q in data_queries if q not in set(given)], "examples+data"


def _embed(embedder: Any, queries: list[str]) -> Any:
    """[n, dim] exemplar vectors ([0, dim] when there are no queries)."""
    if queries:
        return embedder.encode(queries)
    import numpy as np

    return np.zeros((0, int(getattr(embedder, "dim", 384))), dtype=np.float32)


class _LazyEmbedder:
    """The configured embedder, loaded on first use: a registration that fails early does not pay for it."""

    def __init__(self, cfg: PetConfig, threads: int):
        self.cfg, self.threads = cfg, threads
        self._emb: Any = None

    def _get(self) -> Any:
        if self._emb is None:
            from pet.models.embed import embedder_from_config

            self._emb = embedder_from_config(self.cfg, threads=self.threads)
        return self._emb

    @property
    def dim(self) -> int:
        return int(self._get().dim)

    def encode(self, texts: Any, batch_size: int = 32) -> Any:
        return self._get().encode(texts, batch_size)


def register_from_config(cfg: PetConfig, registry: ExpertRegistry, name: str, data: str | Path,
                         opts: RegisterOptions | None = None, base: str | None = None, threads: int | None = None,
                         contributor: str | None = None, log: Callable[[str], None] = print) -> RegisterResult:
    """What ``pet expert register`` does: the models of ``cfg`` (T only when synthesising, the configured
    embedder), :func:`register_domain`, then the ledger credit of ``contributor`` for the text it trained on."""
    from pet.paths import resolve_model
    from pet.traditional.versions import pin_in_force

    cfg = pin_in_force(cfg)  # E shares the T version in force (see pet.traditional.versions)
    opts = opts or RegisterOptions()
    threads = threads or cfg.expert.torch_threads
    preflight(registry, name, data, opts, cfg.expert)  # cheap checks first: a bad input loads no model
    base_dir = base or resolve_model(cfg.expert.base_model, cfg.models_dir)
    t_lm = None
    if opts.synthesize:
        from pet.models.lm import CausalLM

        t_lm = CausalLM.load(resolve_model(cfg.traditional.model, cfg.models_dir), threads=threads)
    res = register_domain(registry, name, data, base_dir, str(base or cfg.expert.base_model),
                          _LazyEmbedder(cfg, threads), cfg.expert, opts, t_lm, log=log, threads=threads)
    if contributor:
        from pet.ledger import Meter

        # Samples of the contributor's own text that trained the adapter (T's synthetic pairs excluded); the
        # event id names this exact adapter, so re-running the command never credits twice.
        res.credited = Meter.from_config(cfg).credit_contribution(
            f"expert:{name}@{res.record.fingerprint}", contributor, contributed_samples(res),
            f"expert_training:{name}")
    return res


def contributed_samples(res: RegisterResult) -> int:
    """Samples of the contributor's own text in the training split (at least 1)."""
    return max(res.report.train_samples - int(res.synth.get("kept", 0)), 1)


def rebase_from_config(cfg: PetConfig, registry: ExpertRegistry, name: str, data: str | Path | None = None,
                       opts: RegisterOptions | None = None, threads: int | None = None,
                       log: Callable[[str], None] = print) -> RegisterResult | None:
    """What ``pet expert register NAME --rebase`` does: retrain a registered domain on the T version in force
    (T upgrading E) from ``data`` or, without it, the domain's recipe; None when it is already on that base."""
    from pet.expert.recipes import RECIPES, get_recipe
    from pet.expert.registry import base_fingerprint
    from pet.paths import resolve_model
    from pet.traditional.versions import model_fingerprint, pin_in_force

    rec = registry.get(name)  # UnknownDomainError: only a registered domain can be rebased
    pinned = pin_in_force(cfg)
    target = model_fingerprint(resolve_model(pinned.expert.base_model, pinned.models_dir))
    if base_fingerprint(rec, cfg.models_dir) == target:
        log(f"expert {name!r} is already trained on {pinned.expert.base_model} ({target}); nothing to do")
        return None
    opts = opts or RegisterOptions()
    opts.replace = True
    with tempfile.TemporaryDirectory(prefix="pet-rebase-") as tmp:
        if data is None:
            if name not in RECIPES:
                raise DataError(f"expert {name!r} has no recipe: give the data to retrain it on with --data FILE")
            recipe = get_recipe(name)
            data = Path(tmp) / f"{name}{recipe.suffix}"
            out = recipe.write(data, None if opts.examples else Path(tmp) / "examples.txt")
            opts.examples = opts.examples or out.examples_path
        log(f"retraining {name!r} on {pinned.expert.base_model} ({target}); it was on {rec.base_model}")
        return register_from_config(cfg, registry, name, data, opts, threads=threads, log=log)
