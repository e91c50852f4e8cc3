"""Device latency benchmark: PyTorch fp32 vs onnxruntime fp32 / int8 / int4 bundles of SmolLM2-135M, and
the distilled student, one thread each, side by side in one run.

    python benchmarks/device_latency.py                       # builds missing bundles under models/bundles/
    python benchmarks/device_latency.py --skip-build --new-tokens 32
    python benchmarks/device_latency.py --profile models/bundles/smollm2-int8   # per-op ms of a decode step

Writes benchmarks/results/device_latency.json and .png. Every variant runs in its own subprocess (its own
peak RSS). Decode speed is reported from wall time and from process CPU time: on a shared machine the
CPU-time number is the one that says what the device would do alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pet.device.bench import profile_ops, run_device_bench  # noqa: E402
from pet.export.bundle import export_bundle  # noqa: E402
from pet.paths import models_dir  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", default=str(models_dir() / "students" / "p10" / "model"),
                    help="distilled student model folder (skipped if missing)")
    ap.add_argument("--skip-build", action="store_true", help="only benchmark bundles that exist")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "device_latency"))
    ap.add_argument("--profile", metavar="BUNDLE", help="only print per-operator kernel time of BUNDLE's decode step")
    args = ap.parse_args()
    if args.profile:
        prof = profile_ops(args.profile)
        total = sum(prof["ops"].values())
        for op, ms in prof["ops"].items():
            print(f"{op:<32} {ms:7.2f} ms/step {100 * ms / total:5.1f}%  ({prof['nodes'][op]} nodes)")
        print(f"{'total':<32} {total:7.2f} ms/step")
        for name, ms in prof["top"]:
            print(f"  {name:<40} {ms:6.2f} ms")
        return 0

    base = models_dir() / "smollm2-135m-instruct"
    bdir = models_dir() / "bundles"
    # (bundle folder, source model, quantisation, exporter, label)
    wanted = [("smollm2-fp32", base, "none", "pet", "ort-fp32:smollm2"),
              ("smollm2-int8-optimum", base, "int8", "optimum", "ort-int8-optimum:smollm2"),
              ("smollm2-int8", base, "int8", "pet", "ort-int8:smollm2"),
              ("smollm2-int4", base, "int4", "pet", "ort-int4:smollm2")]
    if Path(args.student, "config.json").is_file():
        wanted.append(("p10-int8", Path(args.student), "int8", "pet", "ort-int8:student-10L"))
    bundles, labels = [], []
    for name, src, q, exporter, label in wanted:
        path = bdir / name
        if not (path / "bundle.json").is_file():
            if args.skip_build:
                continue
            t = time.perf_counter()
            print(f"building {path} from {src} ({q}) ...", flush=True)
            export_bundle(src, path, quantize=q, exporter=exporter, log=lambda m: print(f"  {m}", flush=True))
            print(f"  built in {time.perf_counter() - t:.0f} s", flush=True)
        bundles.append(str(path))
        labels.append(label)
    run_device_bench(bundles, compare_torch=True, new_tokens=args.new_tokens, repeats=args.repeats,
                     json_out=f"{args.out}.json", plot_out=f"{args.out}.png", labels=labels)
    print(f"results: {args.out}.json, {args.out}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
