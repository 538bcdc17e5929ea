"""Codec candidates on all-MiniLM-L6-v2: entropy coders for integer codes, lossless float codecs.

Integer codes: round(W / step) over the 2-D float32 weights, one global step per target entropy
(2, 3, 4, 7 bits/code), shifted per tensor to start at 0 and coded per tensor (order-0 statistics
per tensor, the way a quantizer would store them). Floats: every float32 tensor of the model, as
is, as a bfloat16 copy (ml_dtypes) and as a float16 copy, coded per tensor.

Times are medians of --repeat runs of the whole model, as process CPU time (the machine is shared:
CPU time is what one core of this process spent) and as wall time. Run from the repository:
    .venv/bin/python benchmarks/bench_codecs.py [--repeat 5] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import ml_dtypes
import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import real_model  # noqa: E402

from quantcli.codecs import entropy, lossless  # noqa: E402

STEPS = {2: 0.06168, 3: 0.02979, 4: 0.014762, 7: 0.0018396}  # global steps found by bisection


def timed(fn, repeat):
    """(last result, median CPU seconds, median wall seconds)."""
    cpu, wall, out = [], [], None
    for _ in range(repeat):
        c, w = time.process_time(), time.perf_counter()
        out = fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return out, float(np.median(cpu)), float(np.median(wall))


def entropy_bits(x: np.ndarray) -> float:
    """Empirical order-0 entropy of x, in bits (total, not per symbol)."""
    counts = np.bincount(x.reshape(-1).astype(np.int64))
    p = counts[counts > 0] / x.size
    return float(-(counts[counts > 0] * np.log2(p)).sum())


def int_schemes(repeat, quick):
    import zstandard

    try:
        import constriction  # candidate only, not a dependency: `pip install constriction`
    except ImportError:
        constriction = None

    def ours(codes, repeat=repeat):
        enc, ce, we = timed(lambda: [entropy.encode(c, int(c.max()) + 1 if c.max() else 2) for c in codes], repeat)
        dec, cd, wd = timed(lambda: [entropy.decode(d, p, c.size) for (d, p), c in zip(enc, codes)], repeat)
        assert all(np.array_equal(a, c.reshape(-1)) for a, c in zip(dec, codes))
        return sum(len(d) for d, _ in enc), ce, we, cd, wd

    def ours_numpy(codes):
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
        import oracles  # the kernels' numpy twins

        with oracles.swapped("rans"):
            return ours(codes, repeat=1)  # slow: one run

    def constriction_ans(codes):
        def enc():
            out = []
            for c in codes:
                counts = np.bincount(c.reshape(-1)).astype(np.float64)
                model = constriction.stream.model.Categorical(counts / counts.sum(), perfect=False)
                coder = constriction.stream.stack.AnsCoder()
                coder.encode_reverse(c.reshape(-1).astype(np.int32), model)
                out.append((coder.get_compressed(), model, counts))
            return out
        enc_out, ce, we = timed(enc, repeat)
        dec, cd, wd = timed(lambda: [constriction.stream.stack.AnsCoder(w).decode(m, c.size) for (w, m, _), c in zip(enc_out, codes)], repeat)
        assert all(np.array_equal(a, c.reshape(-1)) for a, c in zip(dec, codes))
        # words, plus a 16-bit count per symbol of the span as a (generous) model cost
        return sum(w.nbytes + 2 * cnt.size for w, _, cnt in enc_out), ce, we, cd, wd

    def zstd_level(level):
        def run(codes):
            cctx, dctx = zstandard.ZstdCompressor(level=level), zstandard.ZstdDecompressor()
            raws = [c.astype(np.uint8 if c.max() < 256 else np.uint16).tobytes() for c in codes]
            r = 1 if level >= 9 else repeat
            comp, ce, we = timed(lambda: [cctx.compress(x) for x in raws], r)
            _, cd, wd = timed(lambda: [dctx.decompress(x) for x in comp], repeat)
            return sum(map(len, comp)), ce, we, cd, wd
        return run

    schemes = {"rans (ours, numba)": ours, "rans (ours, numpy)": ours_numpy, "constriction ANS": constriction_ans,
               "zstd -1": zstd_level(1), "zstd -3": zstd_level(3)}
    if constriction is None:
        del schemes["constriction ANS"]
    if not quick:
        schemes["zstd -9"] = zstd_level(9)
    return schemes


def bench_ints(weights, repeat, quick):
    mats = [w for w in weights.values() if w.ndim == 2 and w.dtype == np.float32]
    print("\n## Integer codes: bits/code vs order-0 entropy (per tensor), speed in M codes/s\n")
    print("| entropy | scheme | bits/code | overhead vs entropy | enc Mc/s cpu (wall) | dec Mc/s cpu (wall) |")
    print("|---|---|---|---|---|---|")
    schemes = int_schemes(repeat, quick)
    for bits, step in STEPS.items():
        codes = []
        for w in mats:
            c = np.rint(w / step).astype(np.int64)
            codes.append((c - c.min()).astype(np.uint16))
        n = sum(c.size for c in codes)
        ent = sum(entropy_bits(c) for c in codes)
        for name, fn in schemes.items():
            if name.endswith("numpy)") and quick:
                continue
            size, ce, we, cd, wd = fn(codes)
            b = 8 * size / n
            print(f"| {ent / n:.3f} | {name} | {b:.4f} | {100 * (8 * size / ent - 1):+.2f}% | "
                  f"{n / ce / 1e6:.0f} ({n / we / 1e6:.0f}) | {n / cd / 1e6:.0f} ({n / wd / 1e6:.0f}) |", flush=True)


def rot_planes(a):
    k = a.dtype.itemsize
    return lossless.byte_planes(a, "rotl1")[0] if k > 1 else a.view(np.uint8)[None]


def float_schemes():
    import zstandard

    c1, dctx = zstandard.ZstdCompressor(level=1), zstandard.ZstdDecompressor()

    def whole_zstd(arrs):
        return [c1.compress(a.tobytes()) for a in arrs], lambda enc: [dctx.decompress(x) for x in enc]

    def planes_zstd(arrs):
        enc = []
        for a in arrs:
            parts = []
            for p in rot_planes(a):
                z = c1.compress(p.tobytes())
                parts.append(z if len(z) < p.size else p.tobytes())
            enc.append(parts)
        return enc, lambda e: [[dctx.decompress(x) if len(x) < a.size else x for x in parts] for parts, a in zip(e, arrs)]

    def exp_rans_rest_raw(arrs):
        enc = []
        for a in arrs:
            pl = rot_planes(a)
            enc.append([entropy.encode(pl[-1], 256)] + [p.tobytes() for p in pl[:-1]])
        return enc, lambda e: [entropy.decode(parts[0][0], parts[0][1], a.size) for parts, a in zip(e, arrs)]

    def ours(arrs):
        enc = [lossless.encode(a) for a in arrs]
        return enc, lambda e: [lossless.decode(d, p, a.dtype, a.size) for (d, p), a in zip(e, arrs)]

    def ours_no_zstd(arrs):
        saved, lossless.zstandard = lossless.zstandard, None
        try:
            return ours(arrs)
        finally:
            lossless.zstandard = saved

    return {"zstd -1 whole array": whole_zstd, "rotl1 byte planes, zstd -1 each (raw if larger)": planes_zstd,
            "rotl1 exponent plane rANS, rest raw (no merge)": exp_rans_rest_raw,
            "lossless codec (ours)": ours, "lossless codec without zstd planes": ours_no_zstd}


def size_of(enc):
    total = 0
    for e in enc:
        if isinstance(e, (bytes, bytearray)):
            total += len(e)
        elif isinstance(e, tuple):
            total += len(e[0])
        else:
            total += size_of(e)
    return total


def bench_floats(weights, repeat):
    tensors = [w for w in weights.values() if w.dtype == np.float32]
    print("\n## Lossless floats: stored / original size, speed in MB/s of original\n")
    print("| copy | scheme | ratio | order-0 bound | enc MB/s cpu (wall) | dec MB/s cpu (wall) |")
    print("|---|---|---|---|---|---|")
    for label, conv in (("float32", lambda a: a), ("bfloat16", lambda a: a.astype(ml_dtypes.bfloat16)),
                        ("float16", lambda a: a.astype(np.float16))):
        arrs = [conv(t) for t in tensors]
        total = sum(a.nbytes for a in arrs)
        bound = sum(entropy_bits(p) for a in arrs for p in rot_planes(a)) / 8 / total
        for name, fn in float_schemes().items():
            (enc, dec_fn), ce, we = timed(lambda: fn(arrs), repeat)
            out, cd, wd = timed(lambda: dec_fn(enc), repeat)
            if name.startswith("lossless"):
                assert all(np.array_equal(o.view(np.uint8), a.reshape(-1).view(np.uint8)) for o, a in zip(out, arrs))
            size = size_of(enc if not name.startswith("lossless") else [d for d, _ in enc])
            print(f"| {label} | {name} | {size / total:.4f} | {bound:.4f} | {total / ce / 1e6:.0f} ({total / we / 1e6:.0f}) | "
                  f"{total / cd / 1e6:.0f} ({total / wd / 1e6:.0f}) |", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="skip zstd -9 and the numpy rANS path")
    ap.add_argument("--only", choices=("ints", "floats"))
    args = ap.parse_args()
    from importlib.metadata import PackageNotFoundError, version

    import numba
    import zstandard

    try:
        cver = version("constriction")
    except PackageNotFoundError:
        cver = "not installed"
    print(f"python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
          f"zstandard {zstandard.__version__} (libzstd {'.'.join(map(str, zstandard.ZSTD_VERSION))}), "
          f"constriction {cver}, {platform.machine()}, {os.cpu_count()} cpus, "
          f"load {os.getloadavg()[0]:.1f}")
    weights = load_file(real_model())
    entropy.decode(*entropy.encode(np.arange(4096) % 7, 8), 4096)  # compile the kernels outside the timing
    lossless.decode(*lossless.encode(np.zeros(4, np.float32)), np.float32, 4)
    for dt in (np.float16, ml_dtypes.bfloat16, np.float64):
        lossless.decode(*lossless.encode(np.zeros(4, dt)), dt, 4)
    if args.only != "floats":
        bench_ints(weights, args.repeat, args.quick)
    if args.only != "ints":
        bench_floats(weights, args.repeat)


if __name__ == "__main__":
    main()
