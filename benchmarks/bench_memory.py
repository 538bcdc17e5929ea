"""Peak memory of `quant quantize` per method on a 1-D and a 2-D float32 tensor.

Each case runs the real command line in its own process; a small wrapper process starts it and
reads `resource.getrusage(RUSAGE_CHILDREN).ru_maxrss` (the peak resident set of the finished
child, in KiB on Linux), so every number is the peak of exactly one run. The baseline is the
quantization of a 4x4 tensor measured the same way (interpreter, numpy and the package loaded).

    python benchmarks/bench_memory.py                  # 1-D 5M values, 2-D 2048x2560 (~20 MB each)
    python benchmarks/bench_memory.py --scale 0.1      # smaller inputs, for a quick look
    python benchmarks/bench_memory.py --markdown       # the table as docs/BENCHMARKS-memory.md has it

Columns: peak RSS in MB, and (peak - baseline) / input bytes: how many copies of the tensor the
run holds at its worst.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

CASES: list[tuple[str, list[str]]] = [
    ("uniform int8 channel", ["--method", "uniform"]),
    ("uniform int4 asym g64", ["--method", "uniform", "--bits", "4", "--scheme", "asymmetric",
                               "--granularity", "group", "--group-size", "64"]),
    ("uniform int4 g128 search", ["--method", "uniform", "--bits", "4", "--granularity", "group",
                                  "--scale-search"]),
    ("nf4 g64", ["--method", "nf", "--bits", "4", "--granularity", "group", "--group-size", "64"]),
    ("log4 channel", ["--method", "log", "--bits", "4"]),
    ("kmeans4 tensor", ["--method", "kmeans", "--bits", "4", "--granularity", "tensor"]),
    ("kmeans4 normalize g64", ["--method", "kmeans", "--bits", "4", "--normalize", "group", "--group-size", "64"]),
    ("vq8 d4", ["--method", "vq", "--bits", "8", "--vector-dim", "4"]),
    ("pq K256 s4", ["--method", "pq"]),
    ("fp16", ["--method", "fp16"]),
    ("bf16", ["--method", "bf16"]),
    ("nf4 g2147483647", ["--method", "nf", "--bits", "4", "--granularity", "group", "--group-size", "2147483647"]),
]

WRAPPER = ("import resource, subprocess, sys\n"
           "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode\n"
           "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
QUANT = [sys.executable, "-m", "quantcli"]


def peak_kib(args: list[str]) -> tuple[int, int]:
    """(exit status, peak RSS in KiB) of one `quant ARGS` run in a fresh process."""
    out = subprocess.run([sys.executable, "-c", WRAPPER, *QUANT, *args], check=True, capture_output=True, text=True)
    rc, kib = out.stdout.split()
    return int(rc), int(kib)


def write_input(folder: str, name: str, x: np.ndarray) -> str:
    from quantcli.io.output import SafetensorsWriter
    path = os.path.join(folder, f"{name}.safetensors")
    w = SafetensorsWriter(path)
    w.add("w", x)
    w.finish()
    return path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0, help="input sizes times this")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--only", default="", help="run the cases whose label contains this")
    opts = ap.parse_args()
    rng = np.random.default_rng(0)
    n1 = int(5_000_000 * opts.scale)
    rows = max(1, int(2048 * opts.scale))
    inputs = {"1-D": rng.standard_normal(n1, dtype=np.float32) * 0.02,
              "2-D": rng.standard_normal((rows, 2560), dtype=np.float32) * 0.02}
    with tempfile.TemporaryDirectory() as folder:
        tiny = write_input(folder, "tiny", np.ones((4, 4), np.float32))
        base = peak_kib(["quantize", tiny, "-o", os.path.join(folder, "tiny.qnt.safetensors"), "-q"])[1]
        paths = {k: write_input(folder, k.replace("-", ""), v) for k, v in inputs.items()}
        shapes = {k: "x".join(map(str, v.shape)) for k, v in inputs.items()}
        if opts.markdown:
            print(f"baseline (quantizing a 4x4 tensor): {base / 1024:.0f} MB\n")
            print("| method | " + " | ".join(f"{k} {shapes[k]} peak MB | peak-base / input" for k in inputs) + " |")
            print("|---|" + "---:|---:|" * len(inputs))
        else:
            print(f"baseline {base / 1024:.0f} MB; inputs " +
                  ", ".join(f"{k} {shapes[k]} {v.nbytes / 1e6:.1f} MB" for k, v in inputs.items()))
        for label, args in CASES:
            if opts.only not in label:
                continue
            cells = []
            for k, path in paths.items():
                out = os.path.join(folder, "out.qnt.safetensors")
                rc, kib = peak_kib(["quantize", path, "-o", out, "-q", "--include-1d", *args])
                if os.path.exists(out):
                    os.unlink(out)
                ratio = (kib - base) * 1024 / inputs[k].nbytes
                cells.append(f"{kib / 1024:.0f} | {ratio:.1f}x" + ("" if rc == 0 else f" (exit {rc})"))
            print(f"| {label} | " + " | ".join(cells) + " |" if opts.markdown else f"{label:28s} " + "   ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
