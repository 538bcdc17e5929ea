"""--importance on all-MiniLM-L6-v2 (issue 14): sentence-embedding cosine with and without
calibration statistics, side by side in one run.

Statistics come from benchmarks/sentences_calib.txt (tools/collect_importance.py, numpy forward
pass); cosine is scored on benchmarks/sentences_eval.txt (disjoint). "diag" is the file without
its Gram matrices (mean x^2 and the embeddings' row fractions only), "gram" the whole file.
bits/weight, SQNR and out SQNR are as `quant quantize --json` reports them; 1-cos ratio is against
the same options without --importance. Time and peak RSS are the whole `quant` process.

    python benchmarks/bench_importance.py [--quick]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from common import real_model  # noqa: E402

import minilm  # noqa: E402

QUANT = [sys.executable, "-m", "quantcli"]
STATS = os.path.join(ROOT, ".cache", "importance")


def statistics(model: str) -> dict[str, str]:
    """Paths of the diag-only and the Gram statistics of MiniLM on the calibration sentences."""
    os.makedirs(STATS, exist_ok=True)
    gram = os.path.join(STATS, "minilm_calib_gram.safetensors")
    diag = os.path.join(STATS, "minilm_calib_diag.safetensors")
    if not os.path.exists(gram):
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "collect_importance.py"), "--numpy-minilm",
                        model, minilm.CALIB_SENTENCES, "-o", gram, "--gram"], check=True)
    if not os.path.exists(diag):
        from safetensors.numpy import load_file, save_file

        from quantcli.io.safetensors import SafetensorsFile
        with SafetensorsFile(gram) as f:
            meta = f.metadata
        save_file({k: v for k, v in load_file(gram).items() if not k.endswith(".gram")}, diag, metadata=meta)
    return {"diag": diag, "gram": gram}


def run(model: str, out: str, args: list[str]) -> dict:
    """One `quant quantize --json` process: its report, wall time and own peak RSS (wait4)."""
    t = time.perf_counter()
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(QUANT + ["quantize", model, "-o", out, "-j", "1", "--json", *args], stdout=stdout,
                                stderr=stderr)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        if proc.returncode:
            raise SystemExit(f"quant {' '.join(args)} failed: {stderr.read().decode()}")
        doc = json.loads(stdout.read())
    doc["_seconds"] = time.perf_counter() - t
    doc["_rss_mb"] = usage.ru_maxrss / 1024
    return doc


def main() -> int:
    quick = "--quick" in sys.argv
    model = real_model()
    stats = statistics(model)
    w = minilm.load_weights(model)
    sentences = minilm.read_sentences(minilm.EVAL_SENTENCES)
    ref = minilm.embed(w, sentences)
    fixed = ["--bits", "3", "--scheme", "asymmetric", "--granularity", "group", "--group-size", "64", "--only",
             "encoder"]
    groups = [("int3 g64 asym, encoder only", fixed, [[], ["--scale-search"]])]
    for b in (["3.5"] if quick else ["2.5", "3.5"]):
        groups.append((f"--target-bpw {b}", ["--target-bpw", b], [[]]))
    print(f"uptime: {os.getloadavg()}")
    print("| options | statistics | bits/weight | SQNR dB | out SQNR dB | cos | 1-cos vs none | s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "a.qnt.safetensors")
        for title, base, variants in groups:
            plain = None
            rows = [(v, "none", []) for v in variants] + [([], k, ["--importance", stats[k]]) for k in ("diag", "gram")]
            for extra, kind, imp in rows:
                doc = run(model, out, base + extra + imp)
                cos = float((minilm.embed(minilm.load_archive(out), sentences) * ref).sum(axis=1).mean())
                plain = 1 - cos if kind == "none" else plain  # the last row without statistics
                t = doc["totals"]
                osq = t.get("overall_output_sqnr_db")
                print(f"| {title}{' ' + ' '.join(extra) if extra else ''} | {kind} | {t['bits_per_weight']:.3f} | "
                      f"{t['overall_sqnr_db']:.2f} | {'' if osq is None else f'{osq:.2f}'} | {cos:.4f} | "
                      f"{(1 - cos) / plain:.2f} | {doc['_seconds']:.1f} | {doc['_rss_mb']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
