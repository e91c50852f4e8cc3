"""Logit distillation of a K-layer student (``pet distill``).

    report = distill("t", "models/students/p10", DistillConfig(student_layers=10, steps=150))

Loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, next token), on random windows of
a token stream mixing real text (stdlib docs, chitchat conversations) with answers the teacher generated
to chat prompts. With a domain teacher (``domain_texts`` + ``DistillConfig.domain_teacher``), a share of the
windows comes from a registered expert's own data instead, and the expert (base + merged adapter) supplies
their target logits: P is distilled from T and E, so the expert's domain knowledge reaches the device.

Checkpoints (student weights, optimizer, step, RNG) are written atomically every
``checkpoint_every`` steps; running again with the same ``--out`` resumes. The finished student is a plain
Hugging Face folder ``OUT/model`` that ``pet export`` turns into a device bundle; ``OUT/report.json`` holds
held-out perplexity of teacher / truncated init / distilled student, sizes and speeds.

The run in steps: :func:`_start_or_resume` (student and state), :func:`_window_streams` (the token streams),
:func:`_train` (the loop, checkpoints), :func:`_save_student` and :func:`_report`.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from pet.config.schema.personal import DistillConfig
from pet.io import atomic_dir, atomic_write_json

PRECISIONS: tuple[str, ...] = get_args(DistillConfig.model_fields["precision"].annotation)
Log = Callable[[str], None]


def native_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX); elsewhere bf16 autocast is slow."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def _autocast(precision: str) -> Any:
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def _teacher_generations(model: Any, tok: Any, s: DistillConfig, cache: Path, log: Log) -> list[str]:
    """Templated prompt + teacher answer texts (cached in ``cache`` so a resumed run does not redo them)."""
    if cache.is_file():
        return json.loads(cache.read_text(encoding="utf-8"))
    from pet.models.lm import CausalLM
    from pet.personal.distill.data import PROMPTS, chitchat_texts

    rnd = random.Random(s.seed)
    openers = [t.split("\n")[0] for t in chitchat_texts(heldout=False, limit=400)]
    prompts = list(PROMPTS) + rnd.sample(openers, min(len(openers), max(0, s.teacher_samples - len(PROMPTS))))
    prompts = prompts[: s.teacher_samples]
    lm = CausalLM(model, tok, "teacher")
    out: list[str] = []
    for i in range(0, len(prompts), 8):
        batch = prompts[i:i + 8]
        gens = lm.generate_batch(batch, max_new_tokens=s.teacher_new_tokens, temperature=0.7, top_p=0.9,
                                 seed=s.seed + i)
        out.extend(lm.render(p) + g.text for p, g in zip(batch, gens, strict=True))
        log(f"teacher generations {len(out)}/{len(prompts)}")
    atomic_write_json(cache, out)
    return out


def _token_stream(tok: Any, texts: list[str]) -> list[int]:
    ids: list[int] = []
    sep = tok.eos_token_id if tok.eos_token_id is not None else 0
    for t in texts:
        ids.extend(tok(t, add_special_tokens=False)["input_ids"])
        ids.append(sep)
    return ids


def _teacher_logits(tmodel: Any, dmodel: Any | None, x: Any, by_domain: Any) -> Any:
    """Target logits per row: the domain teacher's for rows of its data, the main teacher's for the rest."""
    if dmodel is None or not bool(by_domain.any()):
        return tmodel(input_ids=x).logits
    if bool(by_domain.all()):
        return dmodel(input_ids=x).logits
    out = tmodel(input_ids=x[~by_domain]).logits
    logits = out.new_empty((x.shape[0], x.shape[1], out.shape[-1]))
    logits[~by_domain] = out
    logits[by_domain] = dmodel(input_ids=x[by_domain]).logits
    return logits


def _not_in(texts: list[str], corpus: list[str]) -> list[str]:
    """The ``texts`` none of whose paragraphs (80+ characters, whitespace-normalised) occurs in ``corpus``."""
    hay = " ".join(" ".join(c.split()) for c in corpus)
    out = []
    for t in texts:
        paras = [" ".join(p.split()) for p in t.split("\n\n")]
        if not any(len(p) >= 80 and p in hay for p in paras):
            out.append(t)
    return out


def _eval_ppl(model: Any, tok: Any, texts: list[str]) -> float:
    from pet.metrics import text_perplexity

    return text_perplexity(model, tok, texts, max_length=256, batch_size=8)


def _speed(model: Any, tok: Any, new_tokens: int = 32) -> float:
    """Greedy decode tokens/s of a torch model on one short chat prompt (PyTorch, current thread count)."""
    from pet.models.lm import CausalLM

    lm = CausalLM(model, tok, "m")
    lm.generate("Hello!", max_new_tokens=4)  # warm-up
    g = lm.generate("Tell me about the sea.", max_new_tokens=new_tokens)
    return g.usage.completion_tokens / max(g.usage.seconds, 1e-9)


# ----------------------------------------------------------------------------------------------------------------
# The steps of one run


@dataclass
class _Streams:
    """Token streams the training windows are cut from, and the domain teacher when there is one."""

    real: list[int]
    generated: list[int]
    domain: list[int] = field(default_factory=list)
    domain_texts: list[str] = field(default_factory=list)
    dmodel: Any = None


def _check(s: DistillConfig, domain_texts: list[Any] | None) -> None:
    """Refuse settings that cannot make a run (the schema checks each field; this checks them together)."""
    if s.domain_share > 0 and (not s.domain_teacher or not domain_texts):
        raise ValueError("a domain share needs a domain teacher and its data texts")


def _start_or_resume(tmodel: Any, tok: Any, teacher: str, s: DistillConfig, ckpt: Path, heldout: list[str],
                     probe_texts: list[str], log: Log) -> tuple[Any, dict[str, Any]]:
    """(student, run state): from ``ckpt`` when it holds a run with the same settings, else a fresh truncation."""
    import torch
    from transformers import AutoModelForCausalLM

    from pet.personal.distill.student import build_student, select_layers

    state_file = ckpt / "state.json"
    if not state_file.is_file():
        keep = select_layers(tmodel, tok, s.student_layers, s.layer_selection, texts=probe_texts)
        student, keep = build_student(tmodel, s.student_layers, keep)
        log(f"student: {len(keep)} of {tmodel.config.num_hidden_layers} teacher layers {keep} "
            f"({s.layer_selection} selection)")
        state = {"step": 0, "teacher": teacher, "layers_kept": keep, "settings": s.model_dump(), "losses": [],
                 "ppl_teacher": _eval_ppl(tmodel, tok, heldout), "ppl_init": _eval_ppl(student, tok, heldout)}
        log(f"held-out ppl: teacher {state['ppl_teacher']:.2f}, truncated init {state['ppl_init']:.2f}")
        return student, state
    state = json.loads(state_file.read_text(encoding="utf-8"))
    old = state["settings"]
    if (old["student_layers"] != s.student_layers or state["teacher"] != teacher
            or old.get("domain_teacher") != s.domain_teacher or old.get("domain_share", 0.0) != s.domain_share
            or old.get("layer_selection", "even") != s.layer_selection):
        raise ValueError(f"{ckpt} is from another run (teacher {state['teacher']}, "
                         f"{old['student_layers']} layers from {old.get('layer_selection', 'even')} selection, "
                         f"domain teacher {old.get('domain_teacher')} share {old.get('domain_share', 0.0)}); "
                         "use another --out, or resume with the same settings (--init, --domain-teacher)")
    student = AutoModelForCausalLM.from_pretrained(ckpt / "student", local_files_only=True, dtype=torch.float32)
    log(f"resuming from step {state['step']}")
    return student, state


def _window_streams(tmodel: Any, tok: Any, teacher: str, s: DistillConfig, cfg: Any, out: Path,
                    real_texts: list[str], domain_texts: list[Any] | None, log: Log) -> _Streams:
    """Real text, the teacher's answers and (with a domain share) the domain teacher's data, as token streams."""
    from pet.personal.distill.student import load_teacher

    gen_texts = _teacher_generations(tmodel, tok, s, out / "teacher_generations.json", log)
    streams = _Streams(_token_stream(tok, real_texts), _token_stream(tok, gen_texts))
    if s.domain_share > 0:
        dmodel, dtok, _ = load_teacher(s.domain_teacher, cfg)
        if dtok.get_vocab() != tok.get_vocab():
            raise ValueError(f"domain teacher {s.domain_teacher!r} has another tokenizer than teacher {teacher!r}")
        streams.dmodel = dmodel
        streams.domain_texts = [d if isinstance(d, str) else d.render(tok) for d in (domain_texts or [])]
        streams.domain = _token_stream(tok, streams.domain_texts)
        if len(streams.domain) <= s.seq_len + 1:
            raise ValueError(f"domain data of {s.domain_teacher!r} is shorter than one window ({s.seq_len} tokens)")
        log(f"domain teacher {s.domain_teacher}: {len(streams.domain)} tokens of its data, "
            f"{s.domain_share:.0%} of windows")
    return streams


def _draw_batch(s: DistillConfig, step: int, streams: _Streams) -> tuple[list[list[int]], list[bool]]:
    """The windows of one step and which of them are domain data; a per-step RNG, so a resumed run draws the
    same batches as a straight one."""
    rnd = random.Random(s.seed * 1_000_003 + step)
    gen_ok = len(streams.generated) > s.seq_len + 1
    rows, by_domain = [], []
    for _ in range(s.batch_size):
        dom = streams.dmodel is not None and rnd.random() < s.domain_share
        if dom:
            src = streams.domain
        else:
            src = streams.generated if (rnd.random() < s.teacher_share and gen_ok) else streams.real
        start = rnd.randrange(0, len(src) - s.seq_len - 1)
        rows.append(src[start:start + s.seq_len + 1])
        by_domain.append(dom)
    return rows, by_domain


def _lr_at(s: DistillConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 10% of ``lr`` at ``steps``."""
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    frac = (step - s.warmup) / max(1, s.steps - s.warmup)
    return s.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def _step_loss(s: DistillConfig, tmodel: Any, student: Any, streams: _Streams, step: int) -> tuple[Any, Any, Any]:
    """(loss, KL term, CE term) of one step's batch."""
    import torch
    import torch.nn.functional as F

    rows, by_domain = _draw_batch(s, step, streams)
    batch = torch.tensor(rows)
    x, y = batch[:, :-1], batch[:, 1:]
    with _autocast(s.precision):
        with torch.no_grad():
            t_logits = _teacher_logits(tmodel, streams.dmodel, x, torch.tensor(by_domain)).float()
        s_logits = student(input_ids=x).logits.float()
    T = s.temperature
    kl = F.kl_div(F.log_softmax(s_logits / T, -1).flatten(0, 1), F.log_softmax(t_logits / T, -1).flatten(0, 1),
                  log_target=True, reduction="batchmean") * T * T
    ce = F.cross_entropy(s_logits.flatten(0, 1), y.flatten())
    return s.alpha * kl + (1 - s.alpha) * ce, kl, ce


