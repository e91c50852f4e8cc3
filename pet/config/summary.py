"""A short human-readable summary of a validated configuration."""

from __future__ import annotations

from pet.config.schema import DeploymentOptions, PetConfig
from pet.paths import layout, models_dir, resolve_model, state_dir


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
    from pet.hierarchy import DEFAULT, resolve_bundle

    path = resolve_bundle(cfg)
    if path is None:
        return "(none)"
    return f"{path} (the signed int8 export of T, built on first use)" if cfg.personal.bundle == DEFAULT else str(path)


def _router(cfg: PetConfig) -> str:
    """The router in force: policy, floor, and where the thresholds come from."""
    from pet.hierarchy import resolve_calibration

    r = cfg.router
    head = f"{r.policy.value}; domain floor {r.domain_similarity_floor}; "
    cal = resolve_calibration(r.calibration)
    if cal is None:
        return head + f"uncalibrated: P threshold {r.p_threshold}, E threshold {r.e_threshold}"
    try:
        from pet.router.policy import RouterFile

        f = RouterFile.load(cal)
        return head + f"calibrated ({cal.name}): P threshold {f.p_threshold:.3f}, E threshold {f.e_threshold:.3f}"
    except (OSError, ValueError) as err:
        return head + f"calibration {cal} unreadable ({err})"
