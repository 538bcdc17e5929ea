"""Quantize / dequantize throughput for the core uniform methods (issue 2).

Measures, as medians of --repeat runs, MB/s of float32 input:
  * encode: the method alone on an in-memory 4096x4096 float32 matrix (codes, scales, reconstruction);
  * file:   the whole `quantize_file` pipeline (read, encode, error metrics, checksums, archive write),
            and `dequantize_file`, on that matrix saved as .npy and on all-MiniLM-L6-v2.

    python benchmarks/bench_core.py [--repeat 7] [--model PATH]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from quantcli import Spec, dequantize_file, quantize_file  # noqa: E402
from quantcli.methods import get_method  # noqa: E402
from common import MODEL, real_model  # noqa: E402

SETTINGS = {
    "int8 sym per-channel": Spec(),
    "int4 asym group-64": Spec(bits=4, scheme="asymmetric", granularity="group", group_size=64),
}


def median_seconds(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--model", default=MODEL)
    args = ap.parse_args()
    args.model = real_model(args.model)

    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, numpy {np.__version__}, python {platform.python_version()}")
    x = np.random.default_rng(0).standard_normal((4096, 4096)).astype(np.float32)
    mb = x.nbytes / 1e6
    print(f"\n| setting | input | encode MB/s | quantize_file MB/s | dequantize_file MB/s | bits/weight | SQNR dB |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        npy = os.path.join(tmp, "w.npy")
        np.save(npy, x)
        for label, spec in SETTINGS.items():
            method = get_method(spec.method)
            enc_s = median_seconds(lambda: method.encode(x, spec), args.repeat)
            arc = os.path.join(tmp, "w.qnt.safetensors")
            q_s = median_seconds(lambda: quantize_file([npy], arc, spec), args.repeat)
            d_s = median_seconds(lambda: dequantize_file(arc, os.path.join(tmp, "r.npy")), args.repeat)
            r = quantize_file([npy], arc, spec)
            print(f"| {label} | 4096x4096 fp32 ({mb:.1f} MB) | {mb / enc_s:.0f} | {mb / q_s:.0f} | {mb / d_s:.0f} | "
                  f"{r.bits_per_weight:.3f} | {r.overall_sqnr_db:.2f} |")
        model_mb = os.path.getsize(args.model) / 1e6
        for label, spec in SETTINGS.items():
            arc = os.path.join(tmp, "m.qnt.safetensors")
            q_s = median_seconds(lambda: quantize_file([args.model], arc, spec), args.repeat)
            d_s = median_seconds(lambda: dequantize_file(arc, os.path.join(tmp, "r.safetensors")), args.repeat)
            r = quantize_file([args.model], arc, spec)
            print(f"| {label} | all-MiniLM-L6-v2 ({model_mb:.1f} MB) | - | {model_mb / q_s:.0f} | {model_mb / d_s:.0f} | "
                  f"{r.bits_per_weight:.3f} | {r.overall_sqnr_db:.2f} (archive {100 * r.ratio:.1f}% of input) |")


if __name__ == "__main__":
    main()
