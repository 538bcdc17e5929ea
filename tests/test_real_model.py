"""On the real all-MiniLM-L6-v2 weights (float32, 90.9 MB; fetched by tools/fetch_model.py)."""

import numpy as np
import pytest

from quantcli import Spec, dequantize_file, quantize_file
from quantcli.io.safetensors import SafetensorsFile


@pytest.fixture(scope="module")
def int8_run(real_model, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("m") / "m8.qnt.safetensors")
    return quantize_file([real_model], out)


def test_int8_channel(int8_run):
    r = int8_run
    assert r.input_bytes == 90_868_376
    assert len(r.tensors) == 104 and sum(t.quantized for t in r.tensors) == 40
    assert r.archive_bytes <= 0.26 * r.input_bytes
    assert r.overall_sqnr_db >= 41.0
    assert min(t.sqnr_db for t in r.tensors if t.quantized) > 29  # token_type_embeddings: 29.3 dB


def test_int4_group64_and_restore(real_model, tmp_path):
    arc = str(tmp_path / "m4.qnt.safetensors")
    r = quantize_file([real_model], arc, Spec(bits=4, scheme="asymmetric", granularity="group", group_size=64))
    assert r.bits_per_weight <= 4.6
    assert r.overall_sqnr_db >= 20.0
    out = str(tmp_path / "restored.safetensors")
    dequantize_file(arc, out)
    with SafetensorsFile(real_model) as a, SafetensorsFile(out) as b:
        assert list(a.entries) == list(b.entries) or set(a.entries) == set(b.entries)
        for name, e in a.entries.items():
            assert (b.entries[name].dtype, b.entries[name].shape) == (e.dtype, e.shape)
        np.testing.assert_array_equal(b.read("embeddings.position_ids"), a.read("embeddings.position_ids"))
        w, w_hat = a.read("encoder.layer.0.attention.self.query.weight"), b.read("encoder.layer.0.attention.self.query.weight")
        assert 10 * np.log10((w.astype(np.float64) ** 2).sum() / ((w - w_hat).astype(np.float64) ** 2).sum()) > 18
