"""Config sections of the P tier's lifecycle: personalisation (augmentation, device LoRA) and distillation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pet.config.schema.base import LLAMA_PROJECTIONS, ModelRef, StrictModel


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


class PersonalGenerationConfig(StrictModel):
    """How the personalised P writes a user's next message when it is evaluated (greedy unless ``do_sample``).

    Generation stops at the end of the chat turn (``<|im_end|>``) and keeps the first line.
    """

    max_new_tokens: int = Field(24, ge=1, le=512, description="tokens P may write for one message")
    min_new_tokens: int = Field(0, ge=0, le=64, description="tokens P must write before it may end the turn")
    repetition_penalty: float = Field(
        1.0, ge=1, le=5, description="transformers repetition penalty (1: off); it also penalises prompt tokens")
    no_repeat_ngram_size: int = Field(0, ge=0, le=16, description="no token n-gram of this size twice (0: off)")
    do_sample: bool = Field(False, description="sample instead of greedy decoding")
    temperature: float = Field(0.7, gt=0, le=5, description="sampling temperature (with do_sample)")
    top_p: float = Field(0.9, gt=0, le=1, description="nucleus mass (with do_sample)")
    seed: int = Field(0, description="sampling seed (with do_sample)")

    @model_validator(mode="after")
    def _bounds(self) -> PersonalGenerationConfig:
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError("min_new_tokens must be <= max_new_tokens")
        return self


class PersonalizationConfig(StrictModel):
    """Per-user personalisation: encrypted store, share selection, cloud augmentation, device LoRA."""

    base_model: ModelRef = Field(
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
        default_factory=lambda: list(LLAMA_PROJECTIONS),
        min_length=1, description="module names that get LoRA",
    )
    steps: int = Field(
        12, ge=1, le=100000,
        description="optimizer steps (issue 29: more training lowers perplexity but shortens messages and ROUGE-L)")
    batch_size: int = Field(8, ge=1, le=512, description="examples per step")
    learning_rate: float = Field(2e-3, gt=0, le=1, description="AdamW learning rate")
    max_seq_len: int = Field(96, ge=8, le=4096, description="tokens per training example (longer are truncated)")
    context_turns: int = Field(3, ge=0, le=64, description="previous conversation turns kept as context")
    generation: PersonalGenerationConfig = Field(
        default_factory=PersonalGenerationConfig, description="decoding of the personalised P's messages")
    export_quantize: Literal["none", "int8", "int4"] = Field("int8", description="quantisation of the exported bundle")
    torch_threads: int = Field(1, ge=1, le=64, description="torch threads for device-side training")
    seed: int = Field(0, description="seed for share selection, prompts and training")


class DistillConfig(StrictModel):
    """One distillation of a K-layer student (``pet distill``; defaults: a clear win over the truncated init in
    about 15 minutes on 2 cores). Not part of a deployment file: the command's flags fill it."""

    student_layers: int = Field(10, ge=1, le=256, description="decoder layers the student keeps")
    steps: int = Field(150, ge=1, le=1_000_000, description="optimizer steps in all (a rerun continues)")
    batch_size: int = Field(4, ge=1, le=512, description="token windows per step")
    seq_len: int = Field(128, ge=8, le=8192, description="tokens per window")
    lr: float = Field(3e-4, gt=0, le=1, description="peak AdamW learning rate (cosine decay to 10% after warm-up)")
    warmup: int = Field(10, ge=0, description="linear warm-up steps")
    temperature: float = Field(2.0, gt=0, le=100, description="softmax temperature of the KL term")
    alpha: float = Field(0.8, ge=0, le=1, description="weight of the KL term; 1 - alpha weighs next-token CE")
    teacher_samples: int = Field(48, ge=0, description="chat prompts the teacher answers for the mix")
    teacher_new_tokens: int = Field(64, ge=1, le=4096, description="tokens per teacher answer")
    teacher_share: float = Field(0.25, ge=0, le=1, description="share of windows drawn from the teacher's answers")
    checkpoint_every: int = Field(25, ge=1, description="steps between checkpoints")
    eval_texts: int = Field(24, ge=1, description="held-out texts for perplexity")
    seed: int = Field(0, description="seed of the prompts, windows and student init")
    threads: int = Field(2, ge=1, le=256, description="torch threads")
    max_minutes: float | None = Field(
        None, gt=0, description="stop training (with a checkpoint) after this long; a rerun continues")
    max_steps_this_run: int | None = Field(
        None, ge=1, description="stop training (with a checkpoint) after this many steps of this run")
    domain_teacher: str | None = Field(
        None, description="registered expert whose own data windows it teaches (expert:NAME)")
    domain_share: float = Field(
        0.0, ge=0, lt=1, description="share of training windows drawn from the domain teacher's data, scored by it")
    layer_selection: Literal["even", "block"] = Field(
        "even", description="which teacher layers the student starts from (pet.personal.distill.student)")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="CPU autocast of the forward passes; weights and optimizer stay fp32")
