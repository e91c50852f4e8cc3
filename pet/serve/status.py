"""What ``GET /v1/status`` and ``GET /v1/experts`` report (and ``pet status`` prints), apart from building the app.

- :func:`app_status`: Serve's view of one application (deployment states, replica counts, and where each replica
  runs: :func:`replica_placement`); needs Ray. :func:`placement_lines` prints the placement for ``pet status``.
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
    try:
        placement = replica_placement(app_name)
    except Exception:  # placement is extra detail: a Serve or Ray that cannot say where replicas run still has states
        placement = {}
    deps = {}
    for name, d in app.deployments.items():
        deps[name] = {"status": _value(d.status),
                      "replicas": {_value(k): v for k, v in d.replica_states.items()},
                      "message": d.message, "placement": placement.get(name, [])}
    return {"app": app_name, "status": _value(app.status), "deployments": deps}


def _value(x: Any) -> str:
    return str(getattr(x, "value", x))


# Resources every Ray node has; the rest (``ray start --resources``) are what a deployment can be pinned with.
_BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


def replica_placement(app_name: str) -> dict[str, list[dict[str, Any]]]:
    """Where each replica of ``app_name`` runs, per deployment (needs a Ray connection with Serve running).

    Serve's controller knows each replica's node (the same details ``serve status`` and the dashboard read);
    ``ray.nodes()`` adds each node's custom resources, the names a YAML ``ray_actor_options.resources`` pins to.
    """
    import ray
    from ray.serve.context import _get_global_client  # what serve.status() itself reads; no public per-replica API

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        return {}
    return placement_from_details(client.get_serve_details(), ray.nodes(), app_name)


def placement_from_details(details: dict[str, Any], nodes: list[dict[str, Any]],
                           app_name: str) -> dict[str, list[dict[str, Any]]]:
    """Per deployment of ``app_name``, its replicas' ``{replica, state, node_id, node_ip, head, node_resources}``
    from Serve's instance details (``ServeInstanceDetails`` as a dict) and ``ray.nodes()``."""
    by_id = {n.get("NodeID"): n for n in nodes}
    app = (details.get("applications") or {}).get(app_name) or {}
    out: dict[str, list[dict[str, Any]]] = {}
    for name, dep in (app.get("deployments") or {}).items():
        rows = []
        for r in dep.get("replicas") or []:
            node = by_id.get(r.get("node_id")) or {}
            res = node.get("Resources") or {}
            # The address the node was started with (--node-ip-address); a replica's own guess may be another one.
            ip = node.get("NodeManagerAddress") or r.get("node_ip")
            rows.append({"replica": r.get("replica_id"), "state": _value(r.get("state")),
                         "node_id": r.get("node_id"), "node_ip": ip,
                         "head": "node:__internal_head__" in res,
                         "node_resources": {k: v for k, v in sorted(res.items()) if k not in _BUILTIN_RESOURCES
                                            and not k.startswith(("node:", "accelerator_type:"))}})
        out[name] = sorted(rows, key=lambda row: (row["node_ip"] or "", row["node_id"] or "", row["replica"] or ""))
    return out


def placement_lines(placement: list[dict[str, Any]]) -> list[str]:
    """One line per replica, as ``pet status`` prints it: ``<replica> <STATE> on <ip> node <id8> [head] {res}``."""
    lines = []
    for p in placement:
        node = (p.get("node_id") or "?")[:8]
        res = ", ".join(f"{k}={v:g}" for k, v in p.get("node_resources", {}).items())
        head = " head" if p.get("head") else ""
        lines.append(f"{p.get('replica') or '?'} {p.get('state')} on {p.get('node_ip') or '?'} node {node}{head}"
                     + (f" ({res})" if res else ""))
    return lines


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
