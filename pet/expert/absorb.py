"""What T's upgrade needs from the expert registry: the adapters, the base each was trained on, held-out texts.

    res = upgrade_from_config(cfg, ["python", "chitchat"], method="ties")    # pet traditional upgrade
    items = domain_heldout(record, cfg, tok) # the registration's own held-out split, rebuilt

An expert's held-out texts are the ones its registration held out: the data is rebuilt (from the domain's
recipe in :mod:`pet.expert.recipes`, or the file given with ``--data NAME=FILE``), checked against the sha256
the registry recorded (a rebuilt recipe with the same sample count and bytes within 0.1 % also passes: pydoc's
output varies a little between processes), and split with the same seed and fraction. General held-out text is
``traditional.upgrade.general_data`` or, by default, the general question/answer pairs of the checkout
(``benchmarks/data/general_qa.jsonl``: capitals, science, history; only the answers are scored).
Each set is cut to ``traditional.upgrade.eval_samples`` texts (a seeded sample).
"""

from __future__ import annotations

import json
import random
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pet.config.schema import PetConfig
from pet.expert.data import DataError, Sample, load_domain_data, split_heldout
from pet.expert.registry import ExpertRecord, ExpertRegistry, base_fingerprint
from pet.metrics import Item
from pet.paths import source_checkout
from pet.traditional.upgrade import GENERAL, ExpertSource, Parent, UpgradeResult, check_request, upgrade_t
from pet.traditional.versions import in_force, model_fingerprint, versions_root

GENERAL_QA = Path("benchmarks") / "data" / "general_qa.jsonl"


def _sample(items: list[Any], n: int) -> list[Any]:
    return items if len(items) <= n else random.Random(0).sample(items, n)


def domain_samples(rec: ExpertRecord, cfg: PetConfig, data: str | Path | None = None) -> list[Sample]:
    """The held-out samples of ``rec``'s registration (data rebuilt from ``data`` or the domain's recipe)."""
    from pet.expert.recipes import RECIPES, get_recipe

    limits = cfg.expert.data
    from_recipe = data is None
    with tempfile.TemporaryDirectory(prefix="pet-heldout-") as tmp:
        if data is None:
            if rec.name not in RECIPES:
                raise DataError(f"expert {rec.name!r} has no recipe to rebuild its held-out text; give its data "
                                f"file: --data {rec.name}=FILE")
            recipe = get_recipe(rec.name)
            data = Path(tmp) / f"{rec.name}{recipe.suffix}"
            recipe.write(data)
        dd = load_domain_data(data, max_bytes=limits.max_data_bytes, chunk_chars=limits.chunk_chars)
    recorded, shape = rec.manifest.get("data_sha256"), rec.manifest.get("data", {})
    # pydoc output depends a little on the process (hash order, what is imported), so a rebuilt recipe may differ in
    # a few characters: the same sample count (and bytes within 0.1 %) gives the same split by index.
    same_shape = from_recipe and shape.get("samples") == len(dd.samples) \
        and abs(int(shape.get("bytes", 0)) - dd.bytes) <= dd.bytes / 1000
    if recorded and recorded != dd.sha256 and not same_shape:
        raise DataError(f"expert {rec.name!r} was trained on data with sha256 {recorded[:12]}..., but the data at "
                        f"hand has {dd.sha256[:12]}...: its held-out split cannot be rebuilt (give the original "
                        f"file with --data {rec.name}=FILE)")
    settings = rec.metrics.get("settings", {})
    t = cfg.expert.training
    _, held = split_heldout(dd.samples, settings.get("heldout_fraction", t.heldout_fraction),
                            seed=settings.get("seed", t.seed), max_heldout=settings.get("max_heldout", t.max_heldout))
    return _sample(held, cfg.traditional.upgrade.eval_samples)


def general_samples(cfg: PetConfig) -> list[Sample]:
    """General held-out samples: ``traditional.upgrade.general_data``, else the checkout's general QA pairs."""
    ucfg = cfg.traditional.upgrade
    if ucfg.general_data:
        dd = load_domain_data(ucfg.general_data, chunk_chars=cfg.expert.data.chunk_chars)
        return _sample(dd.samples, ucfg.eval_samples)
    checkout = source_checkout()
    path = checkout / GENERAL_QA if checkout else None
    if path is None or not path.is_file():
        raise DataError("no general held-out text: set traditional.upgrade.general_data to a .txt or .jsonl file")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return _sample([Sample(prompt=r["query"], response=r["reference"]) for r in rows], ucfg.eval_samples)


def heldout_sets(records: Sequence[ExpertRecord], cfg: PetConfig, tok: Any,
                 data: dict[str, str] | None = None) -> dict[str, list[Item]]:
    """``{domain: items, ..., "general": items}`` ready for :func:`pet.traditional.upgrade.upgrade_t`."""
    sets = {r.name: [s.item(tok) for s in domain_samples(r, cfg, (data or {}).get(r.name))] for r in records}
    sets[GENERAL] = [s.item(tok) for s in general_samples(cfg)]
    return sets


def upgrade_from_config(cfg: PetConfig, names: Sequence[str], method: str | None = None,
                        weights: Sequence[float] | None = None, force: bool = False,
                        data: dict[str, str] | None = None, threads: int | None = None,
                        log: Callable[[str], None] = print) -> UpgradeResult:
    """What ``pet traditional upgrade`` does: merge the registered ``names`` into the T in force, gate, write."""
    registry = ExpertRegistry.from_config(cfg)
    t = in_force(cfg)
    parent = Parent(t.name, t.path, model_fingerprint(t.path))
    records = [registry.get(n) for n in names]  # UnknownDomainError names the registered ones
    sources = [ExpertSource(r.name, registry.adapter_dir(r.name, verify=True), r.fingerprint,
                            base_fingerprint(r, cfg.models_dir)) for r in records]
    unknown = sorted(set(data or {}) - set(names))
    if unknown:
        raise DataError(f"--data names experts that are not merged: {', '.join(unknown)}")
    check_request(parent, sources, weights, method or cfg.traditional.upgrade.method, None)
    log("rebuilding held-out texts: " + ", ".join([*names, GENERAL]))
    sets = heldout_sets(records, cfg, _tokenizer(parent.path), data)
    return upgrade_t(parent, sources, weights, sets, cfg.traditional.upgrade, versions_root(cfg.models_dir),
                     method=method, force=force, threads=threads or cfg.traditional.torch_threads, log=log)


def _tokenizer(folder: Path) -> Any:
    from pet.paths import set_offline

    set_offline()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, local_files_only=True)
