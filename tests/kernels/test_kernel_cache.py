"""The kernels compile once per install: a second process decoding an ecsq --trellis archive loads
every kernel it runs from numba's on-disk cache (no compile), also when the package folder is
not writable (numba then caches in the user-wide folder); and commands that run no kernel never
import numba."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DECODE = """
import json, sys
from quantcli.archive.dequant import dequantize_file
dequantize_file(sys.argv[1], sys.argv[2])
from numba.core.registry import CPUDispatcher
hits = misses = 0
used = []
for name, mod in sorted(sys.modules.items()):
    if name.startswith("quantcli.kernels."):
        for attr, fn in vars(mod).items():
            if isinstance(fn, CPUDispatcher) and fn.signatures:
                used.append(name.rpartition(".")[2] + "." + attr)
                hits += sum(fn.stats.cache_hits.values())
                misses += sum(fn.stats.cache_misses.values())
print(json.dumps({"hits": hits, "misses": misses, "used": used}))
"""


def _run(code: str, args: list[str], env: dict[str, str]) -> dict:
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trellis_archive(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cache")
    x = np.random.default_rng(0).laplace(0, 0.02, (64, 96)).astype(np.float32)
    np.save(tmp / "m.npy", x)
    arc = tmp / "m.qnt.safetensors"
    r = subprocess.run([sys.executable, "-m", "quantcli", "quantize", str(tmp / "m.npy"), "-o", str(arc),
                        "--method", "ecsq", "--sqnr", "30", "--trellis"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return tmp, arc


@pytest.mark.parametrize("where", ["NUMBA_CACHE_DIR", "user-wide"])
def test_second_process_compiles_nothing(trellis_archive, where):
    tmp, arc = trellis_archive
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    if where == "NUMBA_CACHE_DIR":
        env["NUMBA_CACHE_DIR"] = str(tmp / where)
    else:
        # as with a read-only install: no __pycache__ next to the kernels, so numba's user-wide
        # cache folder (under XDG_CACHE_HOME) is where they go
        numba = pytest.importorskip("numba")
        if not hasattr(numba.config, "CACHE_LOCATOR_CLASSES"):
            pytest.skip("this numba cannot restrict its cache locators")
        env["NUMBA_CACHE_LOCATOR_CLASSES"] = "UserWideCacheLocator"
        env["XDG_CACHE_HOME"] = str(tmp / where)
    first = _run(DECODE, [str(arc), str(tmp / f"{where}.1.npz")], env)
    second = _run(DECODE, [str(arc), str(tmp / f"{where}.2.npz")], env)
    assert first["misses"] > 0 and first["hits"] == 0  # a fresh cache: compiled once here
    assert {"crans.decode", "crans.tables", "dq.code_shrunk"} <= set(second["used"])
    assert second["misses"] == 0 and second["hits"] == len(second["used"])
    assert os.listdir(tmp / where)  # the cache went where it was asked to
    a, b = np.load(tmp / f"{where}.1.npz"), np.load(tmp / f"{where}.2.npz")
    assert all(a[k].tobytes() == b[k].tobytes() for k in a.files)


def test_inspect_never_imports_numba(tmp_path):
    np.save(tmp_path / "tiny.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
    code = ("import sys; from quantcli.cli import entry; sys.argv = ['quant', 'inspect', sys.argv[1]]\n"
            "try:\n    entry.main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'numba' or m.startswith('quantcli.kernels')))")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "tiny.npy")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"
