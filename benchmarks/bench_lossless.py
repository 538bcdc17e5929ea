"""`quant quantize --method lossless` on all-MiniLM-L6-v2 (float32, and bfloat16 / float16 copies made
here with ml_dtypes), and entropy-coded storage of fixed-rate codes against bitpack.

Two float layouts side by side: `rotl1` (byte planes: what quant wrote before `rotl1h10`, forced here
by making the encoder's first choice `rotl1`) and the default (`rotl1h10` for float32/bfloat16: a
10-bit head of exponent + two mantissa bits rANS-coded; float16 stays `rotl1`).

Sizes: the archive written by the command line (`quant quantize MODEL -o A --method lossless
--include-1d`, so every float tensor is lossless; the int64 position ids are kept, stored raw)
over the input file's size. Round trip: `quant dequantize A -o OUT` compared byte for byte with
the input, tensor by tensor. Speed: the library calls behind those commands (quantize_file and
dequantize_file, one process, jobs=1), MB/s of the input file's bytes, medians of --repeat runs,
wall and process-CPU time, measured side by side in one run; and the codec alone (lossless.encode /
decode of every float tensor, no file I/O).
    .venv/bin/python benchmarks/bench_lossless.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import ml_dtypes
import numpy as np
from safetensors.numpy import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import real_model  # noqa: E402

from quantcli import Spec, quantize_file  # noqa: E402
from quantcli.codecs import entropy, lossless  # noqa: E402
from quantcli.dequant import dequantize_file  # noqa: E402

QUANT = os.path.join(os.path.dirname(sys.executable), "quant")
TARGETS = {"float32": 81.9, "bfloat16": 66.5, "float16": 84.9}  # ZipNN, issue 11
FIXED = {"uniform int8 channel": Spec(),
         "uniform int4 asym g64": Spec(bits=4, scheme="asymmetric", granularity="group", group_size=64),
         "nf4 g64": Spec(method="nf", bits=4, granularity="group", group_size=64)}


def copies(model: str, folder: str) -> dict[str, str]:
    """The model as it is, and with every float tensor cast to bfloat16 / float16 (ints unchanged)."""
    tensors = load_file(model)
    out = {"float32": model}
    for name, dtype in (("bfloat16", ml_dtypes.bfloat16), ("float16", np.float16)):
        path = os.path.join(folder, f"{name}.safetensors")
        save_file({k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in tensors.items()}, path)
        out[name] = path
    return out


def timed(fn, repeat: int) -> tuple[float, float]:
    """(median wall seconds, median process CPU seconds) of `repeat` calls."""
    wall, cpu = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


@contextlib.contextmanager
def layout(name: str):
    """Within: the encoder's first choice for floats is `name` ("default": unchanged)."""
    first = lossless.transform_for
    if name != "default":
        lossless.transform_for = lambda dt: "rotl1" if first(dt) != "none" else "none"  # type: ignore[assignment]
    try:
        yield
    finally:
        lossless.transform_for = first


def codec_speed(path: str, repeat: int) -> dict[str, tuple[int, float, float]]:
    """layout -> (coded bytes, encode MB/s, decode MB/s) of lossless.encode/decode over every float
    tensor of `path`, CPU time, medians of `repeat`, the two layouts interleaved run by run."""
    arrays = [a for a in load_file(path).values() if a.dtype.kind == "f" or a.dtype == ml_dtypes.bfloat16]
    size = sum(a.nbytes for a in arrays)
    times: dict[str, list[list[float]]] = {"rotl1": [[], []], "default": [[], []]}
    coded = {}
    for _ in range(repeat):
        for name in times:
            with layout(name):
                c = time.process_time()
                enc = [lossless.encode(a) for a in arrays]
                times[name][0].append(time.process_time() - c)
            c = time.process_time()
            out = [lossless.decode(d, p, a.dtype, a.size) for (d, p), a in zip(enc, arrays)]
            times[name][1].append(time.process_time() - c)
            assert all(o.tobytes() == a.tobytes() for o, a in zip(out, arrays))
            coded[name] = sum(len(d) for d, _ in enc)
    return {name: (coded[name], size / statistics.median(t[0]) / 1e6, size / statistics.median(t[1]) / 1e6)
            for name, t in times.items()} | {"size": (size, 0.0, 0.0)}


