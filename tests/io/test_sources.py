import json
import os

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from quantcli import InputError
from quantcli.io.sources import Sources


def names(paths):
    with Sources([str(p) for p in paths]) as s:
        return {r.name: (r.dtype, r.shape, r.load()) for r in s.refs}


def test_npy_npz_safetensors(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.save(tmp_path / "a.npy", a)
    np.savez(tmp_path / "b.npz", w=a * 2, i=np.arange(3))
    np.save(tmp_path / "f.npy", np.asfortranarray(a))
    save_file({"h": a.astype(np.float16), "bf": a.astype(ml_dtypes.bfloat16), "d": a.astype(np.float64),
               "m": np.array([True, False])}, str(tmp_path / "c.safetensors"))
    got = names([tmp_path / "a.npy", tmp_path / "b.npz", tmp_path / "c.safetensors", tmp_path / "f.npy"])
    assert set(got) == {"a", "w", "i", "h", "bf", "d", "m", "f"}
    np.testing.assert_array_equal(got["f"][2], a)
    assert got["bf"][0] == "BF16" and got["bf"][2].dtype == ml_dtypes.bfloat16
    assert got["h"][0] == "F16" and got["d"][0] == "F64" and got["m"][0] == "BOOL" and got["i"][0] == "I64"
    np.testing.assert_array_equal(got["w"][2], a * 2)


def test_object_npy_refused_without_unpickling(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="Python objects"):
        Sources([str(tmp_path / "o.npy")])


def test_truncated_npy(tmp_path):
    np.save(tmp_path / "t.npy", np.zeros((10, 10), np.float32))
    data = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[:-7])
    with pytest.raises(InputError, match="truncated"):
        Sources([str(tmp_path / "t.npy")])


def test_garbage_npy(tmp_path):
    (tmp_path / "g.npy").write_bytes(b"hello world, not numpy")
    with pytest.raises(InputError, match="malformed .npy header"):
        Sources([str(tmp_path / "g.npy")])


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d[:4], "too short"),
    (lambda d: (10**9).to_bytes(8, "little") + d[8:], "header length"),
    (lambda d: d[:-3], "truncated"),
    (lambda d: d[:8] + b"[" + d[9:], "malformed safetensors header"),
    (lambda d: d + b"xx", "bytes after the last tensor"),
])
def test_malformed_safetensors(tmp_path, mutate, message):
    path = tmp_path / "m.safetensors"
    save_file({"w": np.ones((4, 4), np.float32)}, str(path))
    path.write_bytes(mutate(path.read_bytes()))
    with pytest.raises(InputError, match=message):
        Sources([str(path)])


def _raw_safetensors(path, header, body):
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + body)


@pytest.mark.parametrize("header, message", [
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, "needs 16"),
    ({"w": {"dtype": "Q9", "shape": [4], "data_offsets": [0, 16]}}, "unsupported dtype"),
    ({"w": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}, "malformed shape"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "v": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, "overlaps"),
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "__metadata__": {"a": 1}}, "strings"),
])
def test_hostile_safetensors_headers(tmp_path, header, message):
    _raw_safetensors(tmp_path / "h.safetensors", header, bytes(16))
    with pytest.raises(InputError, match=message):
        Sources([str(tmp_path / "h.safetensors")])


def test_duplicate_keys_in_header(tmp_path):
    raw = b'{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'
    (tmp_path / "d.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw + b"\0")
    with pytest.raises(InputError, match="duplicate key"):
        Sources([str(tmp_path / "d.safetensors")])


def test_sharded_index_honours_weight_map(tmp_path):
    """3 shards, bf16 and fp32, one shard holding a stale copy that the index does not name."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((8, 4)).astype(np.float32)
    b = rng.standard_normal((4, 4)).astype(ml_dtypes.bfloat16)
    c = rng.standard_normal((6,)).astype(np.float32)
    save_file({"a": a}, str(tmp_path / "model-00001-of-00003.safetensors"))
    save_file({"b": b, "a": np.zeros_like(a)}, str(tmp_path / "model-00002-of-00003.safetensors"))  # stale a
    save_file({"c": c}, str(tmp_path / "model-00003-of-00003.safetensors"))
    index = {"metadata": {"total_size": 0}, "weight_map": {
        "a": "model-00001-of-00003.safetensors", "b": "model-00002-of-00003.safetensors",
        "c": "model-00003-of-00003.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    for target in (tmp_path, tmp_path / "model.safetensors.index.json"):
        got = names([target])
        assert set(got) == {"a", "b", "c"}
        np.testing.assert_array_equal(got["a"][2], a)
        assert got["b"][0] == "BF16"


def test_index_naming_a_missing_tensor(tmp_path):
    save_file({"a": np.ones(2, np.float32)}, str(tmp_path / "s1.safetensors"))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"zz": "s1.safetensors"}}))
    with pytest.raises(InputError, match="does not hold it"):
        Sources([str(tmp_path)])


def test_duplicate_names_across_inputs(tmp_path):
    np.save(tmp_path / "w.npy", np.ones((2, 2), np.float32))
    os.mkdir(tmp_path / "x")
    np.save(tmp_path / "x" / "w.npy", np.ones((2, 2), np.float32))
    with pytest.raises(InputError, match="appears in two inputs"):
        Sources([str(tmp_path / "w.npy"), str(tmp_path / "x" / "w.npy")])


def test_missing_and_unknown(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        Sources([str(tmp_path / "nope.safetensors")])
    (tmp_path / "w.bin").write_bytes(b"\0")
    with pytest.raises(InputError, match="unknown file type"):
        Sources([str(tmp_path / "w.bin")])
    with pytest.raises(InputError, match="matches no file"):
        Sources([str(tmp_path / "*.npy")])


def test_glob(tmp_path):
    for i in range(3):
        np.save(tmp_path / f"w{i}.npy", np.full((2, 2), i, np.float32))
    assert sorted(names([str(tmp_path / "w*.npy")])) == ["w0", "w1", "w2"]
