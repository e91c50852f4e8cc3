"""Personal-tier commands: ``pet distill``, ``pet export``, ``pet device ask`` and ``pet bench device``.

    pet distill --teacher t --student-layers 10 --steps 150 --out models/students/p10
    pet export --model models/students/p10/model --quantize int8 --out models/bundles/p10-int8
    pet device ask --bundle models/bundles/smollm2-int8 "What is a hash function?"
    pet bench device --bundle models/bundles/smollm2-int8 --compare torch --json out.json --plot out.png

Handlers import torch / onnxruntime inside, so ``pet --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pet.cli import CLIError


def _group(sub: argparse._SubParsersAction, name: str, help_text: str, dest: str) -> argparse._SubParsersAction:
    """The sub-command action of group ``name``, created or reused (another module may own ``bench`` too)."""
    parser = sub.choices.get(name)
    if parser is None:
        parser = sub.add_parser(name, help=help_text)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest=dest, metavar="ACTION", required=True)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``distill``, ``export``, ``device`` and ``bench device``."""
    _add_distill(sub)
    _add_export(sub)
    _add_ask(sub)
    _add_bench(sub)


def _add_distill(sub: argparse._SubParsersAction) -> None:
    from pet.config.schema.personal import DistillConfig  # light: torch loads only when a command runs
    from pet.personal.distill.student import LAYER_SELECTIONS
    from pet.personal.distill.train import PRECISIONS

    dflt = DistillConfig()
    d = sub.add_parser("distill", help="distil a smaller personal (P) student from T or an expert")
    d.add_argument("--teacher", default="t", help="t, expert:NAME, or a model folder (default: t)")
    d.add_argument("--student-layers", type=int, default=dflt.student_layers,
                   help=f"decoder layers the student keeps (default {dflt.student_layers})")
    d.add_argument("--steps", type=int, default=dflt.steps, help=f"training steps (default {dflt.steps})")
    d.add_argument("--batch-size", type=int, default=dflt.batch_size)
    d.add_argument("--seq-len", type=int, default=dflt.seq_len)
    d.add_argument("--lr", type=float, default=dflt.lr)
    d.add_argument("--temperature", type=float, default=dflt.temperature, help="distillation temperature")
    d.add_argument("--alpha", type=float, default=dflt.alpha, help="weight of the KL term (1-alpha on cross-entropy)")
    d.add_argument("--teacher-samples", type=int, default=dflt.teacher_samples,
                   help="teacher-generated answers in the mix")
    d.add_argument("--eval-texts", type=int, default=dflt.eval_texts, help="held-out texts for perplexity")
    d.add_argument("--domain-teacher", default=None, metavar="NAME=DATA",
                   help="a registered expert and the data file it was registered with: that share of windows "
                        "comes from DATA and the expert scores them (P distilled from T and E)")
    d.add_argument("--domain-share", type=float, default=0.3,
                   help="share of windows from the domain teacher's data (default 0.3; with --domain-teacher)")
    d.add_argument("--init", choices=LAYER_SELECTIONS, default=dflt.layer_selection,
                   help="which teacher layers the student starts from: evenly spaced (default) or all but the "
                        "contiguous block that changes the hidden states least (better for 20 of 30 layers; worse "
                        "answers for 10, see docs/device.md)")
    d.add_argument("--precision", choices=PRECISIONS, default=dflt.precision,
                   help="forward passes in fp32 (default) or bf16 autocast (faster on CPUs with AVX512-BF16/AMX; "
                        "weights and optimizer stay fp32)")
    d.add_argument("--threads", type=int, default=dflt.threads, help="torch threads while training")
    d.add_argument("--max-minutes", type=float, default=None, help="stop after this long (rerun to continue)")
    d.add_argument("--config", default=None, help="config YAML (for the teacher's model names and registry)")
    d.add_argument("--out", required=True, help="output folder (resumes if it holds a checkpoint)")
    d.set_defaults(func=_distill)


