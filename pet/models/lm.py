"""The one causal-LM interface every torch tier uses (T, E, and P before export).

    lm = CausalLM.load("models/smollm2-135m-instruct")
    out = lm.generate("What is the capital of France?", max_new_tokens=16)
    out.text, out.signals.mean_logprob, out.usage.completion_tokens

A prompt is either a string (sent as one user turn through the chat template) or a list of chat messages
``[{"role": "user", "content": ...}]``; ``raw=True`` continues a string as plain text instead. The chat
template of SmolLM2 already starts with ``<|im_start|>``, so templated text is tokenized with
``add_special_tokens=False``. ``generate_batch`` left-pads several prompts into one forward pass per step,
which is what ``@serve.batch`` feeds it.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pet.models.messages import validate_messages
from pet.models.signals import ConfidenceSignals, Generation, Usage
from pet.models.tier import TierBackend

Prompt = str | Sequence[dict[str, str]]

# ----------------------------------------------------------------------------------------------------------------
# Prompt formatting


class PromptError(ValueError):
    """A prompt the model cannot take (malformed messages, text that is not valid Unicode); quotes no content."""



def render_prompt(tokenizer: Any, prompt: Prompt, raw: bool = False) -> str:
    """The text the model sees: chat-templated (with the assistant turn opened) unless ``raw``."""
    if raw:
        if not isinstance(prompt, str):
            raise ValueError("raw=True needs a string prompt")
        return prompt
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else validate_messages(prompt)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # Models without a template (tiny test models): a plain transcript.
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


# ----------------------------------------------------------------------------------------------------------------
# The interface


class CausalLM(TierBackend):
    """A Hugging Face causal LM plus tokenizer behind one ``generate`` that reports confidence and usage."""

    def __init__(self, model: Any, tokenizer: Any, name: str = "model"):
        import torch

        self.torch = torch
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.eos_ids = self._eos_ids()
        # check_prompt runs beside a generation in another thread; a fast tokenizer used from two threads at
        # once fails ("Already borrowed"), so checks get their own copy, one at a time.
        self._check_lock = threading.Lock()
        self._check_tok: Any = None

    @classmethod
    def load(cls, folder: str | Path, threads: int | None = None, name: str | None = None) -> CausalLM:
        """Load from a local folder only (HF_HUB_OFFLINE is set first; see :func:`pet.models.lora.load_base`)."""
        from pet.models.lora import load_base

        model, tok = load_base(folder, threads)
        return cls(model, tok, name or Path(folder).name)

    def _eos_ids(self) -> list[int]:
        ids = set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if isinstance(gen_eos, int):
            ids.add(gen_eos)
        elif isinstance(gen_eos, list):
            ids.update(int(x) for x in gen_eos)
        if "<|im_end|>" in self.tokenizer.get_vocab():  # ChatML end of turn, also for tokenizers whose eos differs
            ids.add(int(self.tokenizer.convert_tokens_to_ids("<|im_end|>")))
        return sorted(ids)

    def render(self, prompt: Prompt, raw: bool = False) -> str:
        """See :func:`render_prompt`."""
        return render_prompt(self.tokenizer, prompt, raw)

    def check_prompt(self, prompt: Prompt, raw: bool = False) -> int:
        """Render and tokenize one prompt on its own; its token count, or PromptError naming no content.

        The serve tiers call this before a request joins a batch, so a prompt the tokenizer cannot take fails
        alone instead of failing every request batched with it.
        """
        with self._check_lock:
            if self._check_tok is None:
                self._check_tok = copy.deepcopy(self.tokenizer)
            try:
                text = render_prompt(self._check_tok, prompt, raw)
                text.encode("utf-8")
                return len(self._check_tok(text, add_special_tokens=False)["input_ids"])
            except UnicodeError:
                raise PromptError("the prompt contains text that is not valid Unicode") from None
            except ValueError as err:  # validate_messages: names the field, never its content
                raise PromptError(str(err)) from None
            except BaseException as err:
                if type(err).__name__ == "PanicException":  # the Rust tokenizer gave up on this input
                    raise PromptError("the prompt could not be tokenized") from None
                raise

    def count_tokens(self, prompt: Prompt, raw: bool = False) -> int:
        """Prompt length in tokens after templating."""
        return len(self.tokenizer(self.render(prompt, raw), add_special_tokens=False)["input_ids"])

    def generate(self, prompt: Prompt, max_new_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
                 stop: Sequence[str] | None = None, seed: int | None = None, raw: bool = False) -> Generation:
        """Generate for one prompt."""
        return self.generate_batch([prompt], max_new_tokens, temperature, top_p, stop, seed, raw)[0]

    def generate_batch(self, prompts: Sequence[Prompt], max_new_tokens: int = 64, temperature: float = 0.0,
                       top_p: float = 1.0, stop: Sequence[str] | None = None, seed: int | None = None,
                       raw: bool = False, soft_prompts: Sequence[Any] | None = None) -> list[Generation]:
        """Generate for several prompts in one left-padded batch; one Generation per prompt, in order.

        ``soft_prompts``: per prompt None or a [k, hidden] tensor put in front of its token embeddings (the
        questioner encoder's output, :mod:`pet.questioner.condition`).
        """
        torch = self.torch
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        t0 = time.perf_counter()
        texts = [self.render(p, raw) for p in prompts]
        self.tokenizer.padding_side = "left"
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        if enc["input_ids"].shape[1] == 0:
            raise ValueError("prompt is empty")
        inputs: dict[str, Any] = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if soft_prompts is not None and any(s is not None for s in soft_prompts):
            inputs = self.soft_prompt_inputs(texts, soft_prompts)
        sample = temperature > 0
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max_new_tokens, do_sample=sample, return_dict_in_generate=True, output_logits=True,
            pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.eos_ids,
        )
        if sample:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
        else:  # silence generation_config sampling defaults when greedy
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if seed is not None:
            torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.model.generate(**inputs, **kwargs)
        prompt_len = inputs["input_ids"].shape[1] if "input_ids" in inputs else 0  # embeds: only new tokens
        new = out.sequences[:, prompt_len:]
        logits = torch.stack(out.logits, dim=1).float()  # [batch, steps, vocab], raw (untempered)
        logp = torch.log_softmax(logits, dim=-1)
        ent = -(logp.exp() * logp).sum(-1)
        chosen = logp.gather(-1, new[:, : logp.shape[1]].unsqueeze(-1)).squeeze(-1)
        seconds = time.perf_counter() - t0
        results = []
        for i in range(len(prompts)):
            ids = new[i].tolist()
            n = len(ids)
            finish = "length"
            for j, tid in enumerate(ids):
                if tid in self.eos_ids:
                    n, finish = j, "stop"
                    break
            kept = ids[:n]
            # Signals cover the answer tokens plus the EOS decision (the model's confidence in stopping).
            k = min(n + (1 if finish == "stop" else 0), chosen.shape[1])
            text = self.tokenizer.decode(kept, skip_special_tokens=True)
            if stop:
                cut = min((text.find(s) for s in stop if s and s in text), default=-1)
                if cut >= 0:
                    text, finish = text[:cut], "stop"
            results.append(Generation(
                text=text,
                token_ids=kept,
                signals=ConfidenceSignals.from_tokens(chosen[i, :k].tolist(), ent[i, :k].tolist()),
                usage=Usage(prompt_tokens=int(inputs["attention_mask"][i].sum()), completion_tokens=len(kept),
                            seconds=seconds),
                finish_reason=finish,
            ))
        return results

    def soft_prompt_inputs(self, texts: Sequence[str], soft_prompts: Sequence[Any]) -> dict[str, Any]:
        """``inputs_embeds`` and ``attention_mask`` of [soft prompt | prompt tokens] rows, left-padded."""
        torch = self.torch
        emb = self.model.get_input_embeddings()
        rows = []
        for text, soft in zip(texts, soft_prompts, strict=True):
            ids = torch.tensor(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            with torch.inference_mode():
                x = emb(ids)
            rows.append(x if soft is None else torch.cat([soft.to(x.dtype), x], dim=0))
        width = max(r.shape[0] for r in rows)
        pad = emb.weight[self.tokenizer.pad_token_id].detach()
        embeds = pad.expand(len(rows), width, pad.shape[0]).clone()
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            embeds[i, width - r.shape[0]:] = r
            mask[i, width - r.shape[0]:] = 1
        return {"inputs_embeds": embeds, "attention_mask": mask}

    def loglikelihood(self, context: str, continuation: str) -> tuple[float, int]:
        """Sum of log-probs of ``continuation`` given ``context`` (raw text), and its token count."""
        torch = self.torch
        ctx = self.tokenizer(context, add_special_tokens=False)["input_ids"]
        cont = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
        if not cont:
            return 0.0, 0
        ids = torch.tensor([ctx + cont])
        with torch.inference_mode():
            logits = self.model(input_ids=ids).logits[0, :-1].float()
        logp = torch.log_softmax(logits, -1)
        target = ids[0, 1:]
        lp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)[len(ctx) - 1 if ctx else 0:]
        return float(lp.sum()), len(cont)

