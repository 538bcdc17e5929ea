"""`--method lossless` on all-MiniLM-L6-v2 (float32, and bfloat16 / float16 copies made here with
ml_dtypes) against ZipNN, measured side by side in one run; and entropy-coded storage of
fixed-rate codes against bitpack.

1. Sizes: the archive `quant quantize MODEL -o A --method lossless --include-1d` writes (every float
   tensor lossless; the int64 position ids kept, stored raw) over the input file's size; round
   trip: `quant dequantize A -o OUT` compared with the input tensor by tensor.
2. The codecs in process: quant's `lossless.encode` / `decode` and ZipNN's `compress` /
   `decompress` (its defaults: byte input of the tensor's dtype, threads = cores) on each float
   tensor of the file, MB/s of the tensors' bytes per second of process CPU time (and of wall
   time), medians of --repeat rounds, quant and ZipNN alternating within each round. Both round
   trips are checked bit for bit.
3. The commands: `quant dequantize` of the lossless archive and of the int8 archive (`--bits 8`) of
   the same file, through the installed command, alternating, medians of --repeat runs: wall time
   and the child's CPU time (user + sys).
4. The float32 model with the default fixed-rate methods, bitpack vs `codec="entropy"` storage.

With --baseline REV (e.g. the commit before a change), the package at that revision is measured
too, in the same rounds: its codec (sections 2) and its command (`python -m quantcli_base`, 3).

    python benchmarks/bench_lossless.py [--repeat 5] [--skip-entropy] [--baseline REV]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
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
from quantcli.archive.dequant import dequantize_file  # noqa: E402

QUANT = os.path.join(os.path.dirname(sys.executable), "quant")
ZIPNN_DTYPE = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}
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


def floats(path: str) -> list[np.ndarray]:
    return [a for a in load_file(path).values() if a.dtype.kind == "f" or a.dtype == ml_dtypes.bfloat16]


def clocked(fn):  # type: ignore[no-untyped-def]
    """(result, wall seconds, process CPU seconds) of fn()."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


class RansClock:
    """Process CPU seconds spent inside entropy.py's public calls (the rANS coder) while active."""

    def __init__(self) -> None:
        self.seconds = {"encode": 0.0, "decode": 0.0}

    def __enter__(self) -> "RansClock":
        self.saved = entropy.encode_symbols, entropy.decode

        def timed(fn, key):  # type: ignore[no-untyped-def]
            def run(*a, **k):  # type: ignore[no-untyped-def]
                c = time.process_time()
                try:
                    return fn(*a, **k)
                finally:
                    self.seconds[key] += time.process_time() - c
            return run
        entropy.encode_symbols, entropy.decode = timed(self.saved[0], "encode"), timed(self.saved[1], "decode")
        return self

    def __exit__(self, *exc: object) -> None:
        entropy.encode_symbols, entropy.decode = self.saved


