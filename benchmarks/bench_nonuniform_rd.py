"""Rate-distortion of the 4-bit settings on all-MiniLM-L6-v2 (every float tensor with ndim >= 2).

    PYTHONPATH=. /work/venv/bin/python benchmarks/bench_nonuniform_rd.py [--model PATH] [--quick]

Overall SQNR = 10 log10(sum x^2 / sum (x - x_hat)^2) over all those tensors; bits per weight =
8 * (bytes of every stored array: codes, scales, zero points, codebooks) / weights. Each setting is
compared with the uniform asymmetric 4-bit curve (groups 32, 64, 128) interpolated linearly in
bits per weight (extrapolated from the nearest segment outside it). Uniform with --scale-search
rows appear only when uniform_quantize accepts scale_search (after the lead applies
docs/patches/uniform-scale-search.patch).
"""

from __future__ import annotations

import argparse
import inspect
import time

import numpy as np
from safetensors.numpy import load_file

from quantcli.archive.storage import stored_nbytes
from quantcli.methods import get_method
from quantcli.methods import kmeans as _km  # noqa: F401  (registers kmeans, vq)
from quantcli.methods import levels as _lv  # noqa: F401  (registers log, nf)
from quantcli.methods.uniform import uniform_quantize
from quantcli.spec import Spec

from common import MODEL, real_model  # noqa: E402


def run(tensors, method: str, normalize: str | None = None, **opts):
    m = get_method(method)
    spec = Spec(method=method, **opts)
    sx = se = 0.0
    nbytes = n = 0
    t = time.perf_counter()
    for x in tensors:
        enc = m.encode(x, spec.with_options(normalize=normalize) if normalize else spec)
        recon = m.decode(enc, x.shape)
        d = x.astype(np.float64) - recon
        sx += float((x.astype(np.float64) ** 2).sum())
        se += float((d * d).sum())
        nbytes += stored_nbytes(enc, x.shape)  # as the archive stores it (codes bit-packed)
        n += x.size
    return 8 * nbytes / n, 10 * np.log10(sx / se), time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--quick", action="store_true", help="skip the slow per-channel and vq rows")
    a = ap.parse_args()
    a.model = real_model(a.model)
    tensors = [v.astype(np.float32) for v in load_file(a.model).values()
               if v.ndim >= 2 and np.issubdtype(v.dtype, np.floating)]
    print(f"{len(tensors)} tensors, {sum(t.size for t in tensors)} weights")
    rows = []
    curve = []
    for g in (32, 64, 128):
        r = run(tensors, "uniform", bits=4, scheme="asymmetric", granularity="group", group_size=g)
        curve.append(r[:2])
        rows.append((f"uniform asym 4-bit g{g}", *r))
    if "scale_search" in inspect.signature(uniform_quantize).parameters:
        for g in (32, 64, 128):
            rows.append((f"uniform asym 4-bit g{g} --scale-search",
                         *run(tensors, "uniform", bits=4, scheme="asymmetric", granularity="group", group_size=g,
                              scale_search=True)))
    settings = [
        ("nf 4-bit g64", "nf", None, dict(granularity="group", group_size=64)),
        ("nf 4-bit g64 --scale-search", "nf", None, dict(granularity="group", group_size=64, scale_search=True)),
        ("nf 4-bit g32", "nf", None, dict(granularity="group", group_size=32)),
        ("nf 4-bit g128", "nf", None, dict(granularity="group", group_size=128)),
        ("log 4-bit g64", "log", None, dict(granularity="group", group_size=64)),
        ("log 4-bit g64 --scale-search", "log", None, dict(granularity="group", group_size=64, scale_search=True)),
        ("kmeans 4-bit normalize=group g32", "kmeans", "group", dict(group_size=32)),
        ("kmeans 4-bit normalize=group g64", "kmeans", "group", dict(group_size=64)),
        ("kmeans 4-bit normalize=group g128", "kmeans", "group", dict(group_size=128)),
        ("kmeans 4-bit tensor", "kmeans", None, dict(granularity="tensor")),
        ("kmeans 4-bit row groups of 128", "kmeans", None, dict(granularity="group", group_size=128)),
        ("kmeans 4-bit row groups of 16", "kmeans", None, dict(granularity="group", group_size=16)),
    ]
    if not a.quick:
        settings += [
            ("kmeans 4-bit channel", "kmeans", None, dict(granularity="channel")),
            ("vq 8-bit d2 (4 bits/weight)", "vq", None, dict(vector_dim=2)),
        ]
    for label, method, normalize, opts in settings:
        rows.append((label, *run(tensors, method, normalize, bits=opts.pop("bits", 8 if method == "vq" else 4),
                                 **opts)))
    cb, cs = np.array(curve).T
    order = np.argsort(cb)
    cb, cs = cb[order], cs[order]

    def uniform_at(b: float) -> float:
        if b <= cb[0]:
            return cs[0] + (b - cb[0]) * (cs[1] - cs[0]) / (cb[1] - cb[0])
        if b >= cb[-1]:
            return cs[-1] + (b - cb[-1]) * (cs[-1] - cs[-2]) / (cb[-1] - cb[-2])
        return float(np.interp(b, cb, cs))

    print("| setting | bits/weight | SQNR dB | uniform asym curve at same bpw | margin dB | time s |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, bpw, db, secs in rows:
        ref = uniform_at(bpw)
        print(f"| {label} | {bpw:.4f} | {db:.3f} | {ref:.3f} | {db - ref:+.3f} | {secs:.1f} |")


if __name__ == "__main__":
    main()
