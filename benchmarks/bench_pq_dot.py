"""LUT product vs dense float32 `Q @ W_hat.T` on a 4096x4096 matrix, all figures in one run.

Codes and codebooks are random (a trained codebook has the same layout and speed; training a
4096x4096 matrix at K = 256 takes minutes). Dense uses numpy's default BLAS threads; numba uses
its default threads. Each case runs rounds of (dense block, numba block, numpy block) so that
one backend's idle threads do not slow another's timing; the figure is the median of all reps.

    python benchmarks/bench_pq_dot.py [--size 4096] [--reps 9] [--rounds 3] [--threads N] [--json out.json]

`--threads N` caps both BLAS and numba at N threads (default: each library's own default). On a
shared, oversubscribed machine multi-threaded timings suffer scheduler stalls of whole time
slices; one-thread figures are the stable comparison of the two algorithms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

from quantcli import lut
from quantcli.methods.pq import PQCodes, pq_decode


def timed_block(fn, reps: int, budget_s: float) -> list[float]:
    """Times in ms of up to `reps` calls (fewer when a call is slow), after one warm-up call."""
    fn()
    times = []
    start = time.perf_counter()
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
        if time.perf_counter() - start > budget_s:
            break
    return times


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs, {cpu}, numpy {np.__version__}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", default="1,16,256")
    ap.add_argument("--cases", default="4:16,4:256,8:16,8:256", help="s:K pairs")
    ap.add_argument("--threads", type=int, help="cap BLAS and numba threads (default: library defaults)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if args.threads:
        from threadpoolctl import threadpool_limits
        threadpool_limits(args.threads)

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    import oracles  # the kernels' numpy twins: the "numpy" columns

    if args.threads:
        import numba
        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    rng = np.random.default_rng(0)
    n = d = args.size
    rows = []
    print(f"machine: {machine()}; LUT: numba kernels and their numpy twins (tests/oracles/lut.py); "
          f"threads: {args.threads or 'library defaults'}")
    print("| s | K | b | dense ms | numba ms | numba x dense | numpy ms | numpy x dense | max rel err |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case in args.cases.split(","):
        s, k = map(int, case.split(":"))
        m_sub = d // s
        pq = PQCodes(codebooks=rng.standard_normal((m_sub, k, s)).astype(np.float32),
                     codes=rng.integers(0, k, (n, m_sub)).astype(np.uint8 if k <= 256 else np.uint16), d=d)
        w_hat = pq_decode(pq)
        for b in map(int, args.batches.split(",")):
            q = rng.standard_normal((b, d)).astype(np.float32)
            ref = q @ w_hat.T
            err = 0.0
            for twin in (False, True):
                with oracles.swapped(*(("lut",) if twin else ())):
                    out = lut.lookup_dot(q, pq)
                err = max(err, float(np.abs(out - ref).max() / np.abs(ref).max()))
            t = {"dense": [], "numba": [], "numpy": []}
            for _ in range(args.rounds):
                t["dense"] += timed_block(lambda: q @ w_hat.T, args.reps, 3.0)
                t["numba"] += timed_block(lambda: lut.lookup_dot(q, pq), args.reps, 3.0)
                with oracles.swapped("lut"):
                    t["numpy"] += timed_block(lambda: lut.lookup_dot(q, pq), args.reps, 3.0)
            med = {key: float(np.median(v)) if v else float("nan") for key, v in t.items()}
            row = {"s": s, "K": k, "b": b, "dense_ms": med["dense"], "numba_ms": med["numba"],
                   "numpy_ms": med["numpy"], "numba_speedup": med["dense"] / med["numba"],
                   "numpy_speedup": med["dense"] / med["numpy"], "max_rel_err": err}
            rows.append(row)
            print(f"| {s} | {k} | {b} | {med['dense']:.2f} | {med['numba']:.2f} | {row['numba_speedup']:.2f}x "
                  f"| {med['numpy']:.2f} | {row['numpy_speedup']:.2f}x | {err:.1e} |", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine(), "size": args.size, "threads": args.threads, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