def baseline(rev: str, folder: str):  # type: ignore[no-untyped-def]
    """The package as it was at git revision `rev`, importable as `quantcli_base` from `folder`
    (every import inside the package is relative), and its lossless codec module."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tree = subprocess.run(["git", "-C", root, "archive", rev, "quantcli"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", folder], input=tree, check=True)
    os.rename(os.path.join(folder, "quantcli"), os.path.join(folder, "quantcli_base"))
    sys.path.insert(0, folder)
    import importlib
    return importlib.import_module("quantcli_base.codecs.lossless")


def codecs_side_by_side(name: str, path: str, repeat: int, base=None, rev: str = ""  # type: ignore[no-untyped-def]
                        ) -> dict[str, tuple[float, ...]]:
    """coder -> (coded bytes / tensor bytes, encode MB/s CPU, wall, decode MB/s CPU, wall), and
    "rans" -> the share of quant's encode and decode CPU time spent in entropy.py."""
    from zipnn import ZipNN

    arrays = floats(path)
    size = sum(a.nbytes for a in arrays)
    z = ZipNN(input_format="byte", bytearray_dtype=ZIPNN_DTYPE[name])
    coders = {
        "quant": (lambda: [lossless.encode(a) for a in arrays],
                  lambda enc: [lossless.decode(d, p, a.dtype, a.size) for (d, p), a in zip(enc, arrays)],
                  lambda enc: sum(len(d) for d, _ in enc)),
        "zipnn": (lambda: [z.compress(a.tobytes()) for a in arrays],
                  lambda enc: [z.decompress(x) for x in enc],
                  lambda enc: sum(len(x) for x in enc)),
    }
    if base is not None:
        coders[f"quant {rev}"] = (lambda: [base.encode(a) for a in arrays],
                                  lambda enc: [base.decode(d, p, a.dtype, a.size) for (d, p), a in zip(enc, arrays)],
                                  lambda enc: sum(len(d) for d, _ in enc))
    times: dict[str, list[list[float]]] = {k: [[], [], [], []] for k in coders}
    ratio = {}
    rans = RansClock()
    for _ in range(repeat):
        for coder, (enc_fn, dec_fn, nbytes) in coders.items():
            with rans if coder == "quant" else contextlib.nullcontext():
                enc, ew, ec = clocked(enc_fn)
                dec, dw, dc = clocked(lambda e=enc, f=dec_fn: f(e))  # type: ignore[misc]
            assert all((o.tobytes() if isinstance(o, np.ndarray) else bytes(o)) == a.tobytes()
                       for o, a in zip(dec, arrays)), coder
            for t, v in zip(times[coder], (ec, ew, dc, dw)):
                t.append(v)
            ratio[coder] = nbytes(enc) / size
    share = (rans.seconds["encode"] / sum(times["quant"][0]), rans.seconds["decode"] / sum(times["quant"][2]))
    return {c: (ratio[c], *(size / statistics.median(t) / 1e6 for t in times[c])) for c in coders} | {"rans": share}


def command_times(archives: dict[str, tuple[list[str], str]], out: str, repeat: int) -> dict[str, tuple[float, float]]:
    """label -> (median wall s, median CPU s) of `COMMAND dequantize ARCHIVE -o out -q`, alternating,
    after one untimed run of each (numba's on-disk cache filled)."""
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in archives}
    for cmd, arc in archives.values():
        subprocess.run([*cmd, "dequantize", arc, "-o", out, "-q"], check=True)
    for _ in range(repeat):
        for label, (cmd, arc) in archives.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            w = time.perf_counter()
            subprocess.run([*cmd, "dequantize", arc, "-o", out, "-q"], check=True)
            wall = time.perf_counter() - w
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            runs[label].append((wall, cpu))
    return {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in runs.items()}


