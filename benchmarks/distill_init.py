"""Distillation start and speed: evenly spaced vs block layer init, fp32 vs bf16 autocast, side by side.

    python benchmarks/distill_init.py                   # 20-layer student of T, 40 steps per variant
    python benchmarks/distill_init.py --layers 10 --steps 150 --variants even/bf16,block/bf16 \
        --out benchmarks/results/distill_init_p10

Every variant runs ``pet.personal.distill.train.distill`` from scratch with the same settings, batches (per-step RNG)
and teacher-generated texts (generated once, then copied into each run's folder), so the variants differ
only in the layers the student starts from and the precision of the forward passes. Reported per variant:
held-out perplexity of the truncated init and after the steps, seconds per training step, and ratios to
the first variant (default: even / fp32). Writes benchmarks/results/distill_init.{json,png}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, pyplot, save_results  # noqa: E402
from pet.config.schema.personal import DistillConfig  # noqa: E402
from pet.machine import machine_info  # noqa: E402
from pet.personal.distill.student import LAYER_SELECTIONS  # noqa: E402
from pet.personal.distill.train import PRECISIONS, distill, native_bf16  # noqa: E402

VARIANTS = (("even", "fp32"), ("even", "bf16"), ("block", "fp32"), ("block", "bf16"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=20, help="student layers (default 20 of 30)")
    ap.add_argument("--steps", type=int, default=40, help="training steps per variant (default 40)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default=",".join(f"{i}/{p}" for i, p in VARIANTS),
                    help="comma-separated INIT/PRECISION pairs; the first is the baseline of the ratios")
    ap.add_argument("--out", default=str(RESULTS / "distill_init"))
    args = ap.parse_args()
    variants = [tuple(v.strip().split("/")) for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if len(v) != 2 or v[0] not in LAYER_SELECTIONS or v[1] not in PRECISIONS]
    if bad:
        ap.error(f"--variants: {bad} are not INIT/PRECISION with INIT in {'|'.join(LAYER_SELECTIONS)} and "
                 f"PRECISION in {'|'.join(PRECISIONS)}")

    rows, curves = [], {}
    with tempfile.TemporaryDirectory(prefix="pet-distill-init-") as tmp:
        gen_cache = None
        for i, (init, precision) in enumerate(variants, 1):
            name = f"{init}/{precision}"
            print(f"[{i}/{len(variants)}] {name}: {args.steps} steps", flush=True)
            out = Path(tmp) / name.replace("/", "-")
            out.mkdir()
            if gen_cache is not None:
                shutil.copy2(gen_cache, out / "teacher_generations.json")
            s = DistillConfig(student_layers=args.layers, steps=args.steps, threads=args.threads,
                              layer_selection=init, precision=precision, checkpoint_every=10 ** 9)
            t0 = time.perf_counter()
            r = distill("t", out, s, log=lambda m: print(f"  {m}", flush=True), progress=False)
            gen_cache = out / "teacher_generations.json"
            state = json.loads((out / "checkpoint" / "state.json").read_text(encoding="utf-8"))
            curves[name] = [kl for kl, _ in state["losses"]]
            rows.append({"init": init, "precision": precision, "layers_kept": r["layers_kept"],
                         "ppl_teacher": r["ppl_teacher"], "ppl_init": r["ppl_truncated_init"],
                         "ppl_after": r["ppl_student"], "s_per_step": r["seconds_per_step_this_run"],
                         "first_kl": r["first_loss"][0], "last_kl": r["last_loss"][0],
                         "wall_s": round(time.perf_counter() - t0, 1)})
    base = rows[0]
    for r in rows:
        r["step_speedup_vs_baseline"] = round(base["s_per_step"] / r["s_per_step"], 2)
        r["ppl_after_ratio_vs_baseline"] = round(r["ppl_after"] / base["ppl_after"], 3)

    print(f"\n{'variant':<12} {'layers kept':<30} {'init ppl':>9} {'ppl @' + str(args.steps):>9} {'s/step':>7} "
          f"{'speedup':>8} {'ppl ratio':>9}")
    for r in rows:
        kept = ",".join(map(str, r["layers_kept"]))
        speed, ratio = r["step_speedup_vs_baseline"], r["ppl_after_ratio_vs_baseline"]
        print(f"{r['init'] + '/' + r['precision']:<12} {kept[:30]:<30} {r['ppl_init']:>9.1f} {r['ppl_after']:>9.2f} "
              f"{r['s_per_step']:>7.2f} {speed:>7.2f}x {ratio:>9.3f}")
    print(f"teacher ppl {base['ppl_teacher']:.2f}; native bf16: {native_bf16()}")
    result = {"machine": machine_info(threads=args.threads, native_bf16=native_bf16()), "student_layers": args.layers,
              "steps": args.steps, "baseline": "/".join(variants[0]), "variants": rows, "kl_curves": curves}
    save_results(args.out, result, plot=lambda path: plot(curves, args.layers, path))
    return 0


def plot(curves: dict[str, list[float]], layers: int, path: Path) -> None:
    """KL per step of every variant, log scale."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, kl in curves.items():
        ax.plot(range(1, len(kl) + 1), kl, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("KL(teacher || student), T^2-scaled")
    ax.set_title(f"{layers}-layer student of SmolLM2-135M: init x precision")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