def _train(s: DistillConfig, tmodel: Any, student: Any, streams: _Streams, state: dict[str, Any], ckpt: Path,
           progress: bool, log: Log) -> float:
    """Train until ``steps`` or this run's budget, checkpointing on the way; seconds spent training."""
    import torch
    from tqdm import tqdm

    opt = torch.optim.AdamW(student.parameters(), lr=s.lr, weight_decay=0.0)
    if (ckpt / "optimizer.pt").is_file():
        opt.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))

    def save_checkpoint() -> None:
        with atomic_dir(ckpt, replace=True) as tmp:
            student.save_pretrained(tmp / "student", safe_serialization=True)
            torch.save(opt.state_dict(), tmp / "optimizer.pt")
            atomic_write_json(tmp / "state.json", state)

    student.train()
    t_train, first_step = time.perf_counter(), state["step"]
    bar = tqdm(total=s.steps, initial=state["step"], desc="distill", unit="step", disable=not progress,
               dynamic_ncols=True)
    while state["step"] < s.steps:
        step = state["step"]
        loss, kl, ce = _step_loss(s, tmodel, student, streams, step)
        for g in opt.param_groups:
            g["lr"] = _lr_at(s, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        state["step"] = step + 1
        kl_v, ce_v = kl.item(), ce.item()
        state["losses"].append([round(kl_v, 4), round(ce_v, 4)])
        bar.update(1)
        bar.set_postfix(kl=f"{kl_v:.3f}", ce=f"{ce_v:.3f}")
        if not progress and state["step"] % 10 == 0:
            log(f"step {state['step']}/{s.steps} kl {kl_v:.3f} ce {ce_v:.3f}")
        out_of_time = (s.max_minutes is not None and time.perf_counter() - t_train > 60 * s.max_minutes) or (
            s.max_steps_this_run is not None and state["step"] - first_step >= s.max_steps_this_run)
        if state["step"] % s.checkpoint_every == 0 or state["step"] == s.steps or out_of_time:
            save_checkpoint()
        if out_of_time:
            log(f"budget of this run reached at step {state['step']}/{s.steps}; run again to continue")
            break
    bar.close()
    student.eval()
    return time.perf_counter() - t_train


def _save_student(student: Any, tok: Any, src: str, out: Path) -> Path:
    """``OUT/model``: the student, its tokenizer and the teacher's chat template and generation config."""
    with atomic_dir(out / "model", replace=True) as tmp:
        student.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        for name in ("chat_template.jinja", "generation_config.json"):
            if (Path(src) / name).is_file():
                shutil.copy2(Path(src) / name, tmp / name)
    return out / "model"


def _report(teacher: str, s: DistillConfig, tmodel: Any, student: Any, tok: Any, state: dict[str, Any],
            heldout: list[str], clean: list[str], ppl_student: float, steps_this_run: int, train_seconds: float,
            domain_tokens: int) -> dict[str, Any]:
    """The numbers of ``report.json`` (perplexities, sizes, one-thread torch speeds, losses)."""
    from pet.personal.distill.student import count_params

    overlap = {}
    if len(clean) < len(heldout) and clean:
        overlap = {"ppl_teacher_clean": round(_eval_ppl(tmodel, tok, clean), 3),
                   "ppl_student_clean": round(_eval_ppl(student, tok, clean), 3)}
    return {
        "teacher": teacher,
        "domain_teacher": s.domain_teacher if s.domain_share > 0 else None,
        "domain_share": s.domain_share,
        "domain_tokens": domain_tokens,
        "student_layers": len(state["layers_kept"]),
        "teacher_layers": int(tmodel.config.num_hidden_layers),
        "layers_kept": state["layers_kept"],
        "steps": state["step"],
        "layer_selection": s.layer_selection,
        "precision": s.precision,
        "seconds_per_step_this_run": round(train_seconds / steps_this_run, 3) if steps_this_run else None,
        "settings": s.model_dump(),
        "heldout_texts": len(heldout),
        "heldout_in_domain_data": len(heldout) - len(clean),
        "heldout_clean_texts": len(clean),
        **overlap,
        "ppl_teacher": round(state["ppl_teacher"], 3),
        "ppl_truncated_init": round(state["ppl_init"], 3),
        "ppl_student": round(ppl_student, 3),
        "params_teacher": count_params(tmodel),
        "params_student": count_params(student),
        "mb_student_fp32": round(count_params(student) * 4 / 1e6, 1),
        "torch_tok_s_teacher_1thread": round(_speed(tmodel, tok), 2),
        "torch_tok_s_student_1thread": round(_speed(student, tok), 2),
        "first_loss": state["losses"][0] if state["losses"] else None,
        "last_loss": state["losses"][-1] if state["losses"] else None,
    }


# ----------------------------------------------------------------------------------------------------------------
# The run


def distill(teacher: str, out_dir: str | Path, settings: DistillConfig | None = None, cfg: Any | None = None,
            log: Log = print, progress: bool = True, train_texts: list[str] | None = None,
            eval_texts: list[str] | None = None, domain_texts: list[Any] | None = None) -> dict[str, Any]:
    """Distil ``teacher`` (``t``, ``expert:NAME`` or a folder) into ``OUT/model``; resumes from ``OUT/checkpoint``.

    ``train_texts`` / ``eval_texts`` replace the built-in real-text mix and held-out set (tests use tiny ones).
    ``domain_texts``: the domain teacher's data, strings or :class:`pet.expert.data.Sample` (rendered with the
    teacher's chat template); required when ``settings.domain_share`` > 0. Held-out texts that occur in it are
    reported, and the perplexities are also given on the held-out texts it does not contain.
    """
    import torch

    from pet.personal.distill.data import heldout_texts, training_texts
    from pet.personal.distill.student import load_teacher

    s = settings or DistillConfig()
    _check(s, domain_texts)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(s.threads)
    t_start = time.perf_counter()
    tmodel, tok, src = load_teacher(teacher, cfg)
    heldout = list(eval_texts) if eval_texts is not None else heldout_texts(s.eval_texts)
    real_texts = list(train_texts) if train_texts is not None else training_texts()
    probe_texts = real_texts[::max(1, len(real_texts) // 20)][:20]  # 20 training texts spread over the mix
    if s.precision == "bf16" and not native_bf16():
        log("warning: this CPU has no bf16 matrix instructions; bf16 autocast will be much slower than fp32 "
            "(on a 2-core AVX2-only CPU: 87 s for one step vs 4.5 s/step, docs/device.md); use --precision fp32 here")
    ckpt = out / "checkpoint"
    student, state = _start_or_resume(tmodel, tok, teacher, s, ckpt, heldout, probe_texts, log)
    streams = _window_streams(tmodel, tok, teacher, s, cfg, out, real_texts, domain_texts, log)
    clean = _not_in(heldout, streams.domain_texts)
    if len(clean) < len(heldout):
        log(f"{len(heldout) - len(clean)} of {len(heldout)} held-out texts occur in the domain data; "
            f"perplexity is also reported on the other {len(clean)}")
    first_step = state["step"]
    train_seconds = _train(s, tmodel, student, streams, state, ckpt, progress, log)
    ppl_student = _eval_ppl(student, tok, heldout)
    log(f"held-out ppl: distilled student {ppl_student:.2f}")
    model_dir = _save_student(student, tok, src, out)
    torch.set_num_threads(1)
    report = _report(teacher, s, tmodel, student, tok, state, heldout, clean, ppl_student,
                     state["step"] - first_step, train_seconds, len(streams.domain))
    report["seconds_this_run"] = round(time.perf_counter() - t_start, 1)
    report["model_dir"] = str(model_dir.resolve())
    atomic_write_json(out / "report.json", report)
    return report