def _add_export(sub: argparse._SubParsersAction) -> None:
    from pet.personal.bundle.read import QUANTIZATIONS

    e = sub.add_parser("export", help="export a model folder to a device bundle (ONNX + tokenizer + parity)")
    e.add_argument("--model", required=True, help="Hugging Face model folder (e.g. OUT/model of pet distill)")
    e.add_argument("--quantize", choices=QUANTIZATIONS, default="int8",
                   help="weight format (docs/device.md): int8 / int4 round-to-nearest with an fp32 embedding; "
                        "*-shared: the embedding reads the quantised head table (tied models); int4-hqq, "
                        "int4-gptq: accurate 4-bit (default int8)")
    e.add_argument("--out", required=True, help="bundle folder to write (atomically)")
    e.add_argument("--exporter", choices=["auto", "pet", "optimum"], default="auto",
                   help="pet: compact fused-kernel Llama graph; optimum: traced export (auto: pet where supported)")
    e.add_argument("--tier", default="P")
    e.add_argument("--replace", action="store_true", help="atomically replace an existing bundle")
    e.add_argument("--no-parity", action="store_true", help="skip the parity check (not recommended)")
    e.add_argument("--keys-dir", default=None,
                   help="keys folder whose signing.key signs the bundle, created on first use (default: "
                        "$PET_BUNDLE_SIGNING_KEY, else <state dir>/keys, the cloud's)")
    e.add_argument("--unsigned", action="store_true",
                   help="development: leave the bundle unsigned (devices then need --allow-unsigned)")
    e.set_defaults(func=_export)


def _add_ask(sub: argparse._SubParsersAction) -> None:
    from pet.personal.runtime import DEFAULT_RUNTIME, RUNTIMES

    dv = _group(sub, "device", "run the personal model on this device (onnxruntime only)", "device_command")
    ask = dv.add_parser("ask", help="stream an answer from a bundle")
    ask.add_argument("prompt")
    ask.add_argument("--bundle", default=None, help="bundle folder (default: personal.bundle of the config)")
    ask.add_argument("--config", default=None)
    ask.add_argument("--max-new-tokens", type=int, default=128)
    ask.add_argument("--temperature", type=float, default=0.0)
    ask.add_argument("--top-p", type=float, default=1.0)
    ask.add_argument("--seed", type=int, default=None)
    ask.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: config, 1)")
    ask.add_argument("--signals", action="store_true", help="print confidence signals and speed after the answer")
    ask.add_argument("--allow-unsigned", action="store_true",
                     help="development only: run a bundle that carries no signature")
    ask.add_argument("--runtime", choices=RUNTIMES, default=DEFAULT_RUNTIME,
                     help=f"ort: pet's loop over onnxruntime; genai: onnxruntime-genai (default {DEFAULT_RUNTIME})")
    ask.set_defaults(func=_ask)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    from pet.personal.runtime import DEFAULT_RUNTIME, RUNTIMES

    b = _group(sub, "bench", "benchmarks", "bench_command")
    bd = b.add_parser("device", help="device latency: TTFT, decode tok/s, RSS, bandwidth bound")
    bd.add_argument("--bundle", action="append", required=True, help="bundle folder (repeat to compare)")
    bd.add_argument("--compare", choices=["torch"], default=None, help="also measure PyTorch fp32 of the source")
    bd.add_argument("--runtime", action="append", choices=RUNTIMES, default=None,
                    help=f"device runtime to measure each bundle with (repeat for both; default {DEFAULT_RUNTIME})")
    bd.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                    help="thread counts for decode speed; the first also times TTFT and RSS (default 1 2)")
    bd.add_argument("--new-tokens", type=int, default=64)
    bd.add_argument("--repeats", type=int, default=2)
    bd.add_argument("--json", default=None, help="write results JSON here")
    bd.add_argument("--plot", default=None, help="write a PNG plot here")
    bd.set_defaults(func=_bench)


