"""Throughput of the compiled kernels, one core: the DQ trellis, crans and rans, in MB/s of float32 input.

    python benchmarks/bench_kernels.py [--rows 1024 --cols 1024] [--rounds 5] [--against /path/to/tree:python]

Input: a deterministic Laplace-distributed float32 matrix (weights-like tails), step 0.05 (about
30 dB SQNR). Each kernel is timed through its public function (what ecsq's encode and decode
call), after one warm-up call that compiles or loads it from the cache:
  trellis        dq.trellis(x, step, 0): the distortion-only pass
  trellis+price  dq.trellis(x, step, lam, prices, offset): a re-priced pass (order-0 prices)
  crans enc/dec  context.encode(codes, alphabet, offset, dq=True) / context.decode
  (loops)        the compiled loops alone, without the model choice in Python: the context walk
                 and the coder for encode, the decoder for decode (old trees: the same loops as
                 closures in codecs/context_kernels.py)
  rans enc/dec   entropy.encode(codes, alphabet) / entropy.decode
MB/s = 4 * rows * cols / 1e6 / CPU seconds of the process (float32 input, whatever the kernel
reads; single-threaded kernels, so CPU time is the time one core spends).

--against TREE:PYTHON measures another checkout (e.g. main before a change) side by side: every
round runs one worker process per tree, alternating, and the report gives each kernel's median
over the rounds and the ratio. The numbers and codes of both trees must be identical (checked).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNELS = ("trellis", "trellis+price", "crans enc", "crans enc (loops)", "crans dec", "crans dec (loop)",
           "rans enc", "rans dec")


def worker(rows: int, cols: int, reps: int) -> dict:
    """Times of each kernel (the best of `reps` calls) in this process, and digests of its outputs."""
    import numpy as np

    from quantcli.codecs import context, entropy
    from quantcli.methods import dq

    rng = np.random.default_rng(18)
    x = rng.laplace(0.0, 1.0, (rows, cols)).astype(np.float32)
    step = 0.05
    k = dq.trellis(x, step, 0.0)
    prices, lo = dq.order0_prices(k)
    lam = 0.1 * step * step
    offset = -int(k.min())
    codes = (k.astype(np.int64) + offset).astype(np.uint16)
    alphabet = int(codes.max()) + 1
    blob = context.encode(codes, alphabet, -offset, dq=True)
    rblob, rparams = entropy.encode(codes, alphabet)
    loops = _crans_loops(context, codes, alphabet, -offset, blob, rows, cols)
    calls = {
        "trellis": lambda: dq.trellis(x, step, 0.0),
        "trellis+price": lambda: dq.trellis(x, step, lam, prices, offset=lo),
        "crans enc": lambda: context.encode(codes, alphabet, -offset, dq=True),
        "crans enc (loops)": loops[0],
        "crans dec": lambda: context.decode(blob, rows, cols),
        "crans dec (loop)": loops[1],
        "rans enc": lambda: entropy.encode(codes, alphabet),
        "rans dec": lambda: entropy.decode(rblob, rparams, codes.size),
    }
    out: dict = {"seconds": {}, "digest": {}}
    for name, fn in calls.items():
        res = fn()  # warm-up: compile or load from the cache
        times = []
        for _ in range(reps):
            t0 = time.process_time()  # CPU time: the machine is shared, wall time measures the others too
            fn()
            times.append(time.process_time() - t0)
        out["seconds"][name] = min(times)
        data = res[0] if isinstance(res, tuple) else res
        out["digest"][name] = hashlib.sha256(np.asarray(data).tobytes() if not isinstance(data, bytes)
                                             else data).hexdigest()[:16]
    return out


def _crans_loops(context, codes, alphabet, offset, blob, rows, cols):
    """(encode loops, decode loop) of crans as closures over prepared inputs, for this tree's kernels."""
    import numpy as np

    cfg = context.choose_config(codes, alphabet, offset, True)
    split, rho, buckets, base = cfg
    nctx = context.n_contexts(split, buckets)
    kt = np.ascontiguousarray(codes.T)
    n = codes.size
    ctx = np.empty(n, np.uint8)
    cnt = np.zeros((nctx, alphabet), np.int64)
    try:
        from quantcli.kernels import crans as k
        new = True
    except ImportError:
        from quantcli.codecs import context_kernels
        kk = context_kernels._load_numba()
        new = False
    walk = k.walk if new else kk["walk"]
    walk(kt, offset, split, rho, buckets, base, ctx, cnt)
    freq = np.zeros((nctx, alphabet), np.uint64)
    prec = np.zeros(nctx, np.int64)
    for c in range(nctx):
        p, f, _ = context.choose_table(cnt[c])
        if f is not None:
            freq[c], prec[c] = f, p
    cum = (np.cumsum(freq, axis=1) - freq).astype(np.uint64)
    lanes = 8
    words, states = np.empty(n + lanes, np.uint32), np.empty(lanes, np.uint64)
    sym = kt.reshape(-1)
    enc = k.encode if new else kk["enc"]

    def encode_loops():
        walk(kt, offset, split, rho, buckets, base, ctx, np.zeros((nctx, alphabet), np.int64))
        return words[:enc(sym, ctx, freq, cum, prec, lanes, words, states)].tobytes()

    nw = enc(sym, ctx, freq, cum, prec, lanes, words, states)
    stream = np.concatenate([words[:nw][::-1], np.zeros(1, np.uint32)])
    fi = freq.astype(np.int64)
    width = np.where(prec > 0, 1 << prec, 0)
    start = np.cumsum(width) - width
    slot2sym = np.repeat(np.tile(np.arange(alphabet, dtype=np.uint16), nctx), fi.reshape(-1))
    if new:
        fc = (fi | (cum.astype(np.int64) << 16)).astype(np.uint32)
        out = np.empty((rows, cols), np.uint16)
        if k.decode.py_func.__code__.co_argcount == 13:  # sparse tables: each context's span, here all
            fbase = np.arange(nctx, dtype=np.int64) * alphabet
            slot2idx = np.repeat(np.arange(nctx * alphabet, dtype=np.int32), fi.reshape(-1))
            args = (stream, states.copy(), fc.reshape(-1), fbase, prec, slot2idx, start, offset, split, rho,
                    buckets, base, out)
        else:
            args = (stream, states.copy(), fc, prec, slot2sym, start, offset, split, rho, buckets, base, out)
        dec = k.decode
    else:
        out = np.empty((cols, rows), np.uint16)
        args = (stream, states.copy(), freq, cum, prec, slot2sym, start, offset, split, rho, buckets, base, out)
        dec = kk["dec"]
    assert dec(*args) == 0 and np.array_equal(out if new else out.T, codes)
    def decode_loop():
        dec(*args)
        return (out if new else out.T).tobytes()

    return encode_loops, decode_loop


