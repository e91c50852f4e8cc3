"""Build the Serve application of `pet` from a validated config.

    from pet.serve.app import build_app
    handle = serve.run(build_app(cfg), name=cfg.serve.app_name, route_prefix=cfg.serve.route_prefix)

The graph: ``Gateway`` (FastAPI ingress, :mod:`pet.serve.gateway`) holding handles to ``Traditional`` (T),
``ExpertPool`` (E) and the ``Augmenter`` (personalisation, :mod:`pet.serve.augmenter`). Each deployment gets its
YAML ``deployment`` section through ``.options()`` unchanged. :func:`app_builder` is the same graph for
Ray's own tooling (``serve run`` / ``serve deploy`` on the file ``pet build`` writes, see
:func:`serve_config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pet.config.schema import PetConfig

DEPLOYMENT_NAMES = ("Traditional", "ExpertPool", "Gateway", "Augmenter")


def logging_config(cfg: PetConfig) -> dict[str, Any]:
    """Serve logging for every deployment: access logs only when the gateway config asks for them."""
    return {"enable_access_log": bool(cfg.serve.gateway.access_log)}


def build_app(cfg: PetConfig) -> Any:
    """The bound Serve application (Gateway -> Traditional, ExpertPool, Augmenter)."""
    from pet.expert.pool import ExpertPool
    from pet.serve.augmenter import Augmenter
    from pet.serve.gateway import Gateway
    from pet.traditional.deployment import Traditional
    from pet.traditional.versions import pin_in_force

    cfg_dict = cfg.model_dump(mode="json")
    # The T version in force (pet traditional use) becomes part of T's and E's arguments only: switching versions
    # replaces their replicas in place, while the gateway (which reads the version in force for /v1/status) stays.
    tiers_dict = pin_in_force(cfg).model_dump(mode="json")
    log_cfg = logging_config(cfg)
    t = Traditional.options(**cfg.traditional.deployment.serve_options(), logging_config=log_cfg).bind(tiers_dict)
    e = ExpertPool.options(**cfg.expert.deployment.serve_options(), logging_config=log_cfg).bind(tiers_dict)
    aug = Augmenter.options(**cfg.serve.augmenter.serve_options(), logging_config=log_cfg).bind(cfg_dict, t)
    gw_opts = cfg.serve.gateway.deployment.serve_options()
    return Gateway.options(**gw_opts, logging_config=log_cfg).bind(cfg_dict, t, e, aug)


def _load(args: dict[str, Any]) -> PetConfig:
    from pet.config.loader import load_config, parse_config

    if "pet_config" in args:
        return parse_config(args["pet_config"], "<serve args: pet_config>")
    if "config" in args:
        return load_config(args["config"])
    return load_config(None)


def app_builder(args: dict[str, Any]) -> Any:
    """Application builder for ``serve run pet.serve.app:app_builder config=FILE`` and serve configs.

    ``args``: ``{"config": path}`` (a pet YAML file) or ``{"pet_config": {...}}`` (the mapping inline);
    no args means ``deployments/default.yaml``.
    """
    unknown = set(args or {}) - {"config", "pet_config"}
    if unknown:
        raise ValueError(f"unknown app_builder args: {', '.join(sorted(unknown))} (expected config or pet_config)")
    return build_app(_load(dict(args or {})))


def serve_config(cfg: PetConfig, config_path: str | Path | None = None, inline: bool = False) -> dict[str, Any]:
    """A Serve config file (``ServeDeploySchema``) that deploys this graph with ``serve deploy``/``serve run``."""
    if inline or config_path is None:
        args: dict[str, Any] = {"pet_config": cfg.model_dump(mode="json")}
    else:
        args = {"config": str(Path(config_path).resolve())}
    return {
        "proxy_location": cfg.serve.proxy_location.value,
        "http_options": {"host": cfg.serve.http.host, "port": cfg.serve.http.port},
        "logging_config": logging_config(cfg),
        "applications": [{
            "name": cfg.serve.app_name,
            "route_prefix": cfg.serve.route_prefix,
            "import_path": "pet.serve.app:app_builder",
            "args": args,
            "logging_config": logging_config(cfg),
        }],
    }


def validate_serve_config(data: dict[str, Any]) -> Any:
    """Check a Serve config with Ray's own schema; returns the parsed ``ServeDeploySchema``."""
    from ray.serve.schema import ServeDeploySchema

    return ServeDeploySchema.model_validate(data) if hasattr(ServeDeploySchema, "model_validate") \
        else ServeDeploySchema.parse_obj(data)
