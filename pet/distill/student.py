"""Teacher loading and student construction for distillation.

The student has the teacher's architecture and tokenizer with only K of its decoder layers, initialised
from evenly spaced teacher layers (always the first and the last), plus the teacher's embeddings, final
norm and head. ``expert:NAME`` teachers are the shared base with that domain's LoRA adapter merged in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pet.paths import resolve_model, set_offline


def layer_map(teacher_layers: int, k: int) -> list[int]:
    """Indices of the ``k`` evenly spaced teacher layers the student starts from (first and last included)."""
    if not 1 <= k <= teacher_layers:
        raise ValueError(f"student layers must be between 1 and {teacher_layers}, got {k}")
    if k == 1:
        return [teacher_layers - 1]
    return sorted({round(i * (teacher_layers - 1) / (k - 1)) for i in range(k)})


def load_teacher(ref: str, cfg: Any | None = None, threads: int | None = None) -> tuple[Any, Any, str]:
    """Load a teacher: ``t`` (the T model), ``expert:NAME`` (base + merged adapter) or a model folder.

    Returns (model in eval mode without gradients, tokenizer, source folder whose tokenizer files the student copies).
    """
    set_offline()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pet.config.schema import PetConfig

    cfg = cfg or PetConfig()
    if threads:
        torch.set_num_threads(threads)
    adapter: Path | None = None
    if ref == "t":
        folder = resolve_model(cfg.traditional.model, cfg.models_dir)
    elif ref.startswith("expert:"):
        from pet.experts.registry import ExpertRegistry

        name = ref.split(":", 1)[1]
        reg = ExpertRegistry.from_config(cfg)
        adapter = reg.adapter_dir(name, verify=True)  # UnknownDomainError / CorruptAdapterError name the problem
        folder = resolve_model(cfg.expert.base_model, cfg.models_dir)
    else:
        folder = Path(ref)
    if not (Path(folder) / "config.json").is_file():
        raise FileNotFoundError(f"teacher {ref!r}: {folder} is not a model folder (run: pet models prepare)")
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    for p in model.parameters():  # a teacher only ever scores
        p.requires_grad_(False)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model.eval(), tok, str(folder)


def build_student(teacher: Any, k: int) -> tuple[Any, list[int]]:
    """A K-layer copy of ``teacher`` initialised from evenly spaced layers; returns (student, kept indices)."""
    import copy

    from transformers import AutoModelForCausalLM

    keep = layer_map(teacher.config.num_hidden_layers, k)
    cfg = copy.deepcopy(teacher.config)
    cfg.num_hidden_layers = len(keep)
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = [teacher.config.layer_types[i] for i in keep]
    student = AutoModelForCausalLM.from_config(cfg)
    src = teacher.state_dict()
    state = {}
    for key, value in src.items():
        if key.startswith("model.layers."):
            idx, rest = key[len("model.layers."):].split(".", 1)
            if int(idx) not in keep:
                continue
            key = f"model.layers.{keep.index(int(idx))}.{rest}"
        state[key] = value.detach().clone()
    missing, unexpected = student.load_state_dict(state, strict=False)
    # Tied heads appear as "missing" lm_head.weight; anything else means the architectures disagree.
    missing = [m for m in missing if not (m == "lm_head.weight" and cfg.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"student init mismatch: missing {missing[:4]}, unexpected {unexpected[:4]}")
    student.generation_config = copy.deepcopy(teacher.generation_config)
    return student, keep


def count_params(model: Any) -> int:
    """Parameters of a torch model, tied weights counted once."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total
