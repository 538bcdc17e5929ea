"""--method lossless: exact bytes back for every float dtype, shape and hostile value; kept tensors
stored through the lossless codec with --codec entropy; forged codec entries refused; entropy
storage of uniform/nf/kmeans codes smaller than bitpack and decoding to the same values."""

from __future__ import annotations

import json
import tracemalloc

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import fuzzing as fz
from fuzzing import cli, one_error
import quantcli
from quantcli import Spec, open_archive, quantize_file, verify_archive
from quantcli.archive.container import ArchiveWriter, KEY_MANIFEST, KEY_VERSION
from quantcli.archive.storage import store
from quantcli.methods import get_method
from quantcli.io.safetensors import SafetensorsFile, dtype_code
from make_samples import transformer_like

BF16 = np.dtype(ml_dtypes.bfloat16)
DTYPES = [np.dtype(np.float32), np.dtype(np.float16), BF16, np.dtype(np.float64)]
UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}




def ok(run):
    assert run.exit_code == 0 and not run.crash, (run.exit_code, run.crash, run.stderr)
    return run




def bits(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Values of `dtype` made from an integer bit pattern (NaN payloads, subnormals, -0 reachable)."""
    return np.asarray(x, dtype=np.uint64).astype(UINT[dtype.itemsize]).view(dtype)


def hostile(dtype: np.dtype, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Tensors of `dtype` that break naive codecs: every shape kind and every corner of the format."""
    fi = ml_dtypes.finfo(dtype)
    normal = rng.normal(0, 0.02, (48, 40)).astype(dtype)
    sub = (rng.integers(1, 50, (16, 24)) * rng.choice([-1, 1], (16, 24))).astype(np.float64)
    extreme = np.array([fi.max, -fi.max, fi.tiny, -fi.tiny, fi.smallest_subnormal, -fi.smallest_subnormal,
                        0.0, -0.0, 1.0, -1.0, fi.max / 3, fi.eps], dtype=np.float64)
    outlier = normal.copy()
    outlier[7, 3] = dtype.type(float(fi.max) / 2)
    width = 8 * dtype.itemsize
    inf, sign = int(np.array(np.inf, dtype).view(UINT[dtype.itemsize])), 1 << (width - 1)
    return {
        "normal": normal,
        "scalar": np.array(-0.3125, dtype=dtype),
        "vector": rng.normal(1, 0.05, 300).astype(dtype),
        "cube": rng.normal(0, 1, (3, 5, 7)).astype(dtype),
        "subnormal": (sub * float(fi.smallest_subnormal)).astype(dtype),
        "extreme": np.tile(extreme.astype(dtype), (4, 1)),
        "outlier": outlier,
        "constant": np.full((20, 30), 0.37, dtype=dtype),
        "random_bits": bits(rng.integers(0, 2**width - 1, (32, 16), dtype=np.uint64, endpoint=True), dtype),
        "nan_inf": bits(np.array([[inf + 1, inf + 3 + (1 << (fi.nmant - 1)), sign | inf | 5, inf, sign | inf]],
                                 np.uint64), dtype).repeat(3, axis=0),  # signalling and quiet NaN payloads
    }


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_cli_round_trip_is_bit_exact(tmp_path, dtype):
    tensors = hostile(dtype, np.random.default_rng(11))
    src, arc, out = tmp_path / "m.safetensors", tmp_path / "a.qnt.safetensors", tmp_path / "o.safetensors"
    save_file(tensors, str(src))
    run = ok(cli("quantize", src, "-o", arc, "--method", "lossless", "--include-1d", "--json"))
    doc = json.loads(run.stdout)
    assert {t["name"]: t["method"] for t in doc["tensors"]} == {k: "lossless" for k in tensors}
    assert all(t["sqnr_db"] == "inf" and t["max_abs_err"] == 0 for t in doc["tensors"])
    assert "NaN" not in run.stdout  # non-finite values are kept exactly; the signal counts finite ones
    ok(cli("verify", arc))
    ok(cli("dequantize", arc, "-o", out, "--dtype", "original"))
    back = load_file(str(out))
    for name, x in tensors.items():
        assert same_bits(back[name], x), name
    loaded = quantcli.load(str(arc))  # the Python API: its own dtype too, never widened to float32
    for name, x in tensors.items():
        assert same_bits(loaded[name], x), name
    with SafetensorsFile(str(arc)) as st:
        assert st.metadata[KEY_VERSION] == "2"
        manifest = json.loads(st.metadata[KEY_MANIFEST])
    entries = {t["name"]: t for t in manifest["tensors"]}
    assert entries["normal"]["params"] == {"dtype": dtype_code(dtype)}
    assert entries["normal"]["codecs"]["values"]["codec"] == "lossless"  # smaller than raw: coded
    assert "codecs" not in entries["scalar"]  # 4 bytes or less: not worth a codec


def test_npz_output_keeps_float64_exact(tmp_path):
    x = np.random.default_rng(3).normal(0, 1, (20, 10))
    np.save(tmp_path / "w.npy", x)
    arc, out = tmp_path / "a.qnt.safetensors", tmp_path / "o.npz"
    ok(cli("quantize", tmp_path / "w.npy", "-o", arc, "--method", "lossless"))
    ok(cli("dequantize", arc, "-o", out))
    assert same_bits(np.load(out)["w"], x)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("shape", [(0,), (0, 5), (), (1,), (17,), (3, 0, 2)])
def test_method_and_archive_writer_on_every_shape(tmp_path, dtype, shape):
    """Empty tensors never reach a method through the CLI (selection keeps them); the library
    path stores them as well."""
    x = np.random.default_rng(1).normal(0, 1, shape).astype(dtype)
    method = get_method("lossless")
    enc, err = method.encode_measured(x, Spec(method="lossless"))
    assert err.error == 0 and err.count == x.size and err.signal == pytest.approx(
        float(np.sum(x.astype(np.float64) ** 2)))
    assert same_bits(method.decode(enc, shape), x)
    path = str(tmp_path / "a.qnt.safetensors")
    w = ArchiveWriter(path)
    w.add("t", dtype_code(dtype), shape, enc.method, enc.params, store(enc, shape, "entropy"))
    w.finish()
    with open_archive(path) as a:
        assert same_bits(a.decode(a.by_name["t"]), x)


def test_refuses_non_float_input():
    with pytest.raises(quantcli.InputError, match="lossless stores float tensors"):
        get_method("lossless").encode(np.arange(6, dtype=np.int32), Spec(method="lossless"))


def test_options_it_does_not_read_are_refused(tmp_path):
    np.save(tmp_path / "w.npy", np.ones((4, 4), np.float32))
    one_error(cli("quantize", tmp_path / "w.npy", "-o", tmp_path / "a.qnt.safetensors", "--method", "lossless",
                  "--bits", "4"), "--bits has no effect with --method lossless")


def test_jobs_do_not_change_bytes(tmp_path, monkeypatch):
    import quantcli.pipeline.parallel
    monkeypatch.setattr(quantcli.pipeline.parallel, "PARALLEL_MIN_BYTES", 0)
    rng = np.random.default_rng(8)
    tensors = {f"w{i}": rng.normal(0, 0.1, (64, 32 + i)).astype(DTYPES[i % 4]) for i in range(8)}
    save_file(tensors, str(tmp_path / "m.safetensors"))
    outs = []
    for jobs in (1, 2):
        arc = tmp_path / f"j{jobs}.qnt.safetensors"
        ok(cli("quantize", tmp_path / "m.safetensors", "-o", arc, "--method", "lossless", "--jobs", jobs))
        outs.append(arc.read_bytes())
    assert outs[0] == outs[1]
    loaded = quantcli.load(str(tmp_path / "j2.qnt.safetensors"))
    assert all(same_bits(loaded[k], v) for k, v in tensors.items())


@pytest.mark.parametrize("jobs", [1, 2])
def test_kept_tensors_with_entropy_codec(tmp_path, monkeypatch, jobs):
    """Kept tensors (integer, 1-D) go through the lossless codec when that is smaller, else raw."""
    import quantcli.pipeline.parallel
    monkeypatch.setattr(quantcli.pipeline.parallel, "PARALLEL_MIN_BYTES", 0)
    rng = np.random.default_rng(4)
    tensors = {
        "ids": np.arange(4096, dtype=np.int64)[None, :],  # 2-D but integer: kept
        "norm": (1 + rng.normal(0, 0.05, 768)).astype(np.float32),
        "bias": rng.normal(0, 0.02, 768).astype(BF16),
        "noise": rng.integers(0, 256, 512, dtype=np.uint8),  # incompressible: stays raw
        "w": rng.normal(0, 0.05, (64, 64)).astype(np.float32),
        "w2": rng.normal(0, 0.05, (64, 64)).astype(np.float32),
    }
    src = tmp_path / "m.safetensors"
    save_file(tensors, str(src))
    plain, coded = tmp_path / "p.qnt.safetensors", tmp_path / "c.qnt.safetensors"
    quantize_file([str(src)], str(plain), Spec(), jobs=jobs)
    quantize_file([str(src)], str(coded), Spec(codec="entropy"), jobs=jobs)
    with SafetensorsFile(str(coded)) as st:
        entries = {t["name"]: t for t in json.loads(st.metadata[KEY_MANIFEST])["tensors"]}
        sizes = {k: st.entries[k].nbytes for k in ("ids", "norm", "bias", "noise")}
    for name in ("ids", "norm", "bias"):
        assert entries[name]["method"] == "keep" and entries[name]["codecs"]["values"]["codec"] == "lossless"
        assert sizes[name] < tensors[name].nbytes
    assert "codecs" not in entries["noise"] and sizes["noise"] == 512
    assert sizes["ids"] < tensors["ids"].nbytes / 4
    assert verify_archive(str(coded)).ok
    a, b = quantcli.load(str(plain)), quantcli.load(str(coded))
    for name, x in tensors.items():
        assert same_bits(b[name], a[name]), name
        if name not in ("w", "w2"):
            assert same_bits(b[name], x), name


# -- forged archives: edits re-signed with honest checksums, so only validation can catch them ----

@pytest.fixture
def lossless_seed(tmp_path):
    x = np.random.default_rng(2).normal(0, 0.05, (512, 512)).astype(np.float32)
    np.save(tmp_path / "w.npy", x)
    arc = tmp_path / "seed.qnt.safetensors"
    quantize_file([str(tmp_path / "w.npy")], str(arc), Spec(method="lossless"))
    return fz.Seed("lossless", "archive", ".qnt.safetensors", arc.read_bytes(), [])


def _entry(m):
    return m["tensors"][0]


def _forged(seed, tmp_path, edit):
    path = tmp_path / "forged.qnt.safetensors"
    path.write_bytes(fz._resign(seed, edit))
    return path


def _grow_stored(arrays, m, extra):
    name = _entry(m)["arrays"]["values"]
    arrays[name] = np.concatenate([arrays[name], np.zeros(extra, np.uint8)])


def _planes(m):
    return _entry(m)["codecs"]["values"]["planes"]


FORGERIES = {
    # 1024x more elements than the stored planes can hold: refused before anything is allocated
    "shape": (lambda m, a: _entry(m).__setitem__("shape", [512 * 1024, 512]), "exceed"),
    "dtype": (lambda m, a: _entry(m)["params"].__setitem__("dtype", "F64"), "float64"),
    "dtype-f16": (lambda m, a: _entry(m)["params"].__setitem__("dtype", "F16"), "planes"),
    "nbytes": (lambda m, a: _entry(m)["codecs"]["values"].__setitem__(
        "nbytes", _entry(m)["codecs"]["values"]["nbytes"] + 8), "sum of its planes"),
    "nbytes-and-bytes": (lambda m, a: (_entry(m)["codecs"]["values"].__setitem__(
        "nbytes", _entry(m)["codecs"]["values"]["nbytes"] + 8), _grow_stored(a, m, 8)), "sum of its planes"),
    "nbytes-type": (lambda m, a: _entry(m)["codecs"]["values"].__setitem__("nbytes", "12"), "nbytes"),
    "plane-lengths": (lambda m, a: (_planes(m)[3].__setitem__("nbytes", _planes(m)[3]["nbytes"] + 1),
                                    _planes(m)[0].__setitem__("nbytes", _planes(m)[0]["nbytes"] - 1)), "plane"),
    "plane-codec": (lambda m, a: _planes(m)[0].__setitem__("codec", "zstd"), "zstd"),
    # the other layouts read the 6-bit residual's 0.75 bytes per value as a byte plane: too short
    "transform": (lambda m, a: _entry(m)["codecs"]["values"].__setitem__("transform", "none"), "exceed"),
    "transform-rotl1": (lambda m, a: _entry(m)["codecs"]["values"].__setitem__("transform", "rotl1"), "exceed"),
    "method": (lambda m, a: _entry(m).__setitem__("method", "fp16"), "values"),
}


@pytest.mark.parametrize("kind", sorted(FORGERIES))
def test_forged_lossless_archive_is_refused(lossless_seed, tmp_path, kind):
    edit, needle = FORGERIES[kind]
    path = _forged(lossless_seed, tmp_path, lambda m, arrays, meta: edit(m, arrays))
    out = tmp_path / "o.safetensors"
    tracemalloc.start()
    run = cli("dequantize", path, "-o", out)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    one_error(run, "tensor 'w'", needle)
    assert peak < 8 * 2**20  # the honest tensor is 1 MB; the forged shape claims 1 GB
    assert not out.exists()


# -- entropy storage of fixed-rate codes -----------------------------------------------------------

@pytest.mark.parametrize("spec", [
    Spec(bits=8, granularity="channel"),
    Spec(bits=4, scheme="asymmetric", granularity="group", group_size=64),
    Spec(method="nf", bits=4, granularity="group", group_size=64),
    Spec(method="kmeans", bits=4, normalize="group", group_size=64),
], ids=["int8-channel", "int4-g64", "nf4-g64", "kmeans4"])
def test_entropy_codec_is_smaller_and_decodes_the_same(tmp_path, spec):
    tensors = transformer_like(np.random.default_rng(0), layers=1, hidden=128, ffn=512, vocab=1000)
    src = tmp_path / "m.safetensors"
    save_file(tensors, str(src))
    fixed, coded = tmp_path / "f.qnt.safetensors", tmp_path / "e.qnt.safetensors"
    rf = quantize_file([str(src)], str(fixed), spec)
    re = quantize_file([str(src)], str(coded), spec.with_options(codec="entropy"))
    assert re.archive_bytes < rf.archive_bytes
    assert [t.sqnr_db for t in re.tensors] == [t.sqnr_db for t in rf.tensors]
    with open_archive(str(fixed)) as a, open_archive(str(coded)) as b:
        assert a.version == 1 and b.version == 2
        assert any(t.codecs.get("codes", {}).get("codec") == "rans" for t in b.tensors)
        for t in a.tensors:
            assert same_bits(b.decode(b.by_name[t.name]), a.decode(t)), t.name
