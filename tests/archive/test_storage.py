"""Narrow storage of scales and codebooks (one rule for every method), params predicted from the
data, and metrics that stay defined when an error is infinite."""

import math

import numpy as np
import pytest

from quantcli import ArchiveError, InputError, Spec, open_archive, quantize_file
from quantcli.methods import get_method
from quantcli.methods.scales import fits, store_narrow
from quantcli.metrics import ErrorStats, sqnr_db

# every method that stores a scale or a codebook, asking explicitly for float16 side arrays
NARROW = {
    "uniform": Spec(bits=4, granularity="group", group_size=4, scale_dtype="float16"),
    "nf": Spec(method="nf", bits=4, granularity="group", group_size=4, scale_dtype="float16"),
    "log": Spec(method="log", bits=4, granularity="group", group_size=4, scale_dtype="float16"),
    "kmeans": Spec(method="kmeans", bits=3, granularity="channel", scale_dtype="float16"),
    "kmeans-norm": Spec(method="kmeans", bits=3, normalize="group", group_size=4, scale_dtype="float16"),
    "vq": Spec(method="vq", bits=4, vector_dim=2, scale_dtype="float16"),
    "pq": Spec(method="pq", subvector_dim=2, centroids=8, scale_dtype="float16"),
}


def _dtypes(params):
    return {k: v for k, v in params.items() if k.endswith("_dtype")}


def _weights(scale):
    return (np.random.default_rng(0).standard_normal((24, 8)) * scale).astype(np.float32)


@pytest.mark.parametrize("name", sorted(NARROW))
def test_float16_fits_ordinary_weights(name):
    spec = NARROW[name]
    m = get_method(spec.method)
    x = _weights(0.05)
    enc, err = m.encode_measured(x, spec)
    assert set(_dtypes(enc.params).values()) == {"float16"}
    assert m.params_for(x.shape, spec, x) == enc.params == m.params_for(x.shape, spec)
    assert np.isfinite(err.sqnr_db) and err.sqnr_db > 8


@pytest.mark.parametrize("name", sorted(NARROW))
def test_float16_overflow_falls_back_to_float32_and_is_recorded(name):
    """Scales or codebook levels beyond float16's 65504: the whole array is stored float32 and the
    params say so (never an inf; explicit --scale-dtype float16 included)."""
    spec = NARROW[name]
    m = get_method(spec.method)
    x = _weights(1e6)
    enc, err = m.encode_measured(x, spec)
    assert "float32" in _dtypes(enc.params).values()
    for role, a in enc.arrays.items():
        if a.dtype.kind == "f":
            assert np.isfinite(a.astype(np.float32)).all(), role
            assert a.dtype == np.dtype(enc.params.get("codebook_dtype" if "codebook" in role else "scale_dtype"))
    out = m.decode(enc, x.shape)
    assert np.isfinite(out).all() and err.sqnr_db > 8  # (inf when the codebook holds every value)
    # the shape alone predicts the request; the data predicts exactly what encode recorded
    assert set(_dtypes(m.params_for(x.shape, spec)).values()) == {"float16"}
    assert m.params_for(x.shape, spec, x) == enc.params


@pytest.mark.parametrize("name", sorted(NARROW))
def test_subnormal_side_values(name):
    """Values of order 1e-7: float16 would make scales and scalar/vector codebooks subnormal, so
    they fall back; pq keeps subnormal centroid components (an absolute error below 6e-8)."""
    spec = NARROW[name]
    m = get_method(spec.method)
    x = _weights(1e-7)
    enc, err = m.encode_measured(x, spec)
    used = _dtypes(enc.params)
    assert used == ({"codebook_dtype": "float16"} if name == "pq" else {k: "float32" for k in used}) or \
        name == "kmeans-norm" and used == {"scale_dtype": "float32", "codebook_dtype": "float16"}
    assert m.params_for(x.shape, spec, x) == enc.params
    assert np.isfinite(m.decode(enc, x.shape)).all() and err.sqnr_db > 8


def test_pq_float16_codebooks_of_large_weights_through_the_archive(tmp_path):
    """Formerly: centroids of 1e5 stored as float16 inf, then `math domain error` in sqnr_db."""
    np.save(tmp_path / "w.npy", _weights(1e5)[:, :8])
    arc = tmp_path / "w.qnt.safetensors"
    r = quantize_file([str(tmp_path / "w.npy")], str(arc), NARROW["pq"])
    assert r.tensors[0].sqnr_db > 8
    with open_archive(str(arc)) as a:
        t = a.tensors[0]
        assert t.params["codebook_dtype"] == "float32" and a.encoding(t).arrays["codebooks"].dtype == np.float32
        assert np.isfinite(a.decode(t)).all()


@pytest.mark.parametrize("method", ["uniform", "nf"])
def test_params_for_with_scale_search_matches_encode(method):
    """A searched scale may fall below float16's normal range while the plain one does not: the
    prediction then runs the search, and still equals what encode records."""
    spec = Spec(method=method, bits=4, granularity="group", group_size=8, scale_search=True)
    m = get_method(method)
    rng = np.random.default_rng(1)
    for absmax in (0.05, 6e-4, 1e-6):  # both ends fit; only the plain end fits; neither fits
        x = (rng.standard_t(3, (16, 32)) * absmax / 10).astype(np.float32)
        enc = m.encode(x, spec)
        assert m.params_for(x.shape, spec, x) == enc.params


