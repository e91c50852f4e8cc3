"""What ``GET /v1/status`` and ``GET /v1/experts`` report (and ``pet status`` prints), apart from building the app.

- :func:`app_status`: Serve's view of one application (deployment states, replica counts); needs Ray.
- :func:`experts_info`: the registered expert domains and the adapters loaded on an expert replica.
- :func:`traditional_info`: the T version in force, and the model a T replica has loaded.
- The router in force comes from :func:`pet.router.defaults.router_in_force`.
"""

from __future__ import annotations

import asyncio
from typing import Any


def app_status(app_name: str) -> dict[str, Any]:
    """Serve's status of one application: deployments with state and replica counts (needs a Ray connection)."""
    from ray import serve

    st = serve.status()
    app = st.applications.get(app_name)
    if app is None:
        return {"app": app_name, "status": "NOT_FOUND", "deployments": {}}
    deps = {}
    for name, d in app.deployments.items():
        deps[name] = {"status": str(getattr(d.status, "value", d.status)),
                      "replicas": {str(getattr(k, "value", k)): v for k, v in d.replica_states.items()},
                      "message": d.message}
    return {"app": app_name, "status": str(getattr(app.status, "value", app.status)), "deployments": deps}


async def experts_info(registry: Any, domains: list[str], experts: Any) -> dict[str, Any]:
    """Registered ``domains`` (name, base model, created, metrics) and the adapters loaded on the expert replica
    that answers ``experts.stats`` (a DeploymentHandle of the ExpertPool)."""
    out = []
    for name in domains:
        try:
            rec = registry.get(name)
            out.append({"name": name, "base_model": rec.base_model, "created": rec.created,
                        "exemplars": rec.exemplar_count, "metrics": rec.metrics})
        except Exception:  # removed or broken between listing and reading
            out.append({"name": name, "error": "unreadable"})
    loaded: dict[str, Any] = {}
    try:
        stats = await asyncio.wait_for(experts.stats.remote(), timeout=2.0)
        loaded[stats["replica"]] = stats["loaded_adapters"]
    except Exception:  # no replica answers right now: report what is registered
        pass
    return {"experts": out, "loaded_adapters": loaded}


async def traditional_info(cfg: Any, traditional: Any) -> dict[str, Any]:
    """The T version in force (:func:`pet.traditional.versions.describe`) and the model the T replica that
    answers ``traditional.stats`` has loaded (during a rolling switch the two may differ for a moment)."""
    from pet.traditional.versions import VersionError, describe

    try:
        out = await asyncio.to_thread(describe, cfg)
    except (VersionError, OSError, ValueError) as err:
        out = {"model": cfg.traditional.model, "error": str(err)}
    try:
        stats = await asyncio.wait_for(traditional.stats.remote(), timeout=2.0)
        out["replica_model"] = stats.get("model")
    except Exception:  # no replica answers right now: report what is configured
        out["replica_model"] = None
    return out
