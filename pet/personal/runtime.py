"""The device runtime: a bundle run by onnxruntime with its own generation loop.

    m = DeviceModel.load("models/bundles/smollm2-int8", num_threads=1)
    g = m.generate("Name three colours.", max_new_tokens=32)        # pet.models.signals.Generation
    for piece in m.stream("Tell me a joke."): print(piece, end="")

The KV cache stays inside onnxruntime between steps: every step feeds the previous step's ``present.*``
OrtValues as the next ``past_key_values.*`` inputs (``run_with_ort_values``), so the cache is never copied to
numpy. A prefill asks the graph for the last position's logits only (``last_only``, pet graphs since issue 25).
Imports: numpy, onnxruntime, tokenizers, jinja2 -- never
torch or transformers (a test checks ``sys.modules``).
"""

from __future__ import annotations

import json
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pet.models.signals import ConfidenceSignals, Generation, Usage, logprobs_and_entropy
from pet.models.tier import TierBackend, backend_class
from pet.personal.bundle.read import TEMPLATE_FILE, TOKENIZER_FILE, BundleError, BundleInfo, read_bundle
from pet.personal.chat import ChatRenderer
from pet.personal.sampling import choose_token

Prompt = str | Sequence[dict[str, str]]


class DeviceInputError(BundleError, ValueError):
    """Bad input to a loaded device model (empty prompt, prompt too long, bad sampling values)."""


ALLOW_UNSIGNED_HINT = "pass --allow-unsigned (allow_unsigned=True) to run it anyway, for development only"


def verify_signature(info: BundleInfo, public_key: Any | None = None, allow_unsigned: bool = False) -> None:
    """The device's rule: only bundles the cloud signed run, unless ``allow_unsigned`` (development).

    An unsigned bundle is refused saying *unsigned*; a signed one is checked against ``public_key`` (default:
    :func:`pet.personal.bundle.sign.default_public_key_path`) and refused saying *altered* or *signed by another
    key*. ``allow_unsigned`` lets an unsigned bundle load, and a signed one whose trusted key is not on this
    machine; a signature that can be checked is still checked.
    """
    if info.signature is None:
        if allow_unsigned:
            return
        raise BundleError(f"bundle {info.path} is unsigned (bundle.json has no signature): devices run only bundles "
                          f"the cloud signed (pet export signs them; pet keys sign-bundle signs an old one); "
                          f"{ALLOW_UNSIGNED_HINT}")
    from pet.personal.bundle.sign import default_public_key_path, verify_bundle

    if public_key is None:
        public_key = default_public_key_path()
        if allow_unsigned and not public_key.is_file():
            return
    try:
        # Files were hashed by read_bundle already; the signature covers bundle.json, which lists their sha256.
        verify_bundle(info.path, public_key, check_files=False)
    except Exception as err:  # BundleSignatureError, or a bad key file (ValueError): both refuse the bundle
        raise BundleError(f"bundle {info.path}: signature check failed: {err}") from err


def session_options(num_threads: int = 1) -> Any:
    """onnxruntime options of the device session: ``num_threads`` intra-op threads, sequential, all graph
    optimisations, and low memory: no CPU arena (it keeps the largest prefill's activations for good) and
    initializers allocated outside it."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(num_threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    opts.enable_cpu_mem_arena = False
    opts.add_session_config_entry("session.use_device_allocator_for_initializers", "1")
    return opts


def open_text_side(info: BundleInfo) -> tuple[Any, ChatRenderer]:
    """The bundle's tokenizer (``tokenizers``) and chat renderer; BundleError on a bad tokenizer file."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(info.path / TOKENIZER_FILE))
    except Exception as err:
        raise BundleError(f"{info.path / TOKENIZER_FILE} is not a valid tokenizer: {err}") from err
    template_path = info.path / TEMPLATE_FILE
    template = template_path.read_text(encoding="utf-8") if template_path.is_file() else None
    return tokenizer, ChatRenderer(template, info.raw.get("special_tokens") or {})


