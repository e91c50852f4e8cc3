"""Register one expert domain end to end: validate, (synthesise), train, evaluate, accept, store.

    result = register_domain(registry, "python", "data/python.txt", base_dir, "smollm2-135m-instruct",
                             embedder, settings)

Order matters for "bad input loses nothing": the name, the existing-domain check and the data file are
validated before any model is loaded; training writes to a temporary folder; the registry is touched once,
at the end, by the atomic :meth:`ExpertRegistry.add`. An adapter whose held-out perplexity is not lower
than the base's (by ``min_ppl_gain``) is refused with :class:`NoImprovementError` unless ``force``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pet.expert.data import DomainData, load_domain_data, load_queries, sample_queries, split_heldout
from pet.expert.registry import DomainExistsError, ExpertRecord, ExpertRegistry, check_name
from pet.expert.train import TrainReport, TrainSettings, load_base, train_lora


class NoImprovementError(RuntimeError):
    """The trained adapter does not beat the base on held-out data; nothing was registered."""

    def __init__(self, message: str, report: TrainReport):
        super().__init__(message)
        self.report = report


@dataclass
class RegisterOptions:
    """Everything about a registration except the model objects."""

    examples: str | Path | None = None
    synthesize: int = 0
    replace: bool = False
    force: bool = False
    heldout_fraction: float = 0.1
    max_heldout: int = 32
    min_ppl_gain: float = 0.0
    max_data_bytes: int = 20_000_000
    chunk_chars: int = 1000
    max_exemplars: int = 64
    synth_max_new_tokens: int = 160
    synth_min_similarity: float = 0.3
    synth_temperature: float = 0.7
    progress: bool = True

    @classmethod
    def from_config(cls, expert_cfg: Any, **overrides: Any) -> RegisterOptions:
        """Defaults from ``ExpertConfig`` (``training`` and ``data`` sections), then ``overrides``."""
        t, d = expert_cfg.training, expert_cfg.data
        base = dict(heldout_fraction=t.heldout_fraction, max_heldout=t.max_heldout, min_ppl_gain=t.min_ppl_gain,
                    max_data_bytes=d.max_data_bytes, chunk_chars=d.chunk_chars, max_exemplars=d.max_exemplars,
                    synth_max_new_tokens=d.synth_max_new_tokens, synth_min_similarity=d.synth_min_similarity,
                    synth_temperature=d.synth_temperature)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


@dataclass
class RegisterResult:
    """Outcome of a successful registration."""

    record: ExpertRecord
    report: TrainReport
    seconds: float
    synth: dict = field(default_factory=dict)


def preflight(registry: ExpertRegistry, name: str, data: str | Path, opts: RegisterOptions
              ) -> tuple[DomainData, list[str] | None]:
    """Every check that needs no model: name, existing domain, data file, examples file."""
    check_name(name)
    if name in registry.names() and not opts.replace:
        raise DomainExistsError(f"expert domain {name!r} already exists; pass --replace to overwrite it")
    dd = load_domain_data(data, max_bytes=opts.max_data_bytes, chunk_chars=opts.chunk_chars)
    queries = load_queries(opts.examples) if opts.examples else None
    return dd, queries


def register_domain(registry: ExpertRegistry, name: str, data: str | Path, base_dir: str | Path, base_model: str,
                    embedder: Any, settings: TrainSettings | None = None, opts: RegisterOptions | None = None,
                    t_lm: Any = None, log: Callable[[str], None] = print) -> RegisterResult:
    """Validate, optionally synthesise with ``t_lm``, train and evaluate a LoRA adapter, then store it atomically.

    ``t_lm`` (a :class:`pet.models.lm.CausalLM`) is needed only when ``opts.synthesize > 0``.
    Raises DataError / InvalidDomainNameError / DomainExistsError before any model work, and
    NoImprovementError after training when the adapter does not help (registry unchanged in every case).
    """
    t0 = time.perf_counter()
    opts = opts or RegisterOptions()
    settings = settings or TrainSettings()
    dd, queries = preflight(registry, name, data, opts)
    log(f"data: {dd.path} ({dd.bytes:,} bytes, {len(dd.samples)} samples, sha256 {dd.sha256[:12]}...)")

    train, held = split_heldout(dd.samples, opts.heldout_fraction, seed=settings.seed, max_heldout=opts.max_heldout)
    synth_stats: dict = {}
    if opts.synthesize > 0:
        if t_lm is None:
            raise ValueError("synthesize > 0 needs the T model (t_lm)")
        from dataclasses import asdict

        from pet.expert.synth import synthesize

        # Seeds come from the training split only, so held-out text never leaks into training via T.
        pairs, st = synthesize(t_lm, train, opts.synthesize, embedder, seed=settings.seed,
                               max_new_tokens=opts.synth_max_new_tokens, temperature=opts.synth_temperature,
                               min_similarity=opts.synth_min_similarity, log=log, progress=opts.progress)
        train = train + pairs
        synth_stats = asdict(st)

    model, tok = load_base(base_dir, settings.threads)
    train_texts = [s.item(tok) for s in train]  # pairs: only the response tokens are trained on and scored
    held_texts = [s.item(tok) for s in held]
    with tempfile.TemporaryDirectory(prefix="pet-expert-") as tmp:
        report = train_lora(base_dir, train_texts, held_texts, Path(tmp) / "adapter", settings, log=log,
                            progress=opts.progress, base=(model, tok))
        gain = report.ppl_gain
        if gain <= opts.min_ppl_gain and not opts.force:
            raise NoImprovementError(
                f"adapter for {name!r} does not improve on the base: held-out perplexity {report.ppl_expert:.3f} "
                f"vs base {report.ppl_base:.3f} (gain {gain:+.1%}, required > {opts.min_ppl_gain:.1%}); "
                "nothing registered. Use more or cleaner data, more steps, or --force to register anyway.",
                report,
            )
        if gain <= opts.min_ppl_gain:
            log(f"warning: registering {name!r} although it does not improve on the base (--force)")
        # Exemplars: the user's example queries plus snippets of the training data. Both together route
        # better than either alone (benchmarks/domain_routing.py: "both" vs "examples" vs "data").
        data_queries = sample_queries(train, opts.max_exemplars, seed=settings.seed)
        if queries is None:
            queries, exemplar_source = data_queries, "data"
        else:
            given = queries[: opts.max_exemplars]
            queries = given + [q for q in data_queries if q not in set(given)]
            exemplar_source = "examples+data"
        exemplars = embedder.encode(queries) if queries else None
        if exemplars is None:
            import numpy as np

            exemplars = np.zeros((0, int(getattr(embedder, "dim", 384))), dtype=np.float32)
        metrics = report.metrics()
        metrics["forced"] = bool(opts.force and gain <= opts.min_ppl_gain)
        rec = registry.add(
            name, Path(tmp) / "adapter", exemplars, metrics, base_model, data_sha256=dd.sha256,
            replace=opts.replace,
            extra={"data": {"file": dd.path.name, "bytes": dd.bytes, "kind": dd.kind, **dd.stats},
                   "exemplar_source": exemplar_source, "synthesis": synth_stats},
        )
    return RegisterResult(record=rec, report=report, seconds=time.perf_counter() - t0, synth=synth_stats)
