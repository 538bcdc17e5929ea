"""PQ quality on all-MiniLM-L6-v2: SQNR, bits per weight (codes + codebooks, all stored bytes)
and encode time, for s = 2, 4, 8 and K = 16, 256, over every float tensor with ndim >= 2.

    python benchmarks/bench_pq_quality.py [--model PATH] [--subdims 2,4,8] [--centroids 16,256]
        [--codebook-dtype auto|float16] [--json out.json]

SQNR is over the whole model: 10 log10(sum x^2 / sum (x - x_hat)^2) summed over the tensors.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from safetensors.numpy import load_file

from quantcli.archive.storage import store
from quantcli.methods import get_method
import quantcli.methods.pq  # noqa: F401  (registers the pq method)
from quantcli.spec import Spec

from common import MODEL as DEFAULT_MODEL, real_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--subdims", default="2,4,8")
    ap.add_argument("--centroids", default="16,256")
    ap.add_argument("--codebook-dtype", default="auto", choices=["auto", "float32", "float16"])
    ap.add_argument("--iters", type=int, default=25)
    ap.add_argument("--json")
    args = ap.parse_args()
    args.model = real_model(args.model)

    tensors = {k: v.astype(np.float32) for k, v in load_file(args.model).items()
               if v.ndim >= 2 and np.issubdtype(v.dtype, np.floating)}
    weights = sum(v.size for v in tensors.values())
    print(f"{len(tensors)} tensors, {weights} weights ({args.model})")
    print("| s | K | SQNR dB | bits/weight | codes bits/w | codebook bits/w | encode s |")
    print("|---|---|---|---|---|---|---|")
    pq = get_method("pq")
    rows = []
    for s in map(int, args.subdims.split(",")):
        for k in map(int, args.centroids.split(",")):
            spec = Spec(method="pq", subvector_dim=s, centroids=k, iters=args.iters, seed=0,
                        scale_dtype=args.codebook_dtype)
            signal = noise = 0.0
            code_bytes = book_bytes = 0
            start = time.perf_counter()
            for x in tensors.values():
                enc, err = pq.encode_measured(x, spec)
                signal += err.signal
                noise += err.error
                stored, _ = store(enc, x.shape)  # codes as the archive holds them: bit-packed
                code_bytes += stored["codes"].nbytes
                book_bytes += stored["codebooks"].nbytes
            secs = time.perf_counter() - start
            row = {"s": s, "K": k, "sqnr_db": 10 * np.log10(signal / noise),
                   "bits_per_weight": (code_bytes + book_bytes) * 8 / weights,
                   "code_bpw": code_bytes * 8 / weights, "codebook_bpw": book_bytes * 8 / weights,
                   "encode_s": secs}
            rows.append(row)
            print(f"| {s} | {k} | {row['sqnr_db']:.2f} | {row['bits_per_weight']:.3f} | {row['code_bpw']:.3f} "
                  f"| {row['codebook_bpw']:.3f} | {secs:.1f} |", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"model": args.model, "weights": weights, "codebook_dtype": args.codebook_dtype,
                       "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
