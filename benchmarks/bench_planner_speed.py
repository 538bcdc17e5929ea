"""The sample-then-encode planner against another build, side by side in one run (issue 18).

For each case, whole `quant quantize MODEL ... -j 1` commands of each build, alternating: CPU
seconds of the command (user + sys of the child, process start and numba compilation included),
bits/weight from the archive, SQNR over the quantized tensors, and the sentence-embedding cosine
(benchmarks/minilm.py over sentences_eval.txt). The first case, int4 g64, is the CPU yardstick.

    python benchmarks/bench_planner_speed.py --quant NEW=/path/to/quant --quant MAIN=/other/quant [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import real_model  # noqa: E402

import minilm  # noqa: E402

CASES = [["--bits", "4", "--scheme", "asymmetric", "--granularity", "group", "--group-size", "64"]]
for _b in ("2.5", "3.5", "4.5"):
    CASES += [["--target-bpw", _b], ["--target-bpw", _b, "--objective", "mse"]]


def run(quant: str, model: str, out: str, args: list[str]) -> tuple[dict, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run([quant, "quantize", model, "-o", out, "-j", "1", "--json", *args], capture_output=True,
                       text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return json.loads(r.stdout), cpu


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quant", action="append", required=True, help="NAME=path of a quant executable")
    ap.add_argument("--model", default=None)
    ap.add_argument("--cases", default="all", help="all, or comma-separated case numbers (0 = int4)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each build per case (alternating); CPU is the median")
    a = ap.parse_args()
    builds = [q.split("=", 1) for q in a.quant]
    model = a.model or real_model()
    w = minilm.load_weights(model)
    sentences = minilm.read_sentences(minilm.EVAL_SENTENCES)
    ref = minilm.embed(w, sentences)
    cases = CASES if a.cases == "all" else [CASES[int(i)] for i in a.cases.split(",")]
    print("| options | build | bits/weight | SQNR dB | cos | CPU s |")
    print("|---|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for args in cases:
            runs: dict[str, list[tuple[dict, float]]] = {name: [] for name, _ in builds}
            for _ in range(a.repeat):
                for name, quant in builds:
                    runs[name].append(run(quant, model, os.path.join(tmp, f"{name}.qnt.safetensors"), args))
            for name, _ in builds:
                out = os.path.join(tmp, f"{name}.qnt.safetensors")
                doc, cpu = runs[name][-1][0], statistics.median(c for _, c in runs[name])
                t = doc["totals"]
                cos = minilm.embedding_cosine(w, minilm.load_archive(out), sentences, reference=ref)
                print(f"| `{' '.join(args)}` | {name} | {t['bits_per_weight']:.4f} | {t['overall_sqnr_db']:.2f} | "
                      f"{cos:.4f} | {cpu:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
