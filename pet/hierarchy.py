"""What a new user gets by default: the whole P -> E -> T hierarchy, prepared once and reused after.

- **E**: the starter experts shipped in the package (:mod:`pet.expert.starter`), registered where missing.
- **P**: the default device bundle (:mod:`pet.personal.bundle.default`), the signed int8 export of T's model.
- **the router**: ``router.calibration: default`` is the calibration file shipped with the package
  (:data:`pet.router.defaults.DEFAULT_CALIBRATION`), fitted by ``pet router calibrate`` for exactly that P
  recipe; its ``p_bundle`` entry names the recipe and :func:`calibration_matches` compares them (a test fails
  when they drift apart).

    prepared = prepare_hierarchy(cfg, log=print)   # keys, starter experts, default bundle; idempotent
    prepared.bundle                                 # Path of the device bundle P runs
    print(summarize(cfg))                           # one line per tier and subsystem (`pet config check`)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pet.config.schema import PetConfig
from pet.config.schema.serve import DeploymentOptions
from pet.paths import layout, models_dir, resolve_model, state_dir
from pet.personal.bundle.default import (
    DEFAULT,
    default_bundle_recipe,
    ensure_default_bundle,
    recipe_key,
    resolve_bundle,
)
from pet.router.defaults import DEFAULT_CALIBRATION, resolve_calibration, router_in_force


def calibration_matches(cfg: Any, path: Path | None = None) -> tuple[bool, str]:
    """(does the calibration file's ``p_bundle`` recipe equal the default P's?, a sentence saying so)."""
    import yaml

    path = path or DEFAULT_CALIBRATION
    fitted_for = (yaml.safe_load(path.read_text()) or {}).get("p_bundle")
    wanted = default_bundle_recipe(cfg)
    if fitted_for == wanted:
        return True, f"{path.name} was fitted for the default P (recipe {recipe_key(wanted)})"
    return False, (f"{path.name} was fitted for P recipe {fitted_for}, but the default P is {wanted}: regenerate "
                   "it (docs/router.md, 'The shipped calibration')")


@dataclass
class Prepared:
    """What :func:`prepare_hierarchy` made ready."""

    bundle: Path
    experts_installed: list[str] = field(default_factory=list)
    experts: list[str] = field(default_factory=list)
    calibration: str = ""


def prepare_hierarchy(cfg: Any, log: Callable[[str], None] = lambda m: None) -> Prepared:
    """Keys, starter experts and the device bundle the default configuration needs; cheap when already done."""
    from pet.expert.registry import ExpertRegistry
    from pet.expert.starter import install_starters
    from pet.security.keys import ensure_keys

    ensure_keys(cfg)
    reg = ExpertRegistry.from_config(cfg)
    installed = install_starters(reg, log=log)
    bundle = resolve_bundle(cfg)
    if bundle is None:
        raise ValueError("personal.bundle is not set: the hierarchy needs a device bundle (`default` builds one)")
    if cfg.personal.bundle == DEFAULT:
        bundle = ensure_default_bundle(cfg, log)
    elif not (bundle / "bundle.json").is_file():
        raise FileNotFoundError(f"personal.bundle {bundle} is not a bundle folder (no bundle.json)")
    cal = resolve_calibration(cfg.router.calibration)
    note = "none: uncalibrated geomean thresholds" if cal is None else str(cal)
    if cal is not None and cfg.router.calibration == DEFAULT and cfg.personal.bundle == DEFAULT:
        ok, why = calibration_matches(cfg, cal)
        note += "" if ok else f" (WARNING: {why})"
    return Prepared(bundle=bundle, experts_installed=installed, experts=reg.names(), calibration=note)


# -----------------------------------------------------------------------------------------------------------------
# What a configuration runs, in words (`pet config check`)


def _replicas(d: DeploymentOptions) -> str:
    a = d.autoscaling_config
    reps = f"autoscale {a.min_replicas}-{a.max_replicas}" if a else f"{d.num_replicas} replica(s)"
    return f"{reps}, {d.ray_actor_options.num_cpus} CPU each"


def summarize(cfg: PetConfig) -> str:
    """Table-like lines: one per tier and subsystem, noting models that are not prepared yet."""
    def model_line(ref: str) -> str:
        path = resolve_model(ref, cfg.models_dir)
        state = "ready" if (path / "config.json").is_file() else "NOT PREPARED (run: pet models prepare)"
        return f"{ref} [{state}]"

    rows = [
        ("models_dir", str(models_dir(cfg.models_dir))),
        ("state_dir", f"{state_dir(cfg.models_dir)} (keys, ledger, deployment record)"),
        ("defaults from", "config models_dir" if cfg.models_dir else layout().rule),
        ("T traditional", f"{model_line(cfg.traditional.model)}; {_replicas(cfg.traditional.deployment)}; "
                          f"batching {'on' if cfg.traditional.batching.enabled else 'off'}"
                          f" (max {cfg.traditional.batching.max_batch_size})"),
        ("E expert", f"base {model_line(cfg.expert.base_model)}; {_replicas(cfg.expert.deployment)}; "
                     f"{cfg.expert.max_adapters_per_replica} adapters/replica; timeout {cfg.expert.timeout_s}s"),
        ("P personal", f"bundle {_bundle(cfg)}; {cfg.personal.num_threads} thread(s)"),
        ("router", _router(cfg)),
        ("crypto", f"{cfg.crypto.suite.value}; plaintext "
                   f"{'ALLOWED (dev)' if cfg.crypto.allow_plaintext else 'refused'}"),
        ("ledger", f"{'on' if cfg.ledger.enabled else 'off'}; prices/1k tokens P {cfg.ledger.prices.p} "
                   f"E {cfg.ledger.prices.e} T {cfg.ledger.prices.t}"),
        ("serve", f"app {cfg.serve.app_name!r} at http://{cfg.serve.http.host}:{cfg.serve.http.port}"
                  f"{cfg.serve.route_prefix}"
                  + (f", direct ingress from port {cfg.serve.http.direct_port}" if cfg.serve.http.direct_port else "")
                  + (", throughput-optimized Serve" if cfg.serve.throughput_optimized else "")),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def _bundle(cfg: PetConfig) -> str:
    path = resolve_bundle(cfg)
    if path is None:
        return "(none)"
    return f"{path} (the signed int8 export of T, built on first use)" if cfg.personal.bundle == DEFAULT else str(path)


def _router(cfg: PetConfig) -> str:
    """The router in force: policy, floor, and where the thresholds come from."""
    r = router_in_force(cfg)
    head = f"{r['policy']}; domain floor {r['domain_floor']}; "
    if r["calibration"] is None:
        return head + f"uncalibrated: P threshold {r['p_threshold']}, E threshold {r['e_threshold']}"
    return head + (f"calibrated ({Path(r['calibration']).name}): P threshold {r['p_threshold']:.3f}, "
                   f"E threshold {r['e_threshold']:.3f}")
