"""Shared fixtures: tiny random Llama-architecture models and tokenizers built once per session (no
downloads), and the path to the real prepared models for tests marked ``real``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# The two-node cluster tests start Ray nodes of their own: they run only when named (`pytest tests/cluster`, which
# `make test` does in a second session after the main suite), never inside the session that starts a local Ray.
collect_ignore = ["cluster"]

TINY_CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome.",
    "def add(a, b): return a + b  # python functions return values",
    "Stocks and bonds are financial assets; interest rates move bond prices.",
    "I love hiking on weekends with my dog, and then we eat pizza.",
    "Hello! How are you today? I am fine, thank you very much.",
    "import os, sys; print(sys.argv) lists the command line arguments.",
]

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_tokenizer():
    """A byte-level BPE tokenizer (~300 tokens) with SmolLM2-like special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(TINY_CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>",
        unk_token="<|endoftext|>", model_input_names=["input_ids", "attention_mask"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_llama(folder: Path, layers: int = 4, hidden: int = 32, seed: int = 0) -> Path:
    """Save a random tiny LlamaForCausalLM + tokenizer to ``folder`` and return it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tiny_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory) -> Path:
    """Folder of a tiny random Llama (4 layers, hidden 32) with tokenizer and chat template."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama") / "model")


@pytest.fixture(scope="session")
def tiny_lm(tiny_lm_dir):
    """A loaded :class:`pet.models.lm.CausalLM` over the tiny model."""
    from pet.models.lm import CausalLM

    return CausalLM.load(tiny_lm_dir, threads=1)


@pytest.fixture(scope="session")
def real_lm_dir() -> Path:
    """Folder of the prepared real SmolLM2-135M-Instruct; prepared on first use if missing."""
    from pet.models.prepare import builtin_path, prepare_models

    try:
        return builtin_path("smollm2-135m-instruct")
    except FileNotFoundError:
        prepare_models(log=lambda m: None)
        return builtin_path("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def real_lm(real_lm_dir):
    """The real SmolLM2 loaded once per session."""
    from pet.models.lm import CausalLM

    return CausalLM.load(real_lm_dir, threads=1)
