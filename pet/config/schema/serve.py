"""Config sections of the Ray Serve side: deployment options (passed to Serve unchanged), HTTP and the gateway."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import Field, field_validator, model_validator

from pet.config.schema.base import StrictModel


class RayActorOptions(StrictModel):
    """Resources one replica reserves. Small defaults so the whole graph fits on 2 CPUs."""

    num_cpus: float = Field(0.1, ge=0, description="CPUs reserved per replica (Ray's default of 1 starves 2 cores)")
    memory: int | None = Field(None, gt=0, description="bytes of memory reserved per replica")
    resources: dict[str, float] | None = Field(
        None, description="custom Ray resources per replica, e.g. {node_w1: 0.1}: a replica only runs on a node that "
                          "offers them (`ray start --resources`), which pins a deployment to chosen nodes")
    runtime_env: dict[str, Any] | None = Field(None, description="Ray runtime_env for the replica")

    @field_validator("resources")
    @classmethod
    def _custom(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        for name, amount in (v or {}).items():
            if name in ("CPU", "GPU", "memory", "object_store_memory"):
                raise ValueError(f"{name!r} is not a custom resource: use num_cpus / memory")
            if not amount > 0:
                raise ValueError(f"resource {name!r} must be > 0 (got {amount})")
        return v


class AutoscalingConfig(StrictModel):
    """Serve autoscaling; mirrors the keys of ray.serve.config.AutoscalingConfig that users set most."""

    min_replicas: int = Field(1, ge=0, description="lower bound on replicas")
    max_replicas: int = Field(1, ge=1, description="upper bound on replicas")
    initial_replicas: int | None = Field(None, ge=0, description="replicas at start")
    target_ongoing_requests: float = Field(2.0, gt=0, description="ongoing requests per replica to aim for")
    upscale_delay_s: float = Field(30.0, ge=0, description="seconds of over-target load before scaling up")
    downscale_delay_s: float = Field(600.0, ge=0, description="seconds of under-target load before scaling down")

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.max_replicas < self.min_replicas:
            raise ValueError("max_replicas must be >= min_replicas")
        return self


class DeploymentOptions(StrictModel):
    """Options of one Serve deployment; given to ``.options()`` as they are."""

    num_replicas: int = Field(1, ge=1, description="fixed replica count (ignored when autoscaling_config is set)")
    autoscaling_config: AutoscalingConfig | None = Field(None, description="autoscale instead of a fixed count")
    max_ongoing_requests: int = Field(16, ge=1, description="requests a replica handles at once")
    max_queued_requests: int = Field(64, ge=-1, description="requests queued per caller before 503 (-1: no limit)")
    max_replicas_per_node: int | None = Field(
        None, ge=1, description="at most this many replicas of the deployment on one Ray node (1 puts each replica "
                                "on its own node, so losing a node loses one replica)")
    health_check_period_s: float = Field(10.0, gt=0, description="seconds between health checks")
    health_check_timeout_s: float = Field(30.0, gt=0, description="seconds before a health check fails")
    graceful_shutdown_timeout_s: float = Field(5.0, ge=0, description="seconds to drain on shutdown")
    ray_actor_options: RayActorOptions = Field(default_factory=RayActorOptions)

    def serve_options(self) -> dict[str, Any]:
        """The keyword arguments for ``Deployment.options``."""
        out = self.model_dump(exclude_none=True)
        out["ray_actor_options"] = self.ray_actor_options.model_dump(exclude_none=True)
        if self.autoscaling_config is not None:
            out.pop("num_replicas")
        return out


class BatchingConfig(StrictModel):
    """Dynamic batching with ``@serve.batch``."""

    enabled: bool = Field(True, description="batch concurrent requests into one forward pass")
    max_batch_size: int = Field(8, ge=1, le=256, description="largest batch")
    batch_wait_timeout_s: float = Field(0.01, ge=0, le=10, description="longest wait to fill a batch")


class HttpOptions(StrictModel):
    """Where Serve's HTTP proxy listens."""

    host: str = Field("127.0.0.1", description="bind address (loopback by default)")
    port: int = Field(8000, ge=1, le=65535, description="TCP port")
    direct_port: int | None = Field(
        8100, ge=1024, le=65000,
        description="also serve HTTP straight from each Gateway replica (Serve's direct ingress) on the first free "
                    "port of direct_port..direct_port+63: skips the proxy actor and the request-body round trip "
                    "(benchmarks/serve_overhead.py); None: the proxy only. Needs a Ray that pet deploy starts, or a "
                    "cluster started with the environment `pet build` prints")


