"""Planner vs the best single setting on all-MiniLM-L6-v2 at 2.5, 3.5 and 4.5 bits per weight.

For each budget: plan (dry run) and write the planned archive; check the file never exceeds the
budget and that the dry run predicted its size exactly; measure its weighted SQNR on the whole
tensors. The baseline is the best single uniform setting whose archive fits the same budget,
searched over symmetric/asymmetric x 2-8 bits x tensor/channel/g16/g32/g64/g128/g256, each
written and measured for real. Also: the best single setting of any method among the planner's
candidates (written and measured), and a study of the sample size (planning time vs accuracy).

    PYTHONPATH=. python benchmarks/bench_planner.py [--model PATH] [--jobs 2] [--sample-study]

`--ecsq` instead prints the issue-11 table: whole `quant quantize MODEL --target-bpw B [--objective O]`
commands (--jobs 1, process start and file I/O included; median wall time of `--repeat` runs) with
bits/weight from the archive file, SQNR over the quantized tensors and sentence-embedding cosine
(benchmarks/minilm.py over `--sentences`, default sentences_eval.txt).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time

from quantcli import Spec, open_archive, quantize_file
from quantcli.api import plan_file
from quantcli.planner import SAMPLE, Budget, candidate_label, default_candidates, plan_budget, quantize_budget, \
    weighted_sqnr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from common import MODEL, real_model  # noqa: E402


def archive_bpw(path: str) -> float:
    """The --target-bpw measure: 8 x (file bytes - kept arrays) / quantized weights."""
    with open_archive(path) as a:
        kept = sum(a.stored_nbytes(t) for t in a.tensors if t.method == "keep")
        n = sum(t.size for t in a.tensors if t.method != "keep")
    return 8 * (os.path.getsize(path) - kept) / n


def report_wsqnr(report) -> float:
    return weighted_sqnr((t.elements, 10 ** (-t.sqnr_db / 10) if math.isfinite(t.sqnr_db) else 0.0)
                         for t in report.tensors if t.quantized)


def uniform_settings() -> list[Spec]:
    out = []
    for scheme in ("symmetric", "asymmetric"):
        for bits in range(2, 9):
            out.append(Spec(bits=bits, scheme=scheme, granularity="tensor"))
            out.append(Spec(bits=bits, scheme=scheme, granularity="channel"))
            for g in (16, 32, 64, 128, 256):
                out.append(Spec(bits=bits, scheme=scheme, granularity="group", group_size=g))
    return out


def best_single(model: str, bpw: float, specs: list[Spec], tmp: str) -> tuple[str, float, float, int] | None:
    """(label, weighted SQNR, bpw, bytes) of the best setting whose real archive fits, or None."""
    best = None
    plans = []
    for spec in specs:
        p = plan_file([model], spec)
        arrays = sum(s for item, s in zip(p.items, p.stored_bytes) if not item.keep)
        n = sum(item.ref.size for item in p.items if not item.keep)
        if 8 * arrays / n <= bpw:  # the header only adds: no need to write what cannot fit
            plans.append((8 * arrays / n, spec))
    for _, spec in sorted(plans, key=lambda x: -x[0])[:12]:  # the densest fitting settings are the candidates
        out = os.path.join(tmp, "single.qnt.safetensors")
        r = quantize_file([model], out, spec, jobs=2)
        real_bpw = archive_bpw(out)
        if real_bpw > bpw:
            continue
        w = report_wsqnr(r)
        label = r.tensors[[t.quantized for t in r.tensors].index(True)].label
        if best is None or w > best[1]:
            best = (label, w, real_bpw, r.archive_bytes)
    return best


def ecsq_table(model: str, budgets: list[float], objectives: list[str], sentences: str, repeat: int) -> None:
    """The issue-11 acceptance table (see the module docstring)."""
    import json
    import statistics
    import subprocess

    import minilm
    w = minilm.load_weights(model)
    sents = minilm.read_sentences(sentences)
    ref = minilm.embed(w, sents)
    print(f"load average at start: {os.getloadavg()[0]:.2f}; {len(sents)} sentences from {os.path.basename(sentences)}")
    print("| objective | target bpw | bits/weight (file) | SQNR dB | cos | plan s | command s (median) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for objective in objectives:
            for bpw in budgets:
                out = os.path.join(tmp, "a.qnt.safetensors")
                times, doc = [], {}
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    r = subprocess.run([sys.executable, "-m", "quantcli", "quantize", model, "-o", out, "-j", "1",
                                        "--json", "--target-bpw", str(bpw), "--objective", objective],
                                       capture_output=True, text=True, check=True)
                    times.append(time.perf_counter() - t0)
                    doc = json.loads(r.stdout)
                cos = minilm.embedding_cosine(w, minilm.load_archive(out), sents, reference=ref)
                print(f"| {objective} | {bpw} | {archive_bpw(out):.4f} | {doc['totals']['overall_sqnr_db']:.2f} | "
                      f"{cos:.4f} | {doc['plan']['totals']['planning_seconds']:.1f} | {statistics.median(times):.1f} |",
                      flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ecsq", action="store_true", help="the issue-11 table instead")
    ap.add_argument("--objectives", default="relative,relative-emb,mse")
    ap.add_argument("--sentences", default=os.path.join(ROOT, "benchmarks", "sentences_eval.txt"))
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--budgets", default="2.5,3.5,4.5")
    ap.add_argument("--sample-study", action="store_true")
    args = ap.parse_args()
    args.model = real_model(args.model)
    if args.ecsq:
        ecsq_table(args.model, [float(b) for b in args.budgets.split(",")], args.objectives.split(","),
                   args.sentences, args.repeat)
        return
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, Python "
          f"{sys.version.split()[0]}; model {args.model} ({os.path.getsize(args.model):,} bytes)\n")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for bpw in [float(b) for b in args.budgets.split(",")]:
            budget = Budget("bpw", bpw)
            dry = plan_budget([args.model], budget, jobs=args.jobs)
            out = os.path.join(tmp, "planned.qnt.safetensors")
            t0 = time.perf_counter()
            real = quantize_budget([args.model], out, budget, jobs=args.jobs)
            total_s = time.perf_counter() - t0
            size = os.path.getsize(out)
            uni = best_single(args.model, bpw, uniform_settings(), tmp)
            any_spec = next(c for c in default_candidates() if candidate_label(c) == dry.baseline_any.label)
            r_any = quantize_file([args.model], os.path.join(tmp, "any.qnt.safetensors"), any_spec, jobs=2)
            any_fits = archive_bpw(os.path.join(tmp, "any.qnt.safetensors")) <= bpw
            rows.append((bpw, dry, real, size, total_s, uni, (dry.baseline_any.label, report_wsqnr(r_any), any_fits)))
            print(f"{bpw}: done", file=sys.stderr)
    print("| target bpw | planned bpw (file) | archive bytes (limit) | dry-run prediction | planned wSQNR est / "
          "measured | best single uniform (measured) | margin dB | best single candidate (measured) | "
          "planning s | plan+write s |")
    print("|---:|---:|---:|---|---:|---|---:|---|---:|---:|")
    for bpw, dry, real, size, total_s, uni, anyb in rows:
        exact = "exact" if size == dry.predicted_archive_bytes == real.plan.predicted_archive_bytes else \
            f"off by {size - dry.predicted_archive_bytes}"
        w = real.weighted_sqnr_db
        uni_txt = f"{uni[0]}: {uni[1]:.3f} dB, {uni[2]:.3f} bpw" if uni else "none fits"
        margin = f"{w - uni[1]:+.3f}" if uni else "-"
        print(f"| {bpw} | {8 * (size - dry.kept_array_bytes) / dry.quantized_elements:.4f} | {size:,} "
              f"({dry.limit_bytes:,}) | {exact} | {dry.weighted_sqnr_db:.3f} / {w:.3f} | {uni_txt} | {margin} | "
              f"{anyb[0]}: {anyb[1]:.3f} dB{'' if anyb[2] else ' (over budget)'} | {dry.planning_seconds:.1f} | "
              f"{total_s:.1f} |")
    print()
    for bpw, dry, real, *_ in rows:
        counts: dict[str, int] = {}
        for t in dry.tensors:
            if t.choice is not None:
                counts[t.choice.label] = counts.get(t.choice.label, 0) + 1
        print(f"{bpw} bpw plan: " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))
    if args.sample_study:
        print("\n| sample values | candidates | planning s | wSQNR est | wSQNR measured | est - measured |")
        print("|---:|---|---:|---:|---:|---:|")
        with tempfile.TemporaryDirectory() as tmp:
            for sample, level in ((16384, "default"), (SAMPLE, "default"), (262144, "default"), (SAMPLE, "fast"),
                                  (0, "default")):
                out = os.path.join(tmp, "s.qnt.safetensors")
                r = quantize_budget([args.model], out, Budget("bpw", 3.5), sample=sample,
                                    candidates=default_candidates(level), jobs=args.jobs)
                p = r.plan
                print(f"| {sample or 'whole tensors'} | {level} | {p.planning_seconds:.1f} | {p.weighted_sqnr_db:.3f} "
                      f"| {r.weighted_sqnr_db:.3f} | {p.weighted_sqnr_db - r.weighted_sqnr_db:+.3f} |", flush=True)


if __name__ == "__main__":
    main()
