"""T absorbs the experts: merge expert LoRA adapters into a new T version, evaluate it, and accept it or refuse.

    sources = [ExpertSource("python", adapter_dir, adapter_fp, base_fp), ...]
    res = upgrade_t(parent, sources, [1.0, 1.0], {"python": items, "general": items}, cfg.traditional.upgrade,
                    versions_root)             # UpgradeRefused (nothing written) when the gate fails, unless force
    res.version.path, res.table

The merge is peft's: the adapters are loaded onto T's base, combined by ``add_weighted_adapter`` (``linear``,
``ties``, ``dare_ties``, ``svd``) and folded into the weights by ``merge_and_unload``. Every adapter must have been
trained on this very T (its recorded base fingerprint equals the parent's), else :class:`BaseMismatchError`
before any model is loaded.

The gate scores the parent and the merged model on the same held-out texts: each merged domain's perplexity must
drop by more than ``min_domain_gain``, and perplexity on general text may rise by at most ``max_general_loss``
(default 2 %). A failed check raises :class:`UpgradeRefused` naming the check and by how much, unless ``force``
(the manifest then records the failures). An accepted version is written atomically as
``<versions root>/<lineage>-v<N>/`` (see :mod:`pet.traditional.versions`); the parent is never touched.

Which texts are held out for a domain belongs to the expert registry (:mod:`pet.expert.absorb` supplies them).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pet.config.schema.tiers import MergeMethod, TraditionalUpgradeConfig
from pet.io import atomic_dir, atomic_write_json, sha256_tree
from pet.metrics import Item, encode_items, perplexity
from pet.traditional.versions import T_MANIFEST, TVersion, fingerprint_of_hashes, next_version_name, read_version

GENERAL = "general"  # the key of the general held-out set; every other key is a merged domain
FORMAT_VERSION = 1


class UpgradeError(ValueError):
    """Bad upgrade input: no experts, an unknown method, weights that do not fit, a missing held-out set."""


class BaseMismatchError(UpgradeError):
    """An expert adapter was trained on another T than the one being upgraded."""


class UpgradeRefused(RuntimeError):
    """The merged T failed the gate; nothing was written. ``result`` holds the evaluation."""

    def __init__(self, message: str, table: dict[str, dict[str, float]], failures: list[str]):
        super().__init__(message)
        self.table, self.failures = table, failures


@dataclass(frozen=True)
class ExpertSource:
    """One adapter to merge: its domain name, peft folder, registry fingerprint and the T it was trained on."""

    name: str
    adapter_dir: Path
    fingerprint: str
    base_fingerprint: str


@dataclass(frozen=True)
class Parent:
    """The T being upgraded: its name (builtin or version), folder and fingerprint."""

    name: str
    path: Path
    fingerprint: str


@dataclass
class UpgradeResult:
    """An accepted (or forced) new T version and how it was measured."""

    version: TVersion
    table: dict[str, dict[str, float]]
    failures: list[str] = field(default_factory=list)
    merge_seconds: float = 0.0
    seconds: float = 0.0


def check_request(parent: Parent, experts: Sequence[ExpertSource], weights: Sequence[float] | None,
                  method: str, sets: dict[str, Sequence[Item]] | None) -> tuple[MergeMethod, list[float]]:
    """Every check that needs no model: method, weights, held-out sets (unless None), base fingerprints.

    Returns (method, weights); raises :class:`UpgradeError` or :class:`BaseMismatchError`.
    """
    if not experts:
        raise UpgradeError("no experts to merge")
    names = [e.name for e in experts]
    if len(set(names)) != len(names):
        raise UpgradeError(f"an expert is named twice: {', '.join(names)}")
    try:
        chosen = MergeMethod(method)
    except ValueError:
        raise UpgradeError(f"unknown merge method {method!r}; known: "
                           f"{', '.join(m.value for m in MergeMethod)}") from None
    w = [1.0] * len(experts) if weights is None else [float(x) for x in weights]
    if len(w) != len(experts):
        raise UpgradeError(f"{len(w)} weights for {len(experts)} experts ({', '.join(names)}): give one per expert")
    if not all(math.isfinite(x) and x > 0 for x in w):
        raise UpgradeError(f"weights must be finite and > 0, got {w}")
    missing = [k for k in [*names, GENERAL] if sets is not None and not sets.get(k)]
    if missing:
        raise UpgradeError(f"no held-out texts for: {', '.join(missing)}")
    for e in experts:
        if e.base_fingerprint != parent.fingerprint:
            raise BaseMismatchError(
                f"expert {e.name!r} was trained on a T with fingerprint {e.base_fingerprint or 'unknown'}, not on "
                f"{parent.name} ({parent.fingerprint}); retrain it on this T first: pet expert register {e.name} "
                "--rebase")
    return chosen, w


def merge_experts(base: Any, experts: Sequence[ExpertSource], weights: Sequence[float], method: MergeMethod,
                  density: float, seed: int = 0) -> Any:
    """``base`` (a loaded HF causal LM, changed in place) with the experts merged by peft; returns the plain model."""
    import torch
    from peft import PeftModel

    pm = PeftModel.from_pretrained(base, str(experts[0].adapter_dir), adapter_name=experts[0].name)
    for e in experts[1:]:
        pm.load_adapter(str(e.adapter_dir), adapter_name=e.name)
    kwargs: dict[str, Any] = {"density": density} if method in (MergeMethod.ties, MergeMethod.dare_ties) else {}
    torch.manual_seed(seed)  # dare_ties drops weights at random
    pm.add_weighted_adapter([e.name for e in experts], list(weights), "merged", combination_type=method.value,
                            **kwargs)
    pm.set_adapter("merged")
    for e in experts:
        pm.delete_adapter(e.name)
    return pm.merge_and_unload()


def score_sets(model: Any, tok: Any, sets: dict[str, Sequence[Item]], max_len: int,
               log: Callable[[str], None] = print, label: str = "") -> dict[str, float]:
    """Perplexity of ``model`` on every held-out set (progress: one line per set)."""
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    out = {}
    for key, items in sets.items():
        t0 = time.perf_counter()
        rows = encode_items(tok, items, max_len)
        if not rows:
            raise UpgradeError(f"held-out set {key!r} has no tokens to score")
        out[key] = perplexity(model, rows, pad_id)[0]
        log(f"{label} {key}: perplexity {out[key]:.3f} on {len(rows)} texts ({time.perf_counter() - t0:.0f} s)")
    return out


def gate(before: dict[str, float], after: dict[str, float], ucfg: TraditionalUpgradeConfig
         ) -> tuple[dict[str, dict[str, float]], list[str]]:
    """(evaluation table, failed checks): domains must gain, general text may lose at most the margin."""
    table, failures = {}, []
    for key in before:
        change = after[key] / before[key] - 1.0  # + : perplexity went up (worse)
        table[key] = {"parent": before[key], "merged": after[key], "change": change}
        allowed = ucfg.max_general_loss
        if key == GENERAL and change > allowed:
            failures.append(f"general text: perplexity {before[key]:.3f} -> {after[key]:.3f} ({change:+.1%}; "
                            f"allowed at most {allowed:+.1%}), over by {change - allowed:.1%}")
        elif key != GENERAL and -change <= ucfg.min_domain_gain:
            failures.append(f"domain {key!r}: perplexity {before[key]:.3f} -> {after[key]:.3f} (gain {-change:+.1%}; "
                            f"required > {ucfg.min_domain_gain:.1%}), short by {ucfg.min_domain_gain + change:.1%}")
    return table, failures


def upgrade_t(parent: Parent, experts: Sequence[ExpertSource], weights: Sequence[float] | None,
              sets: dict[str, Sequence[Item]], ucfg: TraditionalUpgradeConfig, root: str | Path,
              method: str | None = None, force: bool = False, threads: int | None = None,
              log: Callable[[str], None] = print) -> UpgradeResult:
    """Merge, evaluate, gate and write a new T version under ``root``; see the module docstring."""
    from pet.models.lora import load_base

    t0 = time.perf_counter()
    chosen, w = check_request(parent, experts, weights, method or ucfg.method, sets)
    log(f"loading T {parent.name} ({parent.fingerprint})")
    model, tok = load_base(parent.path, threads)
    before = score_sets(model, tok, sets, ucfg.max_seq_len, log, "parent")
    log(f"merging {', '.join(e.name for e in experts)} with {chosen.value} (weights {w})")
    t_merge = time.perf_counter()
    merged = merge_experts(model, experts, w, chosen, ucfg.density)
    merge_seconds = time.perf_counter() - t_merge
    log(f"merged in {merge_seconds:.1f} s")
    after = score_sets(merged, tok, sets, ucfg.max_seq_len, log, "merged")
    table, failures = gate(before, after, ucfg)
    if failures and not force:
        raise UpgradeRefused("the merged T is refused; nothing written:\n  " + "\n  ".join(failures)
                             + "\n(--force writes it anyway)", table, failures)
    record = {
        "format": FORMAT_VERSION, "parent": {"name": parent.name, "fingerprint": parent.fingerprint},
        "experts": [{"name": e.name, "fingerprint": e.fingerprint, "base_fingerprint": e.base_fingerprint}
                    for e in experts],
        "method": chosen.value, "weights": w, "density": ucfg.density if chosen in ("ties", "dare_ties") else None,
        "evaluation": table, "gate": {"passed": not failures, "forced": bool(failures), "failures": failures,
                                      "max_general_loss": ucfg.max_general_loss,
                                      "min_domain_gain": ucfg.min_domain_gain, "max_seq_len": ucfg.max_seq_len},
        "merge_seconds": merge_seconds,
    }
    version = write_version(Path(root), parent.name, merged, tok, record)
    log(f"wrote {version.path}")
    return UpgradeResult(version, table, failures, merge_seconds, time.perf_counter() - t0)


def write_version(root: Path, parent_name: str, model: Any, tok: Any, record: dict[str, Any]) -> TVersion:
    """Save ``model`` as the next version after ``parent_name`` under ``root`` atomically; the manifest goes last."""
    name = next_version_name(root, parent_name)
    with atomic_dir(root / name) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        files = sha256_tree(tmp)
        manifest = {**record, "name": name, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "fingerprint": fingerprint_of_hashes(files), "files": files}
        atomic_write_json(tmp / T_MANIFEST, manifest)
    return read_version(root, name)
