"""1-D k-means speed and quality: quantcli's exact DP vs sklearn KMeans(n_init=1), K=16, 4096x4096.

    PYTHONPATH=. /work/venv/bin/python benchmarks/bench_kmeans.py [--repeats 3] [--sklearn-sample 1000000]

sklearn on all 16.8M values takes minutes; by default it runs on a seeded sample of
--sklearn-sample values (its time extrapolated linearly, which flatters it: Lloyd's cost per
iteration is linear in n) and its centroids are then scored on ALL values. --sklearn-full runs it
on everything, stopped after 300 s.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import numpy as np

from quantcli.methods.kmeans import assign_sorted, kmeans_1d


def sqnr(x: np.ndarray, codebook: np.ndarray) -> float:
    cb = np.sort(codebook.astype(np.float32))
    codes = assign_sorted(x.reshape(1, -1), cb[None, :])[0]
    err = x.reshape(-1).astype(np.float64) - cb[codes]
    return 10 * np.log10((x.astype(np.float64) ** 2).sum() / (err * err).sum())


def _sk(values, out):
    from sklearn.cluster import KMeans
    t = time.perf_counter()
    km = KMeans(16, n_init=1, random_state=0).fit(values.reshape(-1, 1))
    out.put((time.perf_counter() - t, km.cluster_centers_.ravel()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sklearn-sample", type=int, default=1_000_000)
    ap.add_argument("--sklearn-full", action="store_true")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4096, 4096)) * 0.02).astype(np.float32)
    flat = x.reshape(1, -1)
    times = []
    for _ in range(a.repeats):
        t = time.perf_counter()
        cb = kmeans_1d(flat, 16, seed=0)[0]
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    assign_sorted(flat, cb[None, :].astype(np.float32))
    t_assign = time.perf_counter() - t
    print(f"quantcli kmeans_1d (fit): median {np.median(times):.3f} s over {a.repeats} "
          f"({', '.join(f'{v:.3f}' for v in times)}); assignment {t_assign:.3f} s; SQNR {sqnr(x, cb):.4f} dB")
    n = x.size if a.sklearn_full else min(a.sklearn_sample, x.size)
    sample = x.reshape(-1)[rng.choice(x.size, n, replace=False)] if n < x.size else x.reshape(-1)
    q: mp.Queue = mp.Queue()
    proc = mp.Process(target=_sk, args=(sample.astype(np.float32), q))
    proc.start()
    proc.join(300)
    if proc.is_alive():
        proc.terminate()
        proc.join()
        print(f"sklearn KMeans(n_init=1) on {n} values: > 5 min (stopped)")
        return
    t_sk, centers = q.get()
    extra = "" if n == x.size else f" (on a {n}-value sample; x{x.size / n:.1f} extrapolated: {t_sk * x.size / n:.1f} s)"
    print(f"sklearn KMeans(n_init=1) fit: {t_sk:.2f} s{extra}; SQNR on all values {sqnr(x, centers):.4f} dB")


if __name__ == "__main__":
    main()
