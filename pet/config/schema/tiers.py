"""Config sections of the tiers (T, E, P), the embedder, the router, encryption and the ledger."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field, model_validator

from pet.config.schema.base import LLAMA_PROJECTIONS, EmbedderRef, StrictModel, TModelRef
from pet.config.schema.serve import BatchingConfig, DeploymentOptions


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


class MergeMethod(StrEnum):
    """How ``pet traditional upgrade`` combines expert adapters (peft's ``add_weighted_adapter`` combinations)."""

    linear = "linear"
    ties = "ties"
    dare_ties = "dare_ties"
    svd = "svd"


class TraditionalUpgradeConfig(StrictModel):
    """How ``pet traditional upgrade`` merges expert adapters into a new T version and when it accepts one."""

    method: MergeMethod = Field(MergeMethod.ties, description="default combination of the expert adapters")
    density: float = Field(0.5, gt=0, le=1, description="share of adapter weights kept by ties and dare_ties")
    max_general_loss: float = Field(
        0.02, ge=0, lt=1, description="largest relative perplexity increase on general held-out text the merged "
                                      "T may show (0.02: 2 %) before the upgrade is refused")
    min_domain_gain: float = Field(
        0.0, ge=0, lt=1, description="relative perplexity reduction on each merged domain's held-out text the "
                                     "merged T must exceed")
    eval_samples: int = Field(32, ge=1, le=10_000, description="held-out texts scored per domain and general set")
    max_seq_len: int = Field(256, ge=16, le=8192, description="tokens per scored held-out text")
    general_data: str | None = Field(
        None, description="general held-out text (.txt or .jsonl, like expert data); default: the general "
                          "question/answer pairs of the checkout's benchmarks/data/general_qa.jsonl")


class TraditionalConfig(StrictModel):
    """T: the general cloud model."""

    model: TModelRef = Field(
        "smollm2-135m-instruct", description="builtin model name, local HF folder, or a T version written by "
                                             "`pet traditional upgrade` (NAME-vN, under <models_dir>/traditional)")
    torch_threads: int = Field(1, ge=1, le=64, description="torch threads per replica")
    generation: GenerationDefaults = Field(default_factory=GenerationDefaults)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    deployment: DeploymentOptions = Field(default_factory=DeploymentOptions)
    upgrade: TraditionalUpgradeConfig = Field(default_factory=TraditionalUpgradeConfig)


class ExpertTrainingConfig(StrictModel):
    """How ``pet expert register`` trains, evaluates and accepts a domain's LoRA adapter."""

    lora_rank: int = Field(8, ge=1, le=256, description="LoRA rank r")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA scaling alpha (scale = alpha / r)")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA input")
    lora_target_modules: list[str] = Field(
        default_factory=lambda: list(LLAMA_PROJECTIONS),
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

    base_model: TModelRef = Field(
        "smollm2-135m-instruct", description="builtin model name, local HF folder or T version; when it equals "
                                             "traditional.model, E follows the T version in force")
    registry_dir: str | None = Field(None, description="expert registry folder (default: <models_dir>/experts)")
    max_adapters_per_replica: int = Field(4, ge=1, le=256, description="LRU size of @serve.multiplexed")
    timeout_s: float = Field(30.0, gt=0, description="gateway waits this long for an expert before falling back to T")
    torch_threads: int = Field(1, ge=1, le=64, description="torch threads per replica")
    generation: GenerationDefaults = Field(default_factory=GenerationDefaults)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    deployment: DeploymentOptions = Field(default_factory=DeploymentOptions)
    training: ExpertTrainingConfig = Field(default_factory=ExpertTrainingConfig)
    data: ExpertDataConfig = Field(default_factory=ExpertDataConfig)


class PersonalConfig(StrictModel):
    """P: the on-device model, run by onnxruntime from a bundle."""

    bundle: str | None = Field(
        "default", description="device bundle folder, or 'default': the signed int8 export of T's model under "
                               "<models_dir>/bundles, built on first use (pet demo, make bundle); None: no P")
    num_threads: int = Field(1, ge=1, le=64, description="onnxruntime intra-op threads on the device")
    generation: GenerationDefaults = Field(default_factory=GenerationDefaults)


class EmbeddingConfig(StrictModel):
    """The sentence-embedding model used for domain routing and data filtering."""

    model: EmbedderRef = Field("all-minilm-l6-v2", description="builtin embedder name or local folder")


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
