"""Every registered method honours the same contract; a new method is covered by registering it."""

import dataclasses

import numpy as np
import pytest

from quantcli import QuantError, Spec, open_archive, quantize_file
from quantcli.archive.storage import logical_arrays, store, stored_layout, stored_nbytes
from quantcli.methods import METHODS
from quantcli.metrics import measure
from quantcli.codecs.bitpack import pack_bits

# Options that make each method work at roughly 4 bits; a method not listed runs with bits=4.
SPECS = {
    "uniform": dict(bits=4, scheme="asymmetric", granularity="group", group_size=16),
    "kmeans": dict(bits=4, normalize="group", group_size=16),
    "fp16": {}, "bf16": {},
    "pq": dict(subvector_dim=2, centroids=16),
    "vq": dict(bits=8, vector_dim=2),
    "ecsq": dict(step=0.01),
}
FLOOR_DB = {"fp16": 60, "bf16": 40}
NAMES = sorted(m for m in METHODS if m != "keep")


def spec_for(name):
    return Spec(method=name, **SPECS.get(name, dict(bits=4)))


@pytest.fixture
def weights():
    return np.random.default_rng(3).normal(0, 0.05, (48, 40)).astype(np.float32)


def _logical(layout):
    return {r: (d, tuple(s)) for r, (d, s, _) in layout.items()}


@pytest.mark.parametrize("name", NAMES)
def test_contract(name, weights, tmp_path):
    method = METHODS[name]
    spec = spec_for(name)
    enc = method.encode(weights, spec)
    layout = method.layout(weights.shape, enc.params)
    assert {r: (a.dtype, a.shape) for r, a in enc.arrays.items()} == _logical(layout)
    out = method.decode(enc, weights.shape)
    assert out.shape == weights.shape and out.dtype == np.float32 and np.isfinite(out).all()
    # encode_measured: the same encoding, and the error of what decode gives
    measured, err = method.encode_measured(weights, spec)
    assert measured.params == enc.params and all(np.array_equal(measured.arrays[r], enc.arrays[r]) for r in enc.arrays)
    m = measure(weights, out)
    assert err.count == m.count and err.max_abs == m.max_abs
    assert err.signal == pytest.approx(m.signal, rel=1e-5) and err.error == pytest.approx(m.error, rel=1e-5)
    assert m.sqnr_db > FLOOR_DB.get(name, 10)
    again = method.encode(weights, spec)
    assert again.params == enc.params
    assert all(np.array_equal(again.arrays[r], enc.arrays[r]) for r in enc.arrays)
    assert isinstance(method.describe(enc.params), str) and method.describe(enc.params)
    assert method.options <= {f.name for f in dataclasses.fields(Spec)} and isinstance(method.options, frozenset)
    # the plan (--dry-run, the planner) predicts exactly what encode stores, from the shape alone,
    # and exactly what encode records when it is given the data
    predicted = method.layout(weights.shape, method.params_for(weights.shape, spec))
    assert _logical(predicted) == {r: (a.dtype, a.shape) for r, a in enc.arrays.items()}
    assert method.params_for(weights.shape, spec, weights) == enc.params
    with pytest.raises(dataclasses.FrozenInstanceError):
        enc.params = {}  # type: ignore[misc]

    np.save(tmp_path / "w.npy", weights)
    arc = str(tmp_path / "w.qnt.safetensors")
    quantize_file([str(tmp_path / "w.npy")], arc, spec)
    with open_archive(arc) as a:
        np.testing.assert_array_equal(a.decode(a.tensors[0]), out)
        back = a.encoding(a.tensors[0])  # logical arrays again, as encode made them
        assert all(np.array_equal(back.arrays[r], enc.arrays[r]) and back.arrays[r].dtype == enc.arrays[r].dtype
                   for r in enc.arrays)


@pytest.mark.parametrize("name", NAMES)
def test_logical_codes_and_stored_layout(name, weights):
    """Codes are unpacked integers within their alphabet; the archive's stored arrays are exactly
    what `stored_layout` declares (codes bit-packed, everything else as it is), and unpacking
    them gives the logical arrays back."""
    method = METHODS[name]
    for x in (weights, weights[:7, :13], np.zeros((0, 4), np.float32)):
        if name == "pq" and x.shape[1] == 0:
            continue
        enc = method.encode(x, spec_for(name))
        layout = method.layout(x.shape, enc.params)
        stored, _ = store(enc, x.shape)
        declared = stored_layout(name, x.shape, enc.params)
        assert {r: (a.dtype, a.shape) for r, a in stored.items()} == {r: (d, tuple(s)) for r, (d, s) in declared.items()}
        assert stored_nbytes(enc, x.shape) == sum(a.nbytes for a in stored.values())
        for role, lay in layout.items():
            a = enc.arrays[role]
            if lay.bits is None:
                assert stored[role] is a or np.array_equal(stored[role], a)
                continue
            assert a.dtype == (np.uint8 if lay.bits <= 8 else np.uint16) and a.shape == lay.shape
            assert int(a.max(initial=0)) < 2**lay.bits
            np.testing.assert_array_equal(stored[role], pack_bits(a, lay.bits))
        back = logical_arrays(name, x.shape, enc.params, stored)
        assert all(np.array_equal(back[r], enc.arrays[r]) and back[r].dtype == enc.arrays[r].dtype for r in layout)


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


def test_a_method_with_a_continuous_step_can_be_moved_along_it():
    """`step` and `at_step` come as a pair: the planner asks `at_step` only of methods whose
    `step` is not None, so every method that overrides one overrides the other, and the base
    `at_step` (which refuses) is unreachable from the planner."""
    from quantcli.methods import METHODS
    from quantcli.methods.base import Method

    for name, method in METHODS.items():
        cls = type(method)
        assert (cls.step is Method.step) == (cls.at_step is Method.at_step), name
    ecsq = METHODS["ecsq"]
    spec = ecsq.at_step(Spec(method="ecsq", step=0.1), 0.05, fine=True)
    assert ecsq.step({**ecsq.params_for((4, 8), spec), "step": 0.05}) == pytest.approx(0.05) and spec.trellis
    with pytest.raises(NotImplementedError):
        METHODS["uniform"].at_step(Spec(), 0.1, fine=False)
