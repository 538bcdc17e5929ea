"""Entropy-coded archives on all-MiniLM-L6-v2, measured as the issue defines them: bits per weight =
(archive bytes - kept tensors' arrays) x 8 / quantized weights (header included), SQNR over all
quantized tensors together, cos = mean cosine of sentence embeddings against the float model
(benchmarks/minilm.py over benchmarks/sentences_eval.txt), encode / decode MB/s of float32 input
(one process, --jobs 1; decode = dequantize to .safetensors).

    python benchmarks/bench_ecsq.py [--quick]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import real_model  # noqa: E402

import minilm  # noqa: E402

QUANT = [sys.executable, "-m", "quantcli"]


def run(model: str, out: str, args: list[str]) -> dict:
    t = time.perf_counter()
    r = subprocess.run(QUANT + ["quantize", model, "-o", out, "-j", "1", "--json", *args], capture_output=True,
                       text=True, check=True)
    enc = time.perf_counter() - t
    doc = json.loads(r.stdout)
    t = time.perf_counter()
    subprocess.run(QUANT + ["dequantize", out, "-o", out + ".f32.safetensors", "-q"], check=True)
    dec = time.perf_counter() - t
    os.unlink(out + ".f32.safetensors")
    doc["_enc"], doc["_dec"] = enc, dec
    return doc


def main() -> int:
    quick = "--quick" in sys.argv
    model = real_model()
    mb = os.path.getsize(model) / 1e6
    w = minilm.load_weights(model)
    sentences = minilm.read_sentences(minilm.EVAL_SENTENCES)
    ref = minilm.embed(w, sentences)
    cases = [["--method", "ecsq", "--sqnr", "41.2"], ["--method", "ecsq", "--sqnr", "41.2", "--trellis"],
             ["--codec", "entropy"], ["--bits", "8"],
             ["--bits", "4", "--scheme", "asymmetric", "--granularity", "group", "--group-size", "64", "--codec",
              "entropy"]]
    if not quick:
        for db in ("27.0", "20.9", "14.6"):
            cases += [["--method", "ecsq", "--sqnr", db], ["--method", "ecsq", "--sqnr", db, "--trellis"]]
        for b in ("2.5", "3.5", "4.5"):
            cases += [["--target-bpw", b], ["--target-bpw", b, "--objective", "mse"]]
    print("| options | bits/weight | SQNR dB | cos | encode MB/s | decode MB/s |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for args in cases:
            out = os.path.join(tmp, "a.qnt.safetensors")
            doc = run(model, out, args)
            t = doc["totals"]
            cos = minilm.embedding_cosine(w, minilm.load_archive(out), sentences, reference=ref)
            print(f"| `{' '.join(args)}` | {t['bits_per_weight']:.3f} | {t['overall_sqnr_db']:.2f} | {cos:.4f} | "
                  f"{mb / doc['_enc']:.0f} | {mb / doc['_dec']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