class DeviceModel(TierBackend):
    """One loaded bundle: tokenizer, chat renderer and an onnxruntime session with a KV-cache decode loop."""

    runtime = "ort"

    def __init__(self, info: BundleInfo, session: Any, tokenizer: Any, renderer: ChatRenderer):
        import onnxruntime as ort

        self._init_text_side(info, tokenizer, renderer)
        self.ort = ort
        self.session = session
        names = [i.name for i in session.get_inputs()]
        self.past_names = [n for n in names if n.startswith("past_key_values.")]
        self.present_names = [n.replace("past_key_values.", "present.") for n in self.past_names]
        self.has_position_ids = "position_ids" in names
        # pet graphs since issue 25: an overridable input that limits the logits to the last position.
        self.has_last_only = "last_only" in {i.name for i in session.get_overridable_initializers()}
        self.output_names = ["logits", *self.present_names]

    def _init_text_side(self, info: BundleInfo, tokenizer: Any, renderer: ChatRenderer) -> None:
        """What every runtime shares: bundle facts, tokenizer, renderer, EOS ids, context, last timings."""
        self.info = info
        self.tokenizer = tokenizer
        self.renderer = renderer
        self.eos_ids = set(info.eos_token_ids)
        self.max_context = int(info.raw.get("max_context", 2048))
        self.last_timings: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------------------------
    # Loading

    @classmethod
    def from_config(cls, cfg: Any, allow_unsigned: bool = False) -> DeviceModel:
        """Load ``cfg.personal.bundle`` with ``cfg.personal.num_threads``, trusting the config's bundle key
        (:func:`pet.personal.bundle.sign.trusted_public_key_path`)."""
        from pet.personal.bundle.default import resolve_bundle
        from pet.personal.bundle.sign import trusted_public_key_path

        bundle = resolve_bundle(cfg)
        if bundle is None:
            raise BundleError("no device bundle configured (personal.bundle)")
        return cls.load(bundle, num_threads=cfg.personal.num_threads,
                        public_key=trusted_public_key_path(cfg), allow_unsigned=allow_unsigned)

    @classmethod
    def load(cls, bundle_dir: str | Path, num_threads: int = 1, verify: bool = True,
             public_key: Any | None = None, allow_unsigned: bool = False) -> DeviceModel:
        """Check ``bundle.json`` (sha256 of every file, opset, signature) and open the session.

        Raises :class:`BundleError` naming the problem. The bundle must carry a valid signature by
        ``public_key`` (an Ed25519 public key, its bytes or a ``signing.pub`` path; default
        ``$PET_BUNDLE_PUBLIC_KEY`` or the state folder's) unless ``allow_unsigned`` (development).
        ``verify=False`` skips hashing and the signature (the exporter's parity check of a bundle in the making).
        """
        import onnxruntime as ort

        info = read_bundle(bundle_dir, verify=verify)
        if verify:
            verify_signature(info, public_key, allow_unsigned)
        try:
            session = ort.InferenceSession(str(info.model_path), sess_options=session_options(num_threads),
                                           providers=["CPUExecutionProvider"])
        except Exception as err:  # ORT raises several exception types (opset, graph, file); name the file
            raise BundleError(f"onnxruntime cannot load {info.model_path}: {err}") from err
        tokenizer, renderer = open_text_side(info)
        model = cls(info, session, tokenizer, renderer)
        missing = [n for n in ("input_ids", "attention_mask") if n not in {i.name for i in session.get_inputs()}]
        if missing or not model.past_names:
            raise BundleError(f"{info.model_path} is not a KV-cache text-generation graph (inputs lack "
                              f"{', '.join(missing) or 'past_key_values.*'})")
        return model

    # ------------------------------------------------------------------------------------------------------------
    # Tokens and forward passes

    def render(self, prompt: Prompt, raw: bool = False) -> str:
        """The text the model sees (chat template unless ``raw``)."""
        try:
            return self.renderer.render(prompt, raw=raw)
        except ValueError as err:
            raise DeviceInputError(str(err)) from err

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (special tokens inside the text are recognised; none are added)."""
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` without special tokens."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def _empty_past(self) -> list[Any]:
        shape = (1, self.info.num_kv_heads, 0, self.info.head_dim)
        empty = np.zeros(shape, dtype=np.float32)
        return [self.ort.OrtValue.ortvalue_from_numpy(empty) for _ in self.past_names]

    def _step(self, ids: Sequence[int], start: int, past: list[Any],
              last_only: bool = False) -> tuple[np.ndarray, list[Any]]:
        """Run ``ids`` (positions ``start``...) on top of ``past``; returns their logits (only the last
        position's with ``last_only``, where the graph supports it) and the new cache."""
        n = len(ids)
        value = self.ort.OrtValue.ortvalue_from_numpy
        feed = {"input_ids": value(np.asarray([ids], dtype=np.int64)),
                "attention_mask": value(np.ones((1, start + n), dtype=np.int64))}
        if self.has_position_ids:
            feed["position_ids"] = value(np.arange(start, start + n, dtype=np.int64)[None, :])
        if self.has_last_only:  # an overridable initializer: IOBinding cannot bind it, run_with_ort_values can
            feed["last_only"] = value(np.asarray([int(last_only and n > 1)], dtype=np.int64))
        feed.update(zip(self.past_names, past, strict=True))
        outs = self.session.run_with_ort_values(self.output_names, feed)
        return outs[0].numpy()[0], list(outs[1:])

    def _begin(self, prompt_ids: list[int]) -> tuple[np.ndarray, Any]:
        """Prefill: the last position's logits and the decode state (here: the KV cache as OrtValues)."""
        logits, past = self._step(prompt_ids, 0, self._empty_past(), last_only=True)
        return logits[-1], past

    def _advance(self, state: Any, token: int, position: int) -> tuple[np.ndarray, Any]:
        """One decode step of ``token`` at ``position``: its logits and the new state."""
        logits, past = self._step([token], position, state)
        return logits[-1], past

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits ``[len(ids), vocab]`` of one full forward pass from an empty cache."""
        if not ids:
            raise DeviceInputError("no tokens to score")
        return self._step(list(ids), 0, self._empty_past())[0]

    def perplexity(self, texts: Sequence[str], max_length: int = 256) -> float:
        """Token-level perplexity over raw ``texts`` (each cut to ``max_length`` tokens), as in pet.metrics."""
        nll, count = 0.0, 0
        for text in texts:
            ids = self.encode(text)[:max_length]
            if len(ids) < 2:
                continue
            x = self.logits(ids)[:-1].astype(np.float64)
            m = x.max(-1, keepdims=True)
            lse = (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))[:, 0]
            nll += float((lse - x[np.arange(len(ids) - 1), ids[1:]]).sum())
            count += len(ids) - 1
        if count == 0:
            raise DeviceInputError("no tokens to score")
        return math.exp(nll / count)

    # ------------------------------------------------------------------------------------------------------------
    # Generation

    def generate(self, prompt: Prompt, max_new_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
                 stop: Sequence[str] | None = None, seed: int | None = None,
                 on_token: Callable[[str], None] | None = None, raw: bool = False) -> Generation:
        """Generate an answer; ``on_token`` receives text pieces as they are decoded (streaming)."""
        if max_new_tokens < 1:
            raise DeviceInputError("max_new_tokens must be >= 1")
        if temperature < 0 or not 0 < top_p <= 1:
            raise DeviceInputError("temperature must be >= 0 and top_p in (0, 1]")
        if isinstance(prompt, str) and not prompt.strip():
            raise DeviceInputError("prompt is empty")
        t0 = time.perf_counter()
        prompt_ids = self.encode(self.render(prompt, raw))
        return self.generate_ids(prompt_ids, max_new_tokens, temperature, top_p, stop, seed, on_token, t0=t0)

    def generate_ids(self, prompt_ids: Sequence[int], max_new_tokens: int = 64, temperature: float = 0.0,
                     top_p: float = 1.0, stop: Sequence[str] | None = None, seed: int | None = None,
                     on_token: Callable[[str], None] | None = None, ignore_eos: bool = False,
                     t0: float | None = None) -> Generation:
        """The decode loop on token ids. ``ignore_eos`` (benchmarks) always runs ``max_new_tokens`` steps.

        Timings of the last call are kept in ``self.last_timings``: ``ttft`` and ``steps`` (wall seconds per
        decode step), and the same as process CPU seconds (``ttft_cpu``, ``steps_cpu``), which stay meaningful
        when the machine is shared.
        """
        t0 = time.perf_counter() if t0 is None else t0
        prompt_ids = list(prompt_ids)
        if not prompt_ids:
            raise DeviceInputError("prompt is empty")
        if len(prompt_ids) + max_new_tokens > self.max_context:
            raise DeviceInputError(f"prompt of {len(prompt_ids)} tokens + max_new_tokens {max_new_tokens} exceeds "
                                   f"the model's context of {self.max_context}")
        rng = np.random.default_rng(seed)
        stops = [s for s in (stop or []) if s]
        out_ids: list[int] = []
        logprobs: list[float] = []
        entropies: list[float] = []
        steps: list[float] = []
        steps_cpu: list[float] = []
        c0 = time.process_time()
        emitted = ""
        finish = "length"
        last, state = self._begin(prompt_ids)
        ttft, ttft_cpu = time.perf_counter() - t0, time.process_time() - c0
        for step in range(max_new_tokens):
            tok = choose_token(last, temperature, top_p, rng)
            lp, ent = logprobs_and_entropy(last, tok)
            logprobs.append(lp)
            entropies.append(ent)
            if tok in self.eos_ids and not ignore_eos:  # signals keep the stopping decision, like the cloud tiers
                finish = "stop"
                break
            out_ids.append(tok)
            if on_token is not None or stops:
                text = self.decode(out_ids)
                cut = min((text.find(s) for s in stops if s in text), default=-1)
                if cut >= 0:
                    text, finish = text[:cut], "stop"
                # Hold back a trailing partial UTF-8 character until the next token completes it.
                if on_token is not None and not text.endswith("\ufffd") and len(text) > len(emitted):
                    on_token(text[len(emitted):])
                    emitted = text
                if finish == "stop":
                    break
            if step + 1 < max_new_tokens:
                ts, cs = time.perf_counter(), time.process_time()
                last, state = self._advance(state, tok, len(prompt_ids) + len(out_ids) - 1)
                steps.append(time.perf_counter() - ts)
                steps_cpu.append(time.process_time() - cs)
        self.last_timings = {"ttft": ttft, "steps": steps, "ttft_cpu": ttft_cpu, "steps_cpu": steps_cpu}
        text = self.decode(out_ids)
        if stops:
            cut = min((text.find(s) for s in stops if s in text), default=-1)
            if cut >= 0:
                text = text[:cut]
        if on_token is not None and len(text) > len(emitted) and text.startswith(emitted):
            on_token(text[len(emitted):])
        return Generation(
            text=text, token_ids=out_ids, signals=ConfidenceSignals.from_tokens(logprobs, entropies),
            usage=Usage(prompt_tokens=len(prompt_ids), completion_tokens=len(out_ids),
                        seconds=time.perf_counter() - t0),
            finish_reason=finish,
        )

    def stream(self, prompt: Prompt, **kwargs: Any) -> Iterator[str]:
        """Yield text pieces as they are generated (same arguments as :meth:`generate`)."""
        pieces: queue.Queue = queue.Queue()
        done = object()
        error: list[BaseException] = []

        def work() -> None:
            try:
                self.generate(prompt, on_token=pieces.put, **kwargs)
            except BaseException as err:  # re-raised in the caller's thread
                error.append(err)
            finally:
                pieces.put(done)

        # Validate synchronously so bad input raises at the call site, not inside the iterator's thread.
        if isinstance(prompt, str) and not prompt.strip():
            raise DeviceInputError("prompt is empty")
        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        while (item := pieces.get()) is not done:
            yield item
        worker.join()
        if error:
            raise error[0]

    def describe(self) -> dict[str, Any]:
        """Bundle facts for status output (no prompt data)."""
        return {"path": str(self.info.path), "model_id": self.info.model_id, "tier": self.info.tier,
                "runtime": self.runtime,
                "layers": self.info.layers, "quantization": self.info.quantization,
                "mb": round(self.info.size_bytes / 1e6, 1), "parity": json.loads(json.dumps(self.info.parity))}


# ----------------------------------------------------------------------------------------------------------------
# Runtimes by name

RUNTIMES = ("ort", "genai")
DEFAULT_RUNTIME = "ort"


def load_model(bundle_dir: str | Path, runtime: str | None = None, **kwargs: Any) -> DeviceModel:
    """Load ``bundle_dir`` with the named runtime: ``ort`` (:class:`DeviceModel`, pet's loop over onnxruntime)
    or ``genai`` (:class:`pet.personal.genai.GenaiModel`); None means :data:`DEFAULT_RUNTIME`. Keyword arguments
    are those of :meth:`DeviceModel.load` (``num_threads``, ``public_key``, ``allow_unsigned``, ...)."""
    runtime = runtime or DEFAULT_RUNTIME
    if runtime in RUNTIMES:
        return backend_class(runtime).load(bundle_dir, **kwargs)  # type: ignore[return-value]
    raise BundleError(f"unknown device runtime {runtime!r} (choose {', '.join(RUNTIMES)})")
