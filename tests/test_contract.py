"""Every registered method honours the same contract; a new method is covered by registering it."""

import numpy as np
import pytest

from quantcli import QuantError, Spec, open_archive, quantize_file
from quantcli.methods import METHODS
from quantcli.metrics import measure

# Options that make each method work at roughly 4 bits; a method not listed runs with bits=4.
SPECS = {
    "uniform": dict(bits=4, scheme="asymmetric", granularity="group", group_size=16),
    "kmeans": dict(bits=4, normalize="group", group_size=16),
    "fp16": {}, "bf16": {},
    "pq": dict(subvector_dim=2, centroids=16),
    "vq": dict(bits=8, vector_dim=2),
}
FLOOR_DB = {"fp16": 60, "bf16": 40}
NAMES = sorted(m for m in METHODS if m != "keep")


def spec_for(name):
    return Spec(method=name, **SPECS.get(name, dict(bits=4)))


@pytest.fixture
def weights():
    return np.random.default_rng(3).normal(0, 0.05, (48, 40)).astype(np.float32)


@pytest.mark.parametrize("name", NAMES)
def test_contract(name, weights, tmp_path):
    method = METHODS[name]
    spec = spec_for(name)
    enc = method.encode(weights, spec)
    layout = method.layout(weights.shape, enc.params)
    assert {r: (a.dtype, a.shape) for r, a in enc.arrays.items()} == {r: (d, tuple(s)) for r, (d, s) in layout.items()}
    out = method.decode(enc, weights.shape)
    assert out.shape == weights.shape and out.dtype == np.float32 and np.isfinite(out).all()
    if enc.reconstruction is not None:
        np.testing.assert_array_equal(out, enc.reconstruction)
    if enc.error is not None:  # measured while encoding: must agree with measuring the decode
        m = measure(weights, out)
        assert enc.error.count == m.count and enc.error.max_abs == m.max_abs
        assert enc.error.signal == pytest.approx(m.signal, rel=1e-5) and enc.error.error == pytest.approx(m.error, rel=1e-5)
    assert measure(weights, out).sqnr_db > FLOOR_DB.get(name, 10)
    again = method.encode(weights, spec)
    assert again.params == enc.params
    assert all(np.array_equal(again.arrays[r], enc.arrays[r]) for r in enc.arrays)
    assert isinstance(method.describe(enc.params), str) and method.summary
    # the plan (--dry-run, the planner) predicts exactly what encode stores, from the shape alone
    predicted = method.layout(weights.shape, method.params_for(weights.shape, spec))
    assert {r: (d, tuple(s)) for r, (d, s) in predicted.items()} == {r: (a.dtype, a.shape) for r, a in enc.arrays.items()}

    np.save(tmp_path / "w.npy", weights)
    arc = str(tmp_path / "w.qnt.safetensors")
    quantize_file([str(tmp_path / "w.npy")], arc, spec)
    with open_archive(arc) as a:
        np.testing.assert_array_equal(a.decode(a.tensors[0]), out)


@pytest.mark.parametrize("name", NAMES)
def test_contract_edge_shapes(name):
    method = METHODS[name]
    spec = spec_for(name)
    for x in (np.zeros((5, 8), np.float32), np.full((3, 6), 0.25, np.float32), np.zeros((0, 4), np.float32),
              np.zeros((3, 0), np.float32), np.full((), 2.0, np.float32), np.full((7,), -1.0, np.float32),
              np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)):
        if x.ndim > 1 and x.shape[1] == 0 and name == "pq":  # no columns to cut; the pipeline keeps it
            with pytest.raises(QuantError, match="at least one column"):
                method.encode(x, spec)
            continue
        enc = method.encode(x, spec)
        out = method.decode(enc, x.shape)
        assert out.shape == x.shape and np.isfinite(out).all()
        if not x.any():
            assert not out.any()
