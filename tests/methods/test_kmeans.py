"""Scalar k-means: the seed's golden codebook, optimality, settings, properties, layout checks."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from quantcli.errors import ArchiveError, ConfigError
from quantcli.methods import get_method
from quantcli.methods import kmeans as km
from quantcli.spec import Spec

SEED = np.array([[0.1, -0.5, 0.0, 1.0], [2.5, -1.2, 0.7, -0.3], [0.9, 1.5, -2.0, 0.2]], dtype=np.float32)
SEED_RECON = np.array([[-0.10000001, -0.10000001, -0.10000001, 1.025], [2.5, -1.6, 1.025, -0.10000001],
                       [1.025, 1.025, -1.6, -0.10000001]], dtype=np.float32)
KM = get_method("kmeans")


def test_seed_golden_codebook_and_reconstruction():
    enc = KM.encode(SEED, Spec(method="kmeans", bits=2, granularity="tensor"))
    np.testing.assert_allclose(np.sort(enc.arrays["codebook"][0]), [-1.6, -0.1, 1.025, 2.5], atol=1e-6)
    np.testing.assert_allclose(KM.decode(enc, SEED.shape), SEED_RECON, atol=1e-6)
    assert enc.arrays["codes"].tolist() == [[1, 1, 1, 2], [3, 0, 2, 1], [2, 2, 0, 1]]


def _brute_force_sse(values, k):
    v = np.sort(values.astype(np.float64))
    best = np.inf
    for cuts in itertools.combinations(range(1, v.size), k - 1):
        parts = np.split(v, cuts)
        best = min(best, sum(((p - p.mean()) ** 2).sum() for p in parts))
    return best


def _sse(values, codebook):
    codes = km.assign_sorted(values[None, :], codebook[None, :].astype(np.float32))[0]
    return ((values.astype(np.float64) - codebook[codes]) ** 2).sum()


@settings(max_examples=30, deadline=None)
@given(values=arrays(np.float32, st.integers(4, 14), elements=st.floats(-10, 10, width=32)),
       k=st.integers(2, 4))
def test_dp_is_optimal(values, k):
    cb = km.kmeans_1d(values, k)[0]
    assert np.all(np.diff(cb) >= 0)
    assert _sse(values, cb) <= _brute_force_sse(values, k) * (1 + 1e-6) + 1e-9


def test_dp_beats_lloyd_and_matches_quadratic_reference():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((6, 200)).astype(np.float32)
    atoms, w = km._atoms(v, None)
    dp = np.sort(km._optimal_atoms(atoms, w, 8), axis=1)
    lloyd = km._lloyd_atoms(atoms, w, 8, 0)
    for r in range(6):
        assert _sse(v[r], dp[r]) <= _sse(v[r], lloyd[r]) * (1 + 1e-9)


def test_histogram_path_close_to_exact():
    rng = np.random.default_rng(1)
    v = rng.standard_normal(50_000).astype(np.float32)  # > MAX_ATOMS: histogram atoms
    cb = km.kmeans_1d(v, 16)[0]
    sse = _sse(v, cb)
    # Lloyd's optimum for a Gaussian at K=16 has SQNR about 20.2 dB
    assert 19.9 < 10 * np.log10((v.astype(np.float64) ** 2).sum() / sse) < 20.5
    assert _sse(v, km._lloyd_atoms(*km._atoms(v[None], None), 16, 0)[0]) >= sse * 0.999


@settings(max_examples=40, deadline=None)
@given(x=arrays(np.float32, st.tuples(st.integers(1, 7), st.integers(1, 30)), elements=st.floats(-100, 100, width=32)),
       bits=st.integers(1, 5), gran=st.sampled_from(["tensor", "channel", "group"]), group=st.integers(1, 4),
       normalize=st.sampled_from(["none", "group"]))
def test_round_trip_properties(x, bits, gran, group, normalize):
    spec = Spec(method="kmeans", bits=bits, granularity=gran, group_size=group, codebook_rows=group, seed=3)
    enc, error = KM.encode_measured(x, spec.with_options(normalize=normalize))
    out = KM.decode(enc, x.shape)
    assert out.shape == x.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert error.max_abs == float(np.abs(out - x).max())
    layout = KM.layout(x.shape, enc.params)
    assert {k: (a.dtype, a.shape) for k, a in enc.arrays.items()} == {k: (d, s) for k, (d, s, _) in layout.items()}
    cb = enc.arrays["codebook"].astype(np.float32)
    assert cb.shape[1] == 2**bits and np.all(np.diff(cb, axis=1) >= 0)
    codes = enc.arrays["codes"]
    assert codes.shape == x.shape and layout["codes"].bits == bits and codes.max() < 2**bits
    if normalize == "none":
        assert np.isin(out, cb).all()  # only codebook values
        # every value goes to its nearest level of its own codebook
        owner = {"tensor": np.zeros(x.shape[0], int), "channel": np.arange(x.shape[0]),
                 "group": np.arange(x.shape[0]) // group}[gran]
        dist = np.abs(x[:, :, None] - cb[owner][:, None, :]).min(axis=2)
        np.testing.assert_allclose(np.abs(out - x), dist, rtol=1e-6, atol=1e-6)
    again = KM.encode(x, spec.with_options(normalize=normalize))
    for k, a in enc.arrays.items():
        np.testing.assert_array_equal(a, again.arrays[k])


@pytest.mark.parametrize("value", [0.0, 0.37, -3.25])
@pytest.mark.parametrize("gran", ["tensor", "channel", "group"])
def test_constant_tensors_exact(value, gran):
    x = np.full((5, 9), value, np.float32)
    enc = KM.encode(x, Spec(method="kmeans", bits=4, granularity=gran, group_size=2, codebook_rows=2, scale_dtype="float32"))
    np.testing.assert_array_equal(KM.decode(enc, x.shape), x)
    enc = KM.encode(x, Spec(method="kmeans", bits=4, group_size=4, scale_dtype="float32").with_options(normalize="group"))
    np.testing.assert_array_equal(KM.decode(enc, x.shape), x)


def test_more_levels_than_values_is_exact():
    x = np.array([[1.5, -2.0, 3.0]], np.float32)
    enc = KM.encode(x, Spec(method="kmeans", bits=4, granularity="tensor"))
    np.testing.assert_array_equal(KM.decode(enc, x.shape), x)


def test_codebook_dtypes():
    x = np.random.default_rng(0).standard_normal((8, 32)).astype(np.float32)
    assert KM.encode(x, Spec(method="kmeans", bits=4, granularity="tensor")).arrays["codebook"].dtype == np.float32
    enc = KM.encode(x, Spec(method="kmeans", bits=4, granularity="channel"))
    assert enc.arrays["codebook"].dtype == np.float16 and enc.arrays["codebook"].shape == (8, 16)
    enc = KM.encode(x, Spec(method="kmeans", bits=4, granularity="group", codebook_rows=3))
    assert enc.arrays["codebook"].shape == (3, 16)
    tiny = x * 1e-7  # float16 would lose these: falls back to float32
    enc = KM.encode(tiny, Spec(method="kmeans", bits=4, granularity="channel"))
    assert enc.params["codebook_dtype"] == "float32"
    enc = KM.encode(x, Spec(method="kmeans", bits=4, group_size=16).with_options(normalize="group"))
    assert enc.arrays["scale"].shape == (8, 2) and enc.arrays["codebook"].shape == (1, 16)
    assert np.abs(enc.arrays["codebook"]).max() <= 1.0


def test_normalized_group_beats_per_tensor_on_heavy_tailed_rows():
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((64, 256)) * rng.uniform(0.1, 3, (64, 1))).astype(np.float32)
    tensor = KM.decode(KM.encode(x, Spec(method="kmeans", bits=4, granularity="tensor")), x.shape)
    norm = KM.decode(KM.encode(x, Spec(method="kmeans", bits=4, group_size=64).with_options(normalize="group")), x.shape)
    assert ((norm - x) ** 2).sum() < ((tensor - x) ** 2).sum()


def test_bad_options():
    with pytest.raises(ConfigError):
        KM.encode(SEED, Spec(method="kmeans", bits=9))
    with pytest.raises(ConfigError):
        KM.encode(SEED, Spec(method="kmeans", bits=2, normalize="channel"))


@pytest.mark.parametrize("bad", [{"bits": 0}, {"normalize": "rows"}, {"codebook_dtype": "int4"},
                                 {"granularity": "block"}, {"granularity": "group", "group_size": 0},
                                 {"granularity": "group"}])
def test_layout_rejects_bad_params(bad):
    params = {"bits": 4, "normalize": "none", "granularity": "channel", "codebook_dtype": "float16", **bad}
    if bad == {"granularity": "group"}:
        params.pop("group_size", None)
    with pytest.raises(ArchiveError):
        KM.layout((4, 16), params)


def test_layout_normalized_requires_scale_params():
    with pytest.raises(ArchiveError):
        KM.layout((4, 16), {"bits": 4, "normalize": "group", "codebook_dtype": "float32", "group_size": 8})


@pytest.mark.parametrize("shape", [(0, 4), (3, 0), (), (5,), (2, 0, 3)])
@pytest.mark.parametrize("method,opts,normalize", [
    ("log", {}, None), ("nf", {"granularity": "group", "group_size": 2}, None),
    ("kmeans", {"granularity": "channel"}, None), ("kmeans", {"granularity": "group", "codebook_rows": 2}, None),
    ("kmeans", {"granularity": "tensor"}, None), ("kmeans", {"group_size": 2}, "group"),
    ("vq", {"vector_dim": 3}, None)])
def test_empty_scalar_and_1d_shapes(shape, method, opts, normalize):
    x = np.full(shape, 0.5, np.float32)
    m = get_method(method)
    spec = Spec(method=method, bits=4, **opts)
    enc, error = m.encode_measured(x, spec.with_options(normalize=normalize) if normalize else spec)
    out = m.decode(enc, shape)
    assert out.shape == shape and error.error == 0 and error.count == x.size
    np.testing.assert_array_equal(out, x)
    layout = m.layout(shape, enc.params)
    assert {k: (a.dtype, a.shape) for k, a in enc.arrays.items()} == {k: (d, s) for k, (d, s, _) in layout.items()}