def same_tensors(a: str, b: str) -> bool:
    x, y = load_file(a), load_file(b)
    return x.keys() == y.keys() and all(x[k].dtype == y[k].dtype and x[k].shape == y[k].shape
                                        and x[k].tobytes() == y[k].tobytes() for k in x)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    model = real_model()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, "
          f"numpy {np.__version__}, numba kernels: {bool(entropy._load_numba())}")
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        files = copies(model, tmp)
        print("\n| input | input bytes | archive bytes rotl1 | rotl1 / input | archive bytes default | "
              "default / input | target | round trip exact |")
        print("|---|---|---|---|---|---|---|---|")
        archives = {}
        for name, path in files.items():
            arc, out = os.path.join(tmp, f"{name}.qnt.safetensors"), os.path.join(tmp, f"{name}.out.safetensors")
            subprocess.run([QUANT, "quantize", path, "-o", arc, "--method", "lossless", "--include-1d",
                            "--jobs", "1", "-q"], check=True)
            subprocess.run([QUANT, "dequantize", arc, "-o", out, "-q"], check=True)
            old = os.path.join(tmp, f"{name}.rotl1.qnt.safetensors")
            with layout("rotl1"):  # the library call behind the same command
                quantize_file([path], old, Spec(method="lossless"), include_1d=True, jobs=1)
            size, asize, osize = os.path.getsize(path), os.path.getsize(arc), os.path.getsize(old)
            archives[name] = arc
            print(f"| {name} | {size:,} | {osize:,} | {100 * osize / size:.2f}% | {asize:,} | "
                  f"{100 * asize / size:.2f}% | <= {TARGETS[name]}% | {same_tensors(path, out)} |")

        print("\n| input | layout | backend | encode MB/s (wall) | encode MB/s (CPU) | decode MB/s (wall) | "
              "decode MB/s (CPU) | same bytes as the CLI's |")
        print("|---|---|---|---|---|---|---|---|")
        for name, path in files.items():
            size = os.path.getsize(path)
            for lay, backend, repeat in (("rotl1", "numba", args.repeat), ("default", "numba", args.repeat)):
                arc = os.path.join(tmp, f"{name}.{lay}.{backend}.qnt.safetensors")
                out = os.path.join(tmp, f"{name}.{lay}.{backend}.out.safetensors")
                spec = Spec(method="lossless")
                with layout(lay):
                    enc = timed(lambda p=path, a=arc, s=spec: quantize_file([p], a, s, include_1d=True, jobs=1),
                                repeat)
                dec = timed(lambda a=arc, o=out: dequantize_file(a, o), repeat)
                same = open(arc, "rb").read() == open(archives[name], "rb").read() if lay == "default" else "-"
                print(f"| {name} | {lay} | {backend} | {size / enc[0] / 1e6:.0f} | {size / enc[1] / 1e6:.0f} | "
                      f"{size / dec[0] / 1e6:.0f} | {size / dec[1] / 1e6:.0f} | {same} |")

        print("\n| input | layout | coded bytes | % of tensor bytes | codec encode MB/s (CPU) | codec decode MB/s (CPU) |")
        print("|---|---|---|---|---|---|")
        for name, path in files.items():
            res = codec_speed(path, max(args.repeat, 3))
            for lay in ("rotl1", "default"):
                nbytes, enc_mbs, dec_mbs = res[lay]
                print(f"| {name} | {lay} | {nbytes:,} | {100 * nbytes / res['size'][0]:.3f}% | {enc_mbs:.0f} | "
                      f"{dec_mbs:.0f} |")

        print("\n| float32 model | bitpack bytes | entropy bytes | entropy / bitpack | decoded values identical |")
        print("|---|---|---|---|---|")
        for label, spec in FIXED.items():
            fixed, coded = os.path.join(tmp, "fixed.qnt.safetensors"), os.path.join(tmp, "coded.qnt.safetensors")
            quantize_file([model], fixed, spec, jobs=1)
            quantize_file([model], coded, spec.with_options(codec="entropy"), jobs=1)
            a, b = os.path.join(tmp, "a.safetensors"), os.path.join(tmp, "b.safetensors")
            dequantize_file(fixed, a)
            dequantize_file(coded, b)
            fs, cs = os.path.getsize(fixed), os.path.getsize(coded)
            print(f"| {label} | {fs:,} | {cs:,} | {100 * cs / fs:.2f}% | {same_tensors(a, b)} |")
    print(f"\nload average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
