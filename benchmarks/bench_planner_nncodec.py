"""NNCodec's encode of all-MiniLM-L6-v2 beside the planner's, for issue 18's speed target (the
planner at least 2x NNCodec's encode speed at a similar size).

NNCodec (2.1.3, needs torch) lives in its own environment; this script runs in both:

    python benchmarks/bench_planner_nncodec.py dump /tmp/minilm.npz          # in quant's venv
    /nnc-venv/bin/python benchmarks/bench_planner_nncodec.py nnc /tmp/minilm.npz --qp -26
    python benchmarks/bench_planner_nncodec.py quant --target-bpw 3.5 --repeat 3   # in quant's venv

`nnc` prints the bitstream's bytes, bits/weight and the CPU seconds of `compress` (in process,
torch already imported) and of the whole process; `quant` the CPU of whole `quant quantize -j 1`
commands (process start included) and its bits/weight. MB/s are of the float32 model (90.9 MB).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def dump(path: str) -> None:
    import numpy as np
    sys.path.insert(0, HERE)
    import minilm
    w = minilm.load_weights()
    np.savez(path, **{k: np.asarray(v, np.float32) for k, v in w.items()})


def _stub_torchvision() -> None:
    """NNCodec imports torchvision for its image-model applications only; `compress` does not use
    it, so where no torchvision build matches the installed torch an empty stand-in is enough."""
    try:
        import torchvision  # noqa: F401
        return
    except Exception:
        pass
    import types
    from unittest import mock

    class Finder:
        def find_spec(self, name, path=None, target=None):
            if name == "torchvision" or name.startswith("torchvision."):
                import importlib.machinery
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):
            m = mock.MagicMock(name=spec.name)
            m.__path__, m.__spec__, m.__name__ = [], spec, spec.name
            return m

        def exec_module(self, module: types.ModuleType) -> None:
            pass

    for name in [n for n in sys.modules if n.startswith("torchvision")]:
        del sys.modules[name]
    sys.meta_path.insert(0, Finder())


def nnc(path: str, qp: int) -> None:
    import numpy as np
    _stub_torchvision()
    from nncodec.nnc import compression
    params = dict(np.load(path))
    n = sum(v.size for v in params.values())
    with tempfile.TemporaryDirectory() as tmp:
        t = time.process_time()
        compression.compress(params, bitstream_path=os.path.join(tmp, "b.nnc"), qp=qp)
        cpu = time.process_time() - t
        size = os.path.getsize(os.path.join(tmp, "b.nnc"))
    whole = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    mb = 4 * n / 1e6
    print(f"NNCodec qp {qp}: {size} bytes, {8 * size / n:.4f} bits/weight; compress {cpu:.1f} s CPU "
          f"({mb / cpu:.1f} MB/s), whole process {whole:.1f} s CPU ({mb / whole:.1f} MB/s)")


def quant(extra: list[str], repeat: int) -> None:
    sys.path.insert(0, HERE)
    from common import real_model
    model = real_model()
    q = os.path.join(os.path.dirname(sys.executable), "quant")
    cpus = []
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "a.qnt.safetensors")
        for _ in range(repeat):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            r = subprocess.run([q, "quantize", model, "-o", out, "-j", "1", "--json", *extra], capture_output=True,
                               text=True, check=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    t = json.loads(r.stdout)["totals"]
    cpu = statistics.median(cpus)
    print(f"quant {' '.join(extra)}: {t['bits_per_weight']:.4f} bits/weight; {cpu:.1f} s CPU (median of {repeat}, "
          f"{os.path.getsize(model) / 1e6 / cpu:.1f} MB/s)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["dump", "nnc", "quant"])
    ap.add_argument("path", nargs="?")
    ap.add_argument("--qp", type=int, default=-26)
    ap.add_argument("--repeat", type=int, default=3)
    a, extra = ap.parse_known_args()
    if a.mode == "dump":
        dump(a.path)
    elif a.mode == "nnc":
        nnc(a.path, a.qp)
    else:
        quant(extra, a.repeat)


if __name__ == "__main__":
    main()
