"""Device latency benchmark: SmolLM2-135M bundles in every weight format, each with pet's onnxruntime loop and
with onnxruntime-genai, side by side in one run (issue 25).

    python benchmarks/device_latency.py                       # builds missing bundles under models/bundles/
    python benchmarks/device_latency.py --skip-build --new-tokens 32
    python benchmarks/device_latency.py --formats none int8 int8-shared --runtimes ort genai
    python benchmarks/device_latency.py --profile models/bundles/smollm2-int8   # per-op ms of a decode step

Writes benchmarks/results/device_latency.json and .png. Every variant runs in its own subprocess (its own
peak RSS): decode tok/s on 1 and 2 threads, TTFT 16/128/512 against the compute roofline, peak RSS, bundle MB,
perplexity ratio and greedy agreement vs fp32 (the bundle's parity record), genai's agreement with pet's loop,
and the share of the memory-bandwidth bound. Decode speed is also reported from process CPU time: on a shared
machine the CPU-time number is the one that says what the device would do alone. The machine, its vector
extensions and the load average before and after are in the JSON.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS  # noqa: E402
from pet.paths import models_dir  # noqa: E402
from pet.personal.bench import profile_ops, run_device_bench  # noqa: E402
from pet.personal.bundle.write import export_bundle  # noqa: E402

FORMATS = ("none", "int8", "int4", "int8-shared", "int8b64-shared", "int4-shared")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-build", action="store_true", help="only benchmark bundles that exist")
    ap.add_argument("--build-only", action="store_true", help="build the missing bundles, then stop")
    ap.add_argument("--formats", nargs="+", default=list(FORMATS), help=f"bundle formats (default {FORMATS})")
    ap.add_argument("--runtimes", nargs="+", default=["ort", "genai"], help="device runtimes (default ort genai)")
    ap.add_argument("--compare-torch", action="store_true", help="also PyTorch fp32 (the older tables' baseline)")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "device_latency"))
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
    bundles, labels = [], []
    fp32_onnx = bdir / "smollm2-fp32" / "model.onnx"
    for q in args.formats:
        path = bdir / ("smollm2-fp32" if q == "none" else f"smollm2-{q}")
        if not (path / "bundle.json").is_file():
            if args.skip_build:
                continue
            t = time.perf_counter()
            print(f"building {path} from {base} ({q}) ...", flush=True)
            export_bundle(base, path, quantize=q, exporter="pet", replace=True,
                          from_onnx=fp32_onnx if fp32_onnx.is_file() and q != "none" else None,
                          log=lambda m: print(f"  {m}", flush=True))
            print(f"  built in {time.perf_counter() - t:.0f} s", flush=True)
        bundles.append(str(path))
        labels.append(f"{'fp32' if q == 'none' else q}:smollm2")
    if args.build_only:
        return 0
    print(f"load before the run: {os.getloadavg()[0]:.2f}", flush=True)
    run_device_bench(bundles, compare_torch=args.compare_torch, new_tokens=args.new_tokens, repeats=args.repeats,
                     json_out=f"{args.out}.json", plot_out=f"{args.out}.png", labels=labels,
                     runtimes=args.runtimes)
    print(f"results: {args.out}.json, {args.out}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