def machine() -> str:
    model = "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"


def run_worker(tree: str, python: str, args) -> dict:
    env = dict(os.environ, PYTHONPATH=tree, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    cmd = [python, os.path.abspath(__file__), "--worker", "--rows", str(args.rows), "--cols", str(args.cols),
           "--reps", str(args.reps)]
    r = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--cols", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=5, help="worker processes per tree (medians over them)")
    ap.add_argument("--reps", type=int, default=3, help="calls per kernel in a worker (best of)")
    ap.add_argument("--against", help="TREE:PYTHON of a checkout to measure side by side (e.g. main)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.rows, args.cols, args.reps)))
        return
    trees = [("this", ROOT, sys.executable)]
    if args.against:
        tree, _, python = args.against.partition(":")
        trees.insert(0, ("other", os.path.abspath(tree), python or sys.executable))
    runs: dict[str, list[dict]] = {label: [] for label, _, _ in trees}
    for _ in range(args.rounds):
        for label, tree, python in trees:  # interleaved: the shared machine's load hits both alike
            runs[label].append(run_worker(tree, python, args))
    mb = 4 * args.rows * args.cols / 1e6
    print(f"machine: {machine()}; input {args.rows}x{args.cols} float32 ({mb:.2f} MB); "
          f"medians of {args.rounds} processes, best of {args.reps} calls each")
    head = "| kernel | " + " | ".join(f"{label} MB/s" for label, _, _ in trees)
    print(head + (" | ratio | same output |" if len(trees) == 2 else " |"))
    print("|---" * (len(trees) + (3 if len(trees) == 2 else 1)) + "|")
    for name in KERNELS:
        med = [mb / statistics.median(r["seconds"][name] for r in runs[label]) for label, _, _ in trees]
        cells = " | ".join(f"{v:.1f}" for v in med)
        if len(trees) == 2:
            same = runs["other"][0]["digest"][name] == runs["this"][0]["digest"][name]
            print(f"| {name} | {cells} | {med[1] / med[0]:.2f}x | {same} |")
        else:
            print(f"| {name} | {cells} |")


if __name__ == "__main__":
    main()