def same_tensors(a: str, b: str) -> bool:
    x, y = load_file(a), load_file(b)
    return x.keys() == y.keys() and all(x[k].dtype == y[k].dtype and x[k].shape == y[k].shape
                                        and x[k].tobytes() == y[k].tobytes() for k in x)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--skip-entropy", action="store_true", help="skip section 4 (fixed-rate codes)")
    ap.add_argument("--baseline", metavar="REV", help="also measure the package at this git revision")
    args = ap.parse_args()
    model = real_model()
    import numba
    from importlib.metadata import version
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"machine: {platform.machine()}, {cpu}, nproc {os.cpu_count()}, Python {platform.python_version()}, "
          f"numpy {np.__version__}, numba {numba.__version__}, zipnn {version('zipnn')}")
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        files = copies(model, tmp)
        base = None
        if args.baseline:
            os.mkdir(os.path.join(tmp, "base"))
            base = baseline(args.baseline, os.path.join(tmp, "base"))
        base_cmd = [sys.executable, "-m", "quantcli_base"]
        os.environ["PYTHONPATH"] = os.path.join(tmp, "base")  # for base_cmd
        print("\n| input | input bytes | lossless archive bytes | / input | int8 archive bytes | round trip exact |")
        print("|---|---|---|---|---|---|")
        archives = {}
        for name, path in files.items():
            arc, i8 = os.path.join(tmp, f"{name}.ll.qnt.safetensors"), os.path.join(tmp, f"{name}.i8.qnt.safetensors")
            out = os.path.join(tmp, f"{name}.out.safetensors")
            subprocess.run([QUANT, "quantize", path, "-o", arc, "--method", "lossless", "--include-1d",
                            "--jobs", "1", "-q"], check=True)
            subprocess.run([QUANT, "quantize", path, "-o", i8, "--bits", "8", "--jobs", "1", "-q"], check=True)
            subprocess.run([QUANT, "dequantize", arc, "-o", out, "-q"], check=True)
            archives[name] = (arc, i8)
            size, asize = os.path.getsize(path), os.path.getsize(arc)
            print(f"| {name} | {size:,} | {asize:,} | {100 * asize / size:.2f}% | {os.path.getsize(i8):,} | "
                  f"{same_tensors(path, out)} |")

        print("\n| input | coder | coded / tensor bytes | encode MB/s CPU | (wall) | decode MB/s CPU | (wall) |")
        print("|---|---|---|---|---|---|---|")
        shares = {}
        for name, path in files.items():
            res = codecs_side_by_side(name, path, args.repeat, base, args.baseline or "")
            shares[name] = res.pop("rans")
            for coder, (r, ec, ew, dc, dw) in res.items():
                print(f"| {name} | {coder} | {100 * r:.3f}% | {ec:.0f} | ({ew:.0f}) | {dc:.0f} | ({dw:.0f}) |")
            q, zz = res["quant"], res["zipnn"]
            print(f"| {name} | quant / zipnn | | {q[1] / zz[1]:.2f}x | ({q[2] / zz[2]:.2f}x) | {q[3] / zz[3]:.2f}x | "
                  f"({q[4] / zz[4]:.2f}x) |", flush=True)
            if base:
                b = res[f"quant {args.baseline}"]
                print(f"| {name} | quant / quant {args.baseline} | | {q[1] / b[1]:.2f}x | ({q[2] / b[2]:.2f}x) | "
                      f"{q[3] / b[3]:.2f}x | ({q[4] / b[4]:.2f}x) |", flush=True)

        print("\nShare of quant's codec CPU time inside entropy.py (rANS encode_symbols / decode): "
              + ", ".join(f"{n} {100 * e:.0f}% of encode, {100 * d:.0f}% of decode" for n, (e, d) in shares.items()))

        print("\n| input | lossless dequantize wall s | int8 wall s | lossless / int8 (wall) | "
              "lossless CPU s | int8 CPU s | lossless / int8 (CPU) | lossless file path MB/s CPU |")
        print("|---|---|---|---|---|---|---|---|")
        for name, path in files.items():
            arc, i8 = archives[name]
            out = os.path.join(tmp, f"{name}.cmd.safetensors")
            cmds = {"ll": ([QUANT], arc), "i8": ([QUANT], i8)} | ({"base": (base_cmd, arc)} if base else {})
            t = command_times(cmds, out, args.repeat)
            if base:
                bw, bc = t["base"]
                print(f"| {name} ({args.baseline}) | {bw:.2f} | | {bw / t['i8'][0]:.2f}x | {bc:.2f} | | "
                      f"{bc / t['i8'][1]:.2f}x | |")
            dequantize_file(arc, out)  # warm, then the library call behind the command, in process
            _, _, c = clocked(lambda a=arc, o=out: dequantize_file(a, o))  # type: ignore[misc]
            (lw, lc), (iw, ic) = t["ll"], t["i8"]
            print(f"| {name} | {lw:.2f} | {iw:.2f} | {lw / iw:.2f}x | {lc:.2f} | {ic:.2f} | {lc / ic:.2f}x | "
                  f"{os.path.getsize(path) / c / 1e6:.0f} |", flush=True)

        tiny = os.path.join(tmp, "tiny.safetensors")
        save_file({"w": np.linspace(-1, 1, 4096, dtype=np.float32).reshape(64, 64)}, tiny)
        small = {}
        for label, opts in (("ll", ["--method", "lossless"]), ("i8", ["--bits", "8"])):
            small[label] = os.path.join(tmp, f"tiny.{label}.qnt.safetensors")
            subprocess.run([QUANT, "quantize", tiny, "-o", small[label], *opts, "-q"], check=True)
        t = command_times({k: ([QUANT], v) for k, v in small.items()}, os.path.join(tmp, "tiny.out.safetensors"),
                          args.repeat)
        print(f"| one 64x64 float32 tensor (fixed costs) | {t['ll'][0]:.2f} | {t['i8'][0]:.2f} | "
              f"{t['ll'][0] / t['i8'][0]:.2f}x | {t['ll'][1]:.2f} | {t['i8'][1]:.2f} | {t['ll'][1] / t['i8'][1]:.2f}x | - |")

        if not args.skip_entropy:
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
