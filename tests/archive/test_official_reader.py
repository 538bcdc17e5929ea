"""The official `safetensors` library reads everything quant writes, to the last bit.

quant reads and writes safetensors with its own validated code (quantcli.io.safetensors, output),
so the library is only a test dependency; these tests are what keeps the files interoperable:
an archive per method, and dequantized outputs as one .safetensors file and as a sharded folder,
float32 and bfloat16 alike. bfloat16: `safetensors.numpy` returns ml_dtypes.bfloat16 arrays when
ml_dtypes is installed (a runtime dependency of quant), so values are compared as their raw uint16
bit patterns; `safe_open(..., framework="numpy")` is checked to give the same arrays.
"""

from __future__ import annotations

import json
import os

import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from make_samples import transformer_like
from quantcli import Spec, dequantize_file, open_archive, quantize_file
from quantcli.methods import METHODS, Encoding
from quantcli.archive.storage import logical_arrays
from quantcli.io.safetensors import DTYPES, SafetensorsFile

SPECS = {
    "uniform": dict(bits=4, granularity="group", group_size=16),
    "nf": dict(method="nf", bits=4, granularity="group", group_size=16),
    "log": dict(method="log", bits=4),
    "kmeans": dict(method="kmeans", bits=3, granularity="tensor"),
    "vq": dict(method="vq", bits=6, vector_dim=4, iters=5),
    "pq": dict(method="pq", subvector_dim=4, centroids=16, iters=5),
    "fp16": dict(method="fp16"),
    "bf16": dict(method="bf16"),
    "keep": dict(method="keep"),
}


def bits(a: np.ndarray) -> tuple[str, tuple[int, ...], bytes]:
    """dtype, shape and raw bytes: equality here is bit-for-bit (NaN payloads and -0.0 included)."""
    return str(a.dtype), tuple(a.shape), np.ascontiguousarray(a).tobytes()


def official(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every array and the metadata of `path` through both official entry points (which must agree)."""
    arrays = load_file(path)
    with safe_open(path, framework="numpy") as f:
        meta = f.metadata() or {}
        assert sorted(f.keys()) == sorted(arrays)
        for name in f.keys():
            assert bits(f.get_tensor(name)) == bits(arrays[name])
    return arrays, meta


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    """A small transformer-shaped model in float32 and in bfloat16 (with an int64 buffer)."""
    folder = tmp_path_factory.mktemp("models")
    t = transformer_like(np.random.default_rng(0), layers=1, hidden=32, ffn=64, vocab=50)
    paths = {"f32": str(folder / "f32.safetensors"), "bf16": str(folder / "bf16.safetensors")}
    save_file(t, paths["f32"])
    save_file({k: v if v.dtype == np.int64 else v.astype(ml_dtypes.bfloat16) for k, v in t.items()}, paths["bf16"])
    return paths


@pytest.mark.parametrize("source", ["f32", "bf16"])
@pytest.mark.parametrize("method", sorted(SPECS))
def test_official_library_reads_every_archive(models, tmp_path, method, source):
    out = str(tmp_path / f"{method}.qnt.safetensors")
    quantize_file([models[source]], out, Spec(**SPECS[method]), include_1d=True)
    arrays, meta = official(out)
    with SafetensorsFile(out) as st:
        assert meta == st.metadata
        assert sorted(arrays) == sorted(st.entries)
        for name in st.entries:
            assert bits(arrays[name]) == bits(st.read(name)), name
    with open_archive(out) as archive:
        assert {t.method for t in archive.tensors if t.dtype != "I64"} == {method}
        if source == "bf16":
            assert any(t.dtype == "BF16" for t in archive.tensors)
        for t in archive.tensors:
            # decode from the arrays the official library read: the same values as quant's own decode
            stored_arrays = {role: arrays[stored] for role, stored in t.arrays.items()}
            params = {"dtype": t.dtype} if t.method == "keep" else t.params
            enc = Encoding(t.method, t.params, logical_arrays(t.method, t.shape, params, stored_arrays, t.codecs))
            assert bits(METHODS[t.method].decode(enc, t.shape)) == bits(archive.decode(t)), t.name


@pytest.mark.parametrize("source, dtype", [("f32", "original"), ("bf16", "original"), ("f32", "bfloat16")])
def test_official_library_reads_dequantized_outputs(models, tmp_path, source, dtype):
    archive_path = str(tmp_path / "m.qnt.safetensors")
    quantize_file([models[source]], archive_path, Spec(bits=4, granularity="group", group_size=16))
    single = str(tmp_path / "out.safetensors")
    folder = str(tmp_path / "shards")
    dequantize_file(archive_path, single, dtype=dtype)
    dequantize_file(archive_path, folder, dtype=dtype, shard_size="20KB")
    shards = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
    assert len(shards) > 1
    with open(os.path.join(folder, "model.safetensors.index.json")) as f:
        index = json.load(f)
    from_shards: dict[str, np.ndarray] = {}
    for shard in shards:
        arrays, meta = official(os.path.join(folder, shard))
        assert meta == {"format": "pt"}
        assert all(index["weight_map"][name] == shard for name in arrays)
        from_shards.update(arrays)
    assert index["metadata"]["total_size"] == sum(a.nbytes for a in from_shards.values())
    from_single, meta = official(single)
    assert meta == {"format": "pt"}
    with open_archive(archive_path) as archive:
        assert sorted(from_single) == sorted(from_shards) == sorted(t.name for t in archive.tensors)
        for t in archive.tensors:
            target = t.dtype if t.method == "keep" or dtype == "original" else "BF16"  # kept: as stored
            want = archive.decode(t).astype(DTYPES[target], copy=False)
            assert bits(from_single[t.name]) == bits(want), t.name
            assert bits(from_shards[t.name]) == bits(want), t.name
        got_bf16 = [n for n, a in from_single.items() if a.dtype == ml_dtypes.bfloat16]
        assert bool(got_bf16) == (source == "bf16" or dtype == "bfloat16")


def test_quant_runs_without_the_safetensors_and_sklearn_libraries(models, tmp_path):
    # both are test/bench extras only: block their import and run every method, verify and dequantize
    import subprocess
    import sys
    code = f"""
import sys
sys.modules["safetensors"] = sys.modules["sklearn"] = None  # any import of them now raises ImportError
from quantcli import Spec, dequantize_file, open_archive, quantize_file
for i, spec in enumerate({[SPECS[m] for m in sorted(SPECS)]!r}):
    out = {str(tmp_path)!r} + f"/a{{i}}.qnt.safetensors"
    quantize_file([{models["bf16"]!r}], out, Spec(**spec), include_1d=True)
    with open_archive(out) as a:
        assert not a.verify()
    dequantize_file(out, out + ".out.safetensors")
assert "safetensors" not in {{m.split(".")[0] for m in sys.modules if sys.modules[m] is not None}}
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
