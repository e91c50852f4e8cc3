"""``personalize``: one user's data -> shared subset -> cloud augmentation -> device LoRA -> device bundle.

    records = PersonalStore(dir, key).records("alice")    # or load_data_file("alice.jsonl", limit)
    report = personalize(cfg, "alice", records, share=0.3, synthetic=32, out="bundles/alice")

Only the selected share is given to the augment client (whose send path is observable, see
:mod:`pet.personal.personalize.client`); training uses every local record plus the synthetic samples. Every input
is checked before any model loads, and the bundle is written atomically by ``export_bundle``, so a bad
input or a failure leaves nothing behind. Logs carry counts only, never text.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pet.config.schema import PetConfig
from pet.paths import resolve_model
from pet.personal.personalize.data import select_share
from pet.personal.personalize.store import StoreError

log = logging.getLogger(__name__)


@dataclass
class PersonalizeReport:
    """What one personalisation run did (numbers and paths only)."""

    user: str
    messages: int
    shared: int
    synthetic_requested: int
    synthetic_received: int
    augment_stats: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    bundle: str | None = None
    model_dir: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def check_inputs(cfg: PetConfig, records: list[dict[str, Any]], share: float, synthetic: int | None,
                 out: str | Path | None, replace: bool) -> int:
    """Validate before any work; returns the synthetic count to ask for. StoreError names the problem."""
    pcfg = cfg.personalization
    if not records:
        raise StoreError("no personal data: the data is empty")
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0.0 <= share <= 1.0:
        raise StoreError(f"share fraction must be a number in [0, 1] (got {share!r})")
    n = pcfg.synthetic_default if synthetic is None else synthetic
    if not 0 <= n <= pcfg.synthetic_max:
        raise StoreError(f"--synthetic must be in [0, {pcfg.synthetic_max}] (personalization.synthetic_max)")
    if out is not None and Path(out).exists() and not replace:
        raise FileExistsError(f"{out} already exists (use --replace to swap it atomically)")
    return n


def default_local_client(cfg: PetConfig, progress: Callable[[int], None] | None = None) -> Any:
    """The in-process Augmenter: T from ``cfg.traditional.model`` plus MiniLM."""
    from pet.models.embed import embedder_from_config
    from pet.models.lm import CausalLM
    from pet.personal.personalize.client import LocalAugmentClient

    lm = CausalLM.load(resolve_model(cfg.traditional.model, cfg.models_dir),
                       threads=cfg.personalization.torch_threads)
    return LocalAugmentClient(lm, embedder_from_config(cfg), cfg.personalization,
                              progress=progress)


def personalize(cfg: PetConfig, user: str, records: list[dict[str, Any]], share: float,
                out: str | Path | None, share_filter: str | None = None, synthetic: int | None = None,
                client: Any = None, base_model: str | Path | None = None, replace: bool = False,
                model_out: str | Path | None = None, progress: bool = True,
                say: Callable[[str], None] = lambda m: None) -> PersonalizeReport:
    """Run the whole device-side flow; ``client=None`` runs the Augmenter in-process.

    ``out`` is the device bundle (None: skip the export, e.g. in tests without ONNX); ``model_out`` keeps
    the merged HF folder too. Raises StoreError / FileExistsError on bad input before loading anything.
    """
    pcfg = cfg.personalization
    n = check_inputs(cfg, records, share, synthetic, out, replace)
    if model_out is not None and Path(model_out).exists() and not replace:
        raise FileExistsError(f"{model_out} already exists (use --replace)")
    records = records[-pcfg.max_messages:]
    texts = [r["text"] for r in records]
    idx = select_share(texts, share, share_filter, pcfg.seed)[: pcfg.max_shared]
    shared = [texts[i] for i in idx]
    report = PersonalizeReport(user, len(records), len(shared), n, 0)
    t0 = time.perf_counter()

    samples: list[str] = []
    if n and shared:
        if client is None:
            say("loading T and MiniLM for in-process augmentation (no --url)")
            client = default_local_client(cfg)
        say(f"augmenting: {len(shared)} shared of {len(records)} messages, asking for {n} synthetic samples")
        reply = client.request({"shared": shared, "n": n, "seed": pcfg.seed})
        samples = [s for s in reply["samples"] if isinstance(s, str) and s.strip()][:n]
        report.augment_stats = dict(reply.get("stats") or {})
    elif n:
        say("nothing is shared (share 0 or no message matches the filter): training on local data only")
    report.synthetic_received = len(samples)
    report.seconds["augment"] = round(time.perf_counter() - t0, 2)
    log.info("personalize: %d messages, %d shared, %d synthetic", len(records), len(shared), len(samples))

    from pet.models.lora import load_base, save_merged
    from pet.personal.personalize.lora import merge, tokenize_examples, train_lora

    t1 = time.perf_counter()
    base = Path(base_model) if base_model else resolve_model(pcfg.base_model, cfg.models_dir)
    say(f"training LoRA on {base.name}: {len(records)} real + {len(samples)} synthetic examples")
    model, tok = load_base(base, threads=pcfg.torch_threads)
    examples = tokenize_examples(tok, records, pcfg, samples)
    result = train_lora(model, tok, examples, pcfg, progress=progress, desc=f"LoRA {user}")
    report.train = result.summary()
    merged = merge(result.model)
    report.seconds["train"] = round(time.perf_counter() - t1, 2)

    t2 = time.perf_counter()
    parent = Path(out).parent if out is not None else Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".pet-personal-", dir=parent))
    try:
        merged_dir = save_merged(merged, tok, work / "model")
        if model_out is not None:
            save_merged(merged, tok, model_out, replace=replace)
            report.model_dir = str(model_out)
        if out is not None:
            from pet.personal.bundle.sign import signing_keys_dir
            from pet.personal.bundle.write import export_bundle

            say(f"exporting the device bundle ({pcfg.export_quantize}), signed with the cloud's bundle key")
            export_bundle(merged_dir, out, quantize=pcfg.export_quantize, tier="P", replace=replace,
                          model_id=f"personal-{user}", keys_dir=signing_keys_dir(cfg), log=say)
            report.bundle = str(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.seconds["export"] = round(time.perf_counter() - t2, 2)
    report.seconds["total"] = round(time.perf_counter() - t0, 2)
    return report
