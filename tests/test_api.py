import os

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from quantcli import ConfigError, InputError, Spec, dequantize_file, inspect_paths, open_archive, quantize_file
from quantcli.io.safetensors import SafetensorsFile


def test_default_policy_and_report(tiny_model, tmp_path):
    out = str(tmp_path / "m.qnt.safetensors")
    r = quantize_file([tiny_model], out)
    by = {t.name: t for t in r.tensors}
    assert by["embeddings.position_ids"].note == "kept: I64 is not a float type"
    assert by["embeddings.LayerNorm.weight"].note.startswith("kept: 1-D")
    q = by["encoder.layer.0.attention.self.query.weight"]
    assert q.label == "int8 sym channel" and q.params["scale_dtype"] == "float32"
    assert q.stored_bytes == 32 * 32 + 32 * 4  # codes + one float32 scale per row
    assert q.bits_per_weight == pytest.approx(8 + 32 / 32)
    assert 35 < q.sqnr_db < 50
    assert r.archive_bytes == os.path.getsize(out)
    kept = sum(t.stored_bytes for t in r.tensors if not t.quantized)  # headers count, kept arrays do not
    assert r.bits_per_weight == pytest.approx((r.archive_bytes - kept) * 8 / r.quantized_elements)
    assert r.overall_sqnr_db == pytest.approx(10 * np.log10(r.quantized.signal / r.quantized.error))


def test_only_skip_include_1d(tiny_model, tmp_path):
    out = str(tmp_path / "m.qnt.safetensors")
    r = quantize_file([tiny_model], out, only=r"attention\.self", skip="value")
    quantized = sorted(t.name for t in r.tensors if t.quantized)
    assert quantized == ["encoder.layer.0.attention.self.key.weight", "encoder.layer.0.attention.self.query.weight"]
    r = quantize_file([tiny_model], out, include_1d=True)
    assert {t.name for t in r.tensors if not t.quantized} == {"embeddings.position_ids"}
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        quantize_file([tiny_model], out, only="(")


def test_named_npy_is_quantized_whatever_its_rank(tmp_path):
    np.save(tmp_path / "v.npy", np.linspace(-1, 1, 50, dtype=np.float32))
    r = quantize_file([str(tmp_path / "v.npy")], str(tmp_path / "v.qnt.safetensors"), Spec(granularity="tensor"))
    assert r.tensors[0].quantized


def test_nan_is_an_error_naming_the_tensor_and_leaves_nothing(tmp_path):
    x = np.ones((4, 4), np.float32)
    x[1, 2] = np.nan
    save_file({"bad.weight": x, "ok.weight": np.ones((4, 4), np.float32)}, str(tmp_path / "m.safetensors"))
    out = tmp_path / "o.qnt.safetensors"
    with pytest.raises(InputError, match=r"tensor 'bad.weight': holds 1 NaN or Inf"):
        quantize_file([str(tmp_path / "m.safetensors")], str(out))
    assert os.listdir(tmp_path) == ["m.safetensors"]
    r = quantize_file([str(tmp_path / "m.safetensors")], str(out), keep_nonfinite=True)
    assert [t.note for t in r.tensors] == ["kept: 1 NaN/Inf values (--keep-nonfinite)", ""]
    with open_archive(str(out)) as a:
        back = a.decode(a.by_name["bad.weight"])
    np.testing.assert_array_equal(back, x)  # NaN kept bit for bit


def test_output_equal_to_input_refused(tmp_path):
    p = tmp_path / "w.npy"
    np.save(p, np.ones((2, 2), np.float32))
    before = p.read_bytes()
    with pytest.raises(ConfigError, match="output is one of the inputs"):
        quantize_file([str(p)], str(p))
    os.symlink(p, tmp_path / "link.npy")
    with pytest.raises(ConfigError, match="output is one of the inputs"):
        quantize_file([str(p)], str(tmp_path / "link.npy"))
    assert p.read_bytes() == before