class GatewayDeploymentOptions(DeploymentOptions):
    """The Gateway's Serve options: an asyncio ingress, so many cheap slots; real work is bounded by
    ``max_inflight`` (the gateway's own admission), not by Serve."""

    max_ongoing_requests: int = Field(256, ge=1, description="requests a replica handles at once")
    max_queued_requests: int = Field(256, ge=-1, description="requests queued per caller before 503 (-1: no limit)")


class GatewayConfig(StrictModel):
    """The ingress deployment."""

    max_prompt_chars: int = Field(8000, ge=1, description="longer prompts are refused with 413")
    request_timeout_s: float = Field(120.0, gt=0, description="whole-request deadline")
    access_log: bool = Field(False, description="Serve access logs (off: they cost latency and name routes)")
    max_inflight: int = Field(
        64, ge=1, description="requests the gateway answers at once (generate, chat, augment); more get a JSON 503 "
                              "with Retry-After before any tier's queue is touched")
    retry_after_s: int = Field(1, ge=1, le=3600, description="Retry-After seconds on 503 answers")
    body_timeout_s: float = Field(
        10.0, gt=0, le=600, description="deadline for a client to send the whole body once its headers arrived; "
                                        "then 408 (checked before Serve admits the request, so stalled uploads "
                                        "hold no replica slot)")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="larger bodies are refused with 413")
    max_header_bytes: int = Field(16384, ge=1024, description="larger request headers are refused with 431")
    json_max_depth: int = Field(32, ge=2, le=500, description="deeper JSON nesting is refused with 400")
    json_max_items: int = Field(10000, ge=10, description="JSON bodies with more values in all are refused with 400")
    json_max_number_chars: int = Field(32, ge=8, le=4000, description="longer JSON numbers are refused with 400")
    replica_retries: int = Field(1, ge=0, le=3, description="retries of a T call whose replica died in flight "
                                                            "(generation is idempotent per request id)")
    deployment: GatewayDeploymentOptions = Field(
        default_factory=lambda: GatewayDeploymentOptions(),
        description="Serve options of the Gateway; max_ongoing_requests must exceed max_inflight so health, "
                    "keys and status keep answering at capacity")

    @model_validator(mode="after")
    def _room(self) -> GatewayConfig:
        if self.deployment.max_ongoing_requests <= self.max_inflight:
            raise ValueError(f"deployment.max_ongoing_requests ({self.deployment.max_ongoing_requests}) must be "
                             f"greater than max_inflight ({self.max_inflight}): the gateway's own JSON 503 must "
                             "trip before Serve's plain-text backpressure")
        if self.max_body_bytes < self.max_prompt_chars * 8:
            raise ValueError(f"max_body_bytes ({self.max_body_bytes}) must be at least 8 x max_prompt_chars "
                             f"({self.max_prompt_chars * 8}): a prompt of the allowed length must fit once encrypted")
        return self


class ProxyLocation(StrEnum):
    """Where Serve runs its HTTP proxies (Ray's ``ProxyLocation``)."""

    head_only = "HeadOnly"
    every_node = "EveryNode"
    disabled = "Disabled"


class ServeConfig(StrictModel):
    """The Ray Serve application."""

    app_name: str = Field("pet", description="Serve application name")
    route_prefix: str = Field("/", description="HTTP route prefix")
    http: HttpOptions = Field(default_factory=HttpOptions)
    proxy_location: ProxyLocation = Field(
        ProxyLocation.head_only,
        description="where Serve's HTTP proxies run on a cluster: HeadOnly (one address for clients; also what "
                    "several nodes on one host need, as every proxy binds serve.http.port), EveryNode (a proxy on "
                    "each node with a replica, behind a load balancer), Disabled (handles only)")
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    augmenter: DeploymentOptions = Field(default_factory=DeploymentOptions,
                                         description="options of the Augmenter deployment (when installed)")
    ray_num_cpus: int | None = Field(None, ge=1, description="CPUs for a local Ray instance (None: all)")
    throughput_optimized: bool = Field(
        False, description="Ray's RAY_SERVE_THROUGHPUT_OPTIMIZED switch for a local Ray (direct ingress, user code "
                           "on each replica's main loop, gRPC between deployments)")

    @field_validator("route_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("route_prefix must start with '/'")
        return v

    @field_validator("app_name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", v):
            raise ValueError("app_name must be 1-64 letters, digits, '_' or '-'")
        return v