def test_store_narrow_rule():
    s = np.array([0.0, 1e-3, 70000.0], np.float32)
    stored, name = store_narrow(s, "float16", rounding="up")
    assert name == "float32" and stored.dtype == np.float32 and stored.tolist() == s.tolist()
    stored, name = store_narrow(s[:2], "float16", rounding="up")
    assert name == "float16" and (stored.astype(np.float32) >= s[:2]).all()  # rounded up, never down
    assert store_narrow(np.array([1e-6]), "float16")[1] == "float32"
    assert store_narrow(np.array([1e-6]), "float16", subnormal="keep")[1] == "float16"
    assert store_narrow(np.array([1e-6]), "bfloat16")[1] == "bfloat16"  # bfloat16 has float32's range
    assert fits(np.array([1.0]), "float16") and not fits(np.array([1e5]), "float16")
    with pytest.raises(InputError, match="does not fit float32"):
        store_narrow(np.array([np.inf], np.float32), "float16")


def test_asymmetric_range_beyond_float32_is_refused_not_stored(tmp_path):
    """(hi - lo) / 15 of +-3e38 is inf even in float32: the tensor is refused, naming it."""
    np.save(tmp_path / "w.npy", np.array([[3e38, -3e38], [1.0, 2.0]], np.float32))
    with pytest.raises(InputError, match="'w'.*does not fit float32"):
        quantize_file([str(tmp_path / "w.npy")], str(tmp_path / "o.qnt.safetensors"),
                      Spec(bits=4, scheme="asymmetric", granularity="tensor"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.npy"]


@pytest.mark.parametrize("signal, error, want", [
    (1.0, 0.0, math.inf), (0.0, 0.0, math.inf), (0.0, 1.0, -math.inf), (100.0, 1.0, 20.0),
    (1.0, math.inf, -math.inf), (math.inf, math.inf, math.nan), (math.nan, 1.0, math.nan),
    (1.0, math.nan, math.nan), (math.inf, 1.0, math.inf), (1e-320, 1e308, -math.inf)])
def test_sqnr_db_is_total(signal, error, want):
    got = sqnr_db(signal, error)
    assert math.isnan(got) if math.isnan(want) else got == want
    assert ErrorStats(4, signal, error, 1.0).sqnr_db == got or math.isnan(got)


@pytest.mark.parametrize("seed", range(6))
def test_codec_entropy_never_makes_an_archive_larger_than_bitpack(tmp_path, seed):
    """Whole files, header included: an entropy-coded array must save more than recording its
    codec costs in the manifest (and the header's alignment), or the tensor keeps its defaults
    (the red team's case: nf4 g64 on a small matrix grew by 6-16 bytes)."""
    import os

    from quantcli import api

    rng = np.random.default_rng(seed)
    shapes = [(51, 213), (69, 87), (33, 164), (53, 220), (8, 64), (96, 300)]
    x = rng.standard_normal(shapes[seed]).astype(np.float32)
    np.save(tmp_path / "w.npy", x)
    for spec in (dict(method="nf", bits=4, granularity="group", group_size=64),
                 dict(bits=4, scheme="asymmetric", granularity="group", group_size=64), dict(method="kmeans", bits=3)):
        sizes = {}
        for codec in ("bitpack", "entropy"):
            out = str(tmp_path / f"{codec}.qnt.safetensors")
            api.quantize([str(tmp_path / "w.npy")], out, codec=codec, **spec)
            sizes[codec] = os.path.getsize(out)
        assert sizes["entropy"] <= sizes["bitpack"], (spec, sizes)


# --- the one codec interface: defaults are codecs too, implied and never recorded ---------------

def test_default_codecs_through_the_registry_are_the_format_1_bytes(seed_matrix):
    """`store` with default codecs gives exactly bitpack.pack_bits for codes and the array itself
    for plain arrays (the version-1 bytes), records nothing, and decodes back through the same
    registry to the logical arrays."""
    from quantcli import codecs
    from quantcli.archive.storage import logical_arrays, store, stored_layout
    from quantcli.codecs.bitpack import pack_bits
    spec = Spec(bits=3, scheme="asymmetric", granularity="group", group_size=4)
    enc = get_method("uniform").encode(seed_matrix, spec)
    stored = store(enc, seed_matrix.shape)
    assert stored.codecs == {}
    assert stored.arrays["codes"].tobytes() == pack_bits(enc.arrays["codes"], 3).tobytes()
    assert stored.arrays["scale"].tobytes() == enc.arrays["scale"].tobytes()
    layout = stored_layout("uniform", seed_matrix.shape, enc.params)
    assert {r: (a.dtype, a.shape) for r, a in stored.arrays.items()} == layout
    back = logical_arrays("uniform", seed_matrix.shape, enc.params, stored.arrays)
    assert all(np.array_equal(back[r], enc.arrays[r]) for r in enc.arrays)
    assert codecs.default_for(3).name == "bitpack" and codecs.default_for(None).name == "plain"
    assert codecs.entropy_for(3).name == "rans" and codecs.entropy_for(None).name == "lossless"


@pytest.mark.parametrize("entry", [
    {"codec": "bitpack", "nbytes": 3},   # a default codec is implied, never recorded
    {"codec": "plain", "nbytes": 3},
    {"codec": "zstd", "nbytes": 3},      # not a codec of the registry
    {"codec": ["rans"], "nbytes": 3},    # not even a name
    {"codec": "lossless", "nbytes": 3},  # a plain-array codec for codes
])
def test_a_recorded_entry_must_name_a_recorded_codec_that_can_store_the_array(entry):
    from quantcli.archive.storage import check_codecs
    params = get_method("uniform").params_for((4, 6), Spec(bits=4))
    with pytest.raises(ArchiveError, match="codes"):
        check_codecs("uniform", (4, 6), params, {"codes": entry})