def test_previous_output_survives_a_failed_run(tmp_path, tiny_model):
    out = tmp_path / "o.qnt.safetensors"
    quantize_file([tiny_model], str(out))
    before = out.read_bytes()
    x = np.full((2, 2), np.inf, np.float32)
    np.save(tmp_path / "inf.npy", x)
    with pytest.raises(InputError):
        quantize_file([tiny_model, str(tmp_path / "inf.npy")], str(out))
    assert out.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["inf.npy", "o.qnt.safetensors", "tiny.safetensors"]


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_dequantize_restores_names_shapes_dtypes(tmp_path, suffix):
    rng = np.random.default_rng(0)
    tensors = {"a.weight": rng.standard_normal((8, 6)).astype(ml_dtypes.bfloat16),
               "b.weight": rng.standard_normal((4, 3, 2)).astype(np.float16),
               "c.weight": rng.standard_normal((5, 5)),
               "n.bias": rng.standard_normal(5).astype(ml_dtypes.bfloat16),
               "ids": np.arange(4, dtype=np.int64)}
    save_file(tensors, str(tmp_path / "m.safetensors"))
    arc, out = str(tmp_path / "m.qnt.safetensors"), str(tmp_path / f"r{suffix}")
    quantize_file([str(tmp_path / "m.safetensors")], arc, Spec(bits=8))
    r = dequantize_file(arc, out)
    written = {n: (d, s) for n, d, s in r.tensors}
    if suffix == ".safetensors":
        with SafetensorsFile(out) as st:
            assert st.metadata == {"format": "pt"}
            for name, x in tensors.items():
                y = st.read(name)
                assert y.dtype == x.dtype and y.shape == x.shape
            np.testing.assert_array_equal(st.read("n.bias"), tensors["n.bias"])
            np.testing.assert_allclose(st.read("c.weight"), tensors["c.weight"], atol=0.03)
    else:
        z = np.load(out)
        assert written["a.weight"][0] == "F32"  # .npz cannot hold bfloat16
        assert z["b.weight"].dtype == np.float16 and z["c.weight"].dtype == np.float64
        np.testing.assert_array_equal(z["ids"], tensors["ids"])
    r = dequantize_file(arc, str(tmp_path / "f.safetensors"), dtype="float32")
    assert {n: d for n, d, _ in r.tensors} == {"a.weight": "F32", "b.weight": "F32", "c.weight": "F32",
                                                  "n.bias": "BF16", "ids": "I64"}  # kept: as stored


def test_dequantize_npy_needs_one_tensor(tmp_path, tiny_model, seed_matrix):
    arc = str(tmp_path / "m.qnt.safetensors")
    quantize_file([tiny_model], arc)
    with pytest.raises(ConfigError, match="holds one tensor"):
        dequantize_file(arc, str(tmp_path / "r.npy"))
    np.save(tmp_path / "s.npy", seed_matrix)
    quantize_file([str(tmp_path / "s.npy")], arc, Spec(granularity="tensor"))
    dequantize_file(arc, str(tmp_path / "r.npy"))
    np.testing.assert_allclose(np.load(tmp_path / "r.npy"), seed_matrix, atol=0.01)


def test_inspect_weights_and_archive(tmp_path, seed_matrix):
    np.save(tmp_path / "s.npy", seed_matrix)
    [w] = inspect_paths([str(tmp_path / "s.npy")])
    s = w.tensors[0]
    assert (s.min, s.max, s.absmax, s.zeros, s.elements) == (-2.0, 2.5, 2.5, 1, 12)
    assert s.mean == pytest.approx(float(seed_matrix.astype(np.float64).mean()))
    assert s.std == pytest.approx(float(seed_matrix.astype(np.float64).std()))
    arc = str(tmp_path / "s.qnt.safetensors")
    r = quantize_file([str(tmp_path / "s.npy")], arc, Spec(granularity="tensor"))
    [a] = inspect_paths([arc])
    t = a.archive[0]
    assert t.label == "int8 sym tensor" and t.stored_bytes == 16
    assert t.sqnr_db == pytest.approx(r.tensors[0].sqnr_db) and t.mse == pytest.approx(r.tensors[0].mse)


def test_exact_tensor_reports_infinite_sqnr(tmp_path):
    np.save(tmp_path / "z.npy", np.zeros((3, 3), np.float32))
    r = quantize_file([str(tmp_path / "z.npy")], str(tmp_path / "z.qnt.safetensors"))
    assert r.tensors[0].sqnr_db == float("inf") and r.tensors[0].max_abs_err == 0
