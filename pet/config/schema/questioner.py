"""Config of questioner-aware cloud answers: what the device may share, how E and T use it, how the encoder trains.

The device sends a profile only when ``questioner.share`` is on (or ``pet chat --share-profile``); the gateway
validates every profile against the caps here before any tier sees it. See docs/questioner.md.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from pet.config.schema.base import StrictModel


class ConditioningMode(StrEnum):
    """How E and T use a profile: exemplars in the prompt, soft prompts from the trained encoder, or not at all."""

    in_context = "in_context"
    learned = "learned"
    off = "off"


class QuestionerTrainConfig(StrictModel):
    """`pet questioner train`: the soft-prompt encoder over a frozen T, on chitchat-dataset questioners."""

    questioners: int = Field(160, ge=4, le=2000, description="training questioners (held-out ones are never used)")
    heldout: int = Field(40, ge=0, le=1000, description="questioners kept out of training for the benchmark")
    min_conversations: int = Field(8, ge=2, description="a questioner needs this many conversations")
    profile_messages: int = Field(48, ge=1, description="most recent history messages a training profile averages")
    per_questioner: int = Field(20, ge=1, description="dialogues taken from each training questioner")
    context_turns: int = Field(0, ge=0, le=16, description="earlier turns kept before the question")
    steps: int = Field(50, ge=1, le=100000, description="optimizer steps")
    batch_size: int = Field(6, ge=1, le=256, description="dialogues per language-model step")
    contrastive_batch: int = Field(48, ge=2, le=4096, description="dialogues per contrastive step (no T pass)")
    contrastive_weight: float = Field(0.5, ge=0, description="weight of the questioner-contrastive term")
    temperature: float = Field(0.1, gt=0, le=10, description="InfoNCE temperature")
    clusters: int = Field(16, ge=1, le=1024, description="k-means clusters of questions; a batch comes from one")
    hidden: int = Field(256, ge=8, le=4096, description="width of the encoder's towers")
    lr: float = Field(1e-3, gt=0, le=1, description="AdamW learning rate")
    max_prompt_tokens: int = Field(48, ge=8, le=1024, description="query (with context) tokens kept, from the end")
    max_reply_tokens: int = Field(24, ge=4, le=1024, description="reply tokens scored")
    seed: int = Field(0, description="split, sampling and init seed")


class QuestionerConfig(StrictModel):
    """Questioner profiles: made on the device from the encrypted store, used by E and T when present."""

    share: bool = Field(False, description="the device attaches a profile to escalated requests (opt-in)")
    exemplars: int = Field(3, ge=0, le=8, description="the user's own messages nearest the query sent as exemplars")
    max_exemplar_chars: int = Field(280, ge=16, le=2000, description="an exemplar is cut to this many characters")
    max_profile_messages: int = Field(400, ge=1, description="most recent store messages the embedding averages")
    embedding_dim: int = Field(384, ge=8, le=4096, description="dimensions of the profile embedding (MiniLM: 384)")
    max_profile_bytes: int = Field(16384, ge=256, le=1 << 20,
                                   description="a profile's JSON may be at most this large (gateway refuses more)")
    mode: ConditioningMode = Field(ConditioningMode.in_context, description="how E and T use a profile")
    encoder: str | None = Field(None, description="encoder folder (learned mode): a path or a name under "
                                                  "<models_dir>/questioner")
    encoder_fingerprint: str | None = Field(None, pattern="^[0-9a-f]{64}$",
                                            description="when set, the encoder's fingerprint must equal it")
    soft_tokens: int = Field(4, ge=1, le=64, description="soft-prompt vectors the encoder makes")
    train: QuestionerTrainConfig = Field(default_factory=QuestionerTrainConfig)
