"""The shared vector k-means (vq and pq) against the two engines it replaced, and against
scikit-learn, on all-MiniLM-L6-v2.

    python benchmarks/bench_vector_kmeans.py [--tensors layer0|all] [--repeats 3] [--slow-repeats 1]
        [--old-ref c89760d] [--no-engines] [--no-sklearn] [--seeds 5]

Engines: the old vq and pq trainers are loaded from git (`git show OLD_REF:quantcli/methods/...`),
so old and new run side by side in one process on the same tensors; settings alternate old/new
inside each repeat and times are medians. SQNR = 10 log10(sum x^2 / sum err^2) over the tensor
set, with float32 codebooks (what vq's and pq's `auto` store). vq 12-bit (K = 4096) is slow, so it
runs --slow-repeats times.

sklearn: the same problems as the trainer sees them. vq-shaped: the 4-D sub-vectors of one
1536x384 matrix, K = 256, every method fitted on the trainer's own 256*K-row sample. pq-shaped:
the 96 four-wide subspaces of that matrix, K = 16 and 256, sklearn fitted once per subspace (as a
runtime user would). Error = SQNR of all sub-vectors assigned to the fitted centroids; times and
SQNRs are medians over --seeds seeds.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
import types

import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import MODEL, ROOT, real_model  # noqa: E402

import quantcli.methods.vq as new_vq  # noqa: E402
import quantcli.methods.pq as new_pq  # noqa: E402
from quantcli.methods import vector_kmeans as vk  # noqa: E402

PROBE = "encoder.layer.0.intermediate.dense.weight"  # 1536 x 384


def load_old(ref: str, path: str) -> types.ModuleType:
    """The module at `path` as of git `ref`, imported under a private name (not registered)."""
    src = subprocess.run(["git", "-C", ROOT, "show", f"{ref}:{path}"], capture_output=True, text=True,
                         check=True).stdout.replace("@register\n", "")
    name = "quantcli.methods._old_" + os.path.basename(path)[:-3]
    mod = types.ModuleType(name)
    mod.__package__ = "quantcli.methods"
    sys.modules[name] = mod
    exec(compile(src, f"{ref}:{path}", "exec"), mod.__dict__)
    return mod


def vq_recon(mod, x: np.ndarray, dim: int, bits: int) -> np.ndarray:
    """vq's encode math with `mod`'s trainer: pad rows, train on the pieces, assign, rebuild."""
    rows, cols = x.shape[0], x.size // x.shape[0]
    pad = (-cols) % dim
    m = np.concatenate([x.reshape(rows, cols), np.zeros((rows, pad), np.float32)], axis=1)
    vectors = np.ascontiguousarray(m).reshape(-1, dim)
    c = mod.vq_train(vectors, 2**bits, 25, 0).astype(np.float32)
    idx, _ = mod._nearest(vectors, c)
    return c[idx].reshape(rows, cols + pad)[:, :cols].reshape(x.shape)


def pq_recon(mod, x: np.ndarray, s: int, k: int) -> np.ndarray:
    return mod.pq_decode(mod.pq_encode(x, subvector_dim=s, centroids=k, iters=25, seed=0), x.shape)


def sqnr(xs: list[np.ndarray], rs: list[np.ndarray]) -> float:
    sig = sum(float(np.sum(x.astype(np.float64) ** 2)) for x in xs)
    err = sum(float(np.sum((x.astype(np.float64) - r) ** 2)) for x, r in zip(xs, rs))
    return 10 * np.log10(sig / err)


def engines(tensors: dict[str, np.ndarray], ref: str, repeats: int, slow_repeats: int) -> None:
    old_vq = load_old(ref, "quantcli/methods/kmeans.py")
    old_pq = load_old(ref, "quantcli/methods/pq.py")
    xs = list(tensors.values())
    settings = [("vq d4 8-bit (K=256)", vq_recon, (old_vq, new_vq), (4, 8), repeats),
                ("vq d4 12-bit (K=4096)", vq_recon, (old_vq, new_vq), (4, 12), slow_repeats),
                ("pq s4 K=16", pq_recon, (old_pq, new_pq), (4, 16), repeats),
                ("pq s4 K=256", pq_recon, (old_pq, new_pq), (4, 256), repeats),
                ("pq s8 K=16", pq_recon, (old_pq, new_pq), (8, 16), repeats),
                ("pq s8 K=256", pq_recon, (old_pq, new_pq), (8, 256), repeats)]
    print("| setting | old SQNR dB | new SQNR dB | diff dB | old s | new s | new/old time |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, fn, mods, args, reps in settings:
        times: dict[int, list[float]] = {0: [], 1: []}
        quality = {}
        for _ in range(reps):
            for which, mod in enumerate(mods):
                t = time.perf_counter()
                rs = [fn(mod, x, *args) for x in xs]
                times[which].append(time.perf_counter() - t)
                quality[which] = sqnr(xs, rs)
        to, tn = statistics.median(times[0]), statistics.median(times[1])
        print(f"| {label} | {quality[0]:.4f} | {quality[1]:.4f} | {quality[1] - quality[0]:+.4f} "
              f"| {to:.2f} | {tn:.2f} | {tn / to:.2f} |", flush=True)


def sklearn_compare(x: np.ndarray, seeds: int) -> None:
    from sklearn.cluster import KMeans, MiniBatchKMeans

    def score(vectors: np.ndarray, centres: np.ndarray) -> float:
        _, d = vk.nearest(vectors, centres.astype(np.float32))
        return 10 * np.log10(float(np.sum(vectors.astype(np.float64) ** 2)) / float(np.sum(d, dtype=np.float64)))

    vectors = np.ascontiguousarray(x.reshape(-1, 4))
    cube = x.reshape(x.shape[0], -1, 4)
    print("| problem | method | median SQNR dB | median fit s | time / ours |")
    print("|---|---|---:|---:|---:|")
    problems = [("vq-shaped: 147456 x 4, K=256", "vq", 256), ("pq-shaped: 96 subspaces of 1536 x 4, K=16", "pq", 16),
                ("pq-shaped: 96 subspaces of 1536 x 4, K=256", "pq", 256)]
    for label, kind, k in problems:
        runs: dict[str, list[tuple[float, float]]] = {}
        for seed in range(seeds):
            if kind == "vq":
                rows = vk.train_rows(len(vectors), k, seed)
                sample = vectors if rows is None else vectors[rows]
                fits = {
                    "ours (vector_kmeans)": lambda: new_vq.vq_train(vectors, k, 25, seed),
                    "sklearn KMeans n_init=1 max_iter=25": lambda: KMeans(k, n_init=1, max_iter=25, random_state=seed).fit(sample).cluster_centers_,
                    "sklearn KMeans n_init=1 (max_iter=300)": lambda: KMeans(k, n_init=1, random_state=seed).fit(sample).cluster_centers_,
                    "sklearn MiniBatchKMeans batch 4096": lambda: MiniBatchKMeans(k, batch_size=4096, n_init=1, random_state=seed).fit(sample).cluster_centers_,
                }
                for name, fit in fits.items():
                    t = time.perf_counter()
                    c = fit()
                    runs.setdefault(name, []).append((score(vectors, c), time.perf_counter() - t))
            else:
                fits = {
                    "ours (vector_kmeans)": lambda: vk.train_subspaces(cube, k, 25, seed, labels=False)[0],
                    "sklearn KMeans n_init=1 max_iter=25": lambda: np.stack([KMeans(k, n_init=1, max_iter=25, random_state=seed).fit(cube[:, m]).cluster_centers_ for m in range(cube.shape[1])]),
                    "sklearn MiniBatchKMeans batch 1024": lambda: np.stack([MiniBatchKMeans(k, batch_size=1024, n_init=1, random_state=seed).fit(cube[:, m]).cluster_centers_ for m in range(cube.shape[1])]),
                }
                for name, fit in fits.items():
                    t = time.perf_counter()
                    books = fit()
                    secs = time.perf_counter() - t
                    err = sum(float(np.sum(vk.assign(np.ascontiguousarray(cube[:, m])[None], books[m][None].astype(np.float32))[1], dtype=np.float64))
                              for m in range(cube.shape[1]))
                    runs.setdefault(name, []).append((10 * np.log10(float(np.sum(x.astype(np.float64) ** 2)) / err), secs))
        ours = statistics.median(t for _, t in runs["ours (vector_kmeans)"])
        for name, r in runs.items():
            q, t = statistics.median(v for v, _ in r), statistics.median(v for _, v in r)
            print(f"| {label} | {name} | {q:.4f} | {t:.2f} | {t / ours:.2f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--tensors", choices=["layer0", "all"], default="layer0")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--slow-repeats", type=int, default=1)
    ap.add_argument("--old-ref", default="c89760d")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--no-engines", action="store_true")
    ap.add_argument("--no-sklearn", action="store_true")
    a = ap.parse_args()
    model = {k: v.astype(np.float32) for k, v in load_file(real_model(a.model)).items()
             if v.ndim >= 2 and np.issubdtype(v.dtype, np.floating)}
    tensors = model if a.tensors == "all" else {k: v for k, v in model.items() if k.startswith("encoder.layer.0.")}
    import sklearn
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; python {platform.python_version()}, "
          f"numpy {np.__version__}, scikit-learn {sklearn.__version__}")
    print(f"{len(tensors)} tensors, {sum(v.size for v in tensors.values())} weights ({a.tensors}); old engines from {a.old_ref}")
    if not a.no_engines:
        engines(tensors, a.old_ref, a.repeats, a.slow_repeats)
    if not a.no_sklearn:
        sklearn_compare(model[PROBE], a.seeds)


if __name__ == "__main__":
    main()