def _distill(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from pet.config.loader import load_config
    from pet.config.schema.personal import DistillConfig
    from pet.personal.distill.data import domain_teacher_data
    from pet.personal.distill.train import distill

    cfg = load_config(args.config) if args.config else None
    domain, samples = None, None
    try:
        if args.domain_teacher:
            domain, samples = domain_teacher_data(args.domain_teacher, cfg)
        s = DistillConfig(student_layers=args.student_layers, steps=args.steps, batch_size=args.batch_size,
                          seq_len=args.seq_len, lr=args.lr, temperature=args.temperature, alpha=args.alpha,
                          threads=args.threads, max_minutes=args.max_minutes, teacher_samples=args.teacher_samples,
                          eval_texts=args.eval_texts, domain_teacher=domain,
                          domain_share=args.domain_share if domain else 0.0, layer_selection=args.init,
                          precision=args.precision)
    except ValidationError as err:
        raise CLIError(_flag_errors(err)) from None
    except ValueError as err:
        raise CLIError(str(err)) from None
    try:
        r = distill(args.teacher, args.out, s, cfg=cfg, log=lambda m: print(m, flush=True), domain_texts=samples)
    except (KeyError, ValueError, RuntimeError) as err:
        raise CLIError(str(err)) from err
    print(f"{'model':<22} {'layers':>6} {'params M':>9} {'held-out ppl':>13} {'torch tok/s':>12}")
    print(f"{'teacher':<22} {r['teacher_layers']:>6} {r['params_teacher'] / 1e6:>9.1f} {r['ppl_teacher']:>13.2f} "
          f"{r['torch_tok_s_teacher_1thread']:>12.1f}")
    print(f"{'truncated init':<22} {r['student_layers']:>6} {r['params_student'] / 1e6:>9.1f} "
          f"{r['ppl_truncated_init']:>13.2f} {'':>12}")
    print(f"{'distilled student':<22} {r['student_layers']:>6} {r['params_student'] / 1e6:>9.1f} "
          f"{r['ppl_student']:>13.2f} {r['torch_tok_s_student_1thread']:>12.1f}")
    print(f"student model: {r['model_dir']}  (next: pet export --model {r['model_dir']} --quantize int8 --out B)")
    return 0


def _flag_errors(err: Any) -> str:
    """A pydantic error on distill settings as flags: ``--domain-share: Input should be less than 1``."""
    names = {"layer_selection": "init", "student_layers": "student-layers"}
    return "; ".join(f"--{names.get(str(e['loc'][0]), str(e['loc'][0]).replace('_', '-'))}: {e['msg']}"
                     for e in err.errors())


def _export(args: argparse.Namespace) -> int:
    import torch

    from pet.personal.bundle.write import export_bundle
    from pet.personal.export.onnx import ExportError

    torch.set_num_threads(1)
    try:
        out = export_bundle(args.model, args.out, quantize=args.quantize, tier=args.tier, replace=args.replace,
                            parity=not args.no_parity, exporter=args.exporter, sign=not args.unsigned,
                            keys_dir=args.keys_dir, log=lambda m: print(f"  {m}", flush=True))
    except ExportError as err:
        raise CLIError(str(err)) from err
    import json

    meta = json.loads((out / "bundle.json").read_text())
    p = meta.get("parity") or {}
    mb = sum((out / f).stat().st_size for f in meta["files"]) / 1e6
    print(f"bundle {out}: {meta['quantization']}, {meta['layers']} layers, {mb:.1f} MB, opset {meta['opset']}")
    if p:
        print(f"parity: max logit diff {p['max_logit_diff']:.4g}, greedy agreement {p['greedy_token_agreement']:.2f} "
              f"(exact {p['greedy_exact']:.2f}), held-out ppl {p['ppl_bundle']:.3f} vs fp32 {p['ppl_torch_fp32']:.3f} "
              f"(x{p['ppl_ratio']:.3f})")
    return 0


def _ask(args: argparse.Namespace) -> int:
    from pet.personal.bundle.read import BundleError
    from pet.personal.bundle.sign import trusted_public_key_path
    from pet.personal.runtime import load_model

    cfg = None
    if args.config or not args.bundle:  # no --bundle: the configuration's P (default: the default bundle)
        from pet.config.loader import load_config

        cfg = load_config(args.config)
    from pet.personal.bundle.default import resolve_bundle

    bundle = args.bundle or (resolve_bundle(cfg) if cfg else None)
    threads = args.threads or (cfg.personal.num_threads if cfg else 1)
    if not bundle:
        raise CLIError("no bundle: pass --bundle or set personal.bundle in the config")
    try:
        m = load_model(bundle, runtime=args.runtime, num_threads=threads, public_key=trusted_public_key_path(cfg),
                       allow_unsigned=args.allow_unsigned)
        g = m.generate(args.prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                       top_p=args.top_p, seed=args.seed, on_token=lambda t: print(t, end="", flush=True))
    except BundleError as err:
        raise CLIError(str(err)) from err
    print()
    if args.signals:
        s = g.signals
        print(f"[{g.usage.completion_tokens} tokens, {g.usage.seconds:.2f} s, {g.finish_reason}; mean logprob "
              f"{s.mean_logprob:.3f}, min p {s.min_token_prob:.3f}, mean entropy {s.mean_entropy:.3f}]",
              file=sys.stderr)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from pet.personal.bench import run_device_bench

    run_device_bench(args.bundle, compare_torch=args.compare == "torch", new_tokens=args.new_tokens,
                     repeats=args.repeats, json_out=args.json, plot_out=args.plot, runtimes=args.runtime,
                     threads=tuple(args.threads))
    return 0
