"""log and nf: level tables, golden values, error bound, scale search, layout validation."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from quantcli.errors import ArchiveError, ConfigError
from quantcli.methods import get_method
from quantcli.methods.levels import levels_quantize, log_levels, nf_levels, nearest_level
from quantcli.methods.search import search_clip_ratios, uniform_qdq
from quantcli.spec import Spec

SEED = np.array([[0.1, -0.5, 0.0, 1.0], [2.5, -1.2, 0.7, -0.3], [0.9, 1.5, -2.0, 0.2]], dtype=np.float32)
# QLoRA's published NF4 table
NF4 = [-1.0, -0.6961928, -0.5250731, -0.3949175, -0.2844414, -0.1847734, -0.0910500, 0.0,
       0.0795803, 0.1609302, 0.2461123, 0.3379152, 0.4407098, 0.5626170, 0.7229568, 1.0]


def test_nf4_table_matches_qlora():
    np.testing.assert_allclose(nf_levels(4), NF4, atol=1e-6)


@pytest.mark.parametrize("bits", range(2, 9))
def test_tables_sorted_with_zero_and_ends(bits):
    for table, size in ((nf_levels(bits), 2**bits), (log_levels(bits), 2**bits - 1)):
        assert table.size == size
        assert np.all(np.diff(table) > 0)
        assert table[0] == -1 and table[-1] == 1 and 0.0 in table


def test_log_tables():
    assert log_levels(2).tolist() == [-1, 0, 1]
    assert log_levels(3).tolist() == [-1, -0.5, -0.25, 0, 0.25, 0.5, 1]
    assert log_levels(4)[8] == 2.0**-6


def test_seed_golden_log_and_nf():
    enc = get_method("log").encode(SEED, Spec(method="log", bits=4, granularity="tensor"))
    assert enc.arrays["scale"].tolist() == [2.5]
    np.testing.assert_allclose(get_method("log").decode(enc, SEED.shape)[0], [0.078125, -0.625, 0.0, 1.25])
    enc = get_method("nf").encode(SEED, Spec(method="nf", bits=4, granularity="tensor"))
    recon = get_method("nf").decode(enc, SEED.shape)
    assert enc.arrays["codes"][0, 3] == 12  # logical codes index the sorted table: NF4[12] = 0.4407
    np.testing.assert_allclose(recon[0, 3], 0.4407098 * 2.5, rtol=1e-6)
    np.testing.assert_allclose(recon[1], [2.5, -0.5250731 * 2.5, 0.2461123 * 2.5, -0.0910500 * 2.5], rtol=1e-5)


def test_nearest_level_ties_and_clipping():
    t = np.array([-1, 0, 1], np.float32)
    assert nearest_level(np.array([-5, -0.5, 0.49, 0.5, 0.51, 7], np.float32), t).tolist() == [0, 0, 1, 1, 2, 2]


finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)


@settings(max_examples=40, deadline=None)
@given(x=arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 40)), elements=finite),
       method=st.sampled_from(["log", "nf"]), bits=st.integers(2, 8),
       gran=st.sampled_from(["tensor", "channel", "group"]), group=st.integers(1, 16))
def test_round_trip_properties(x, method, bits, gran, group):
    m = get_method(method)
    spec = Spec(method=method, bits=bits, granularity=gran, group_size=group, scale_dtype="float32")
    enc, error = m.encode_measured(x, spec)
    out = m.decode(enc, x.shape)
    assert out.shape == x.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert error.max_abs == float(np.abs(out - x).max())  # measured on the reconstruction decode gives
    table = m.table(bits)
    layout = m.layout(x.shape, enc.params)
    assert {k: (a.dtype, a.shape) for k, a in enc.arrays.items()} == {k: (d, s) for k, (d, s, _) in layout.items()}
    assert enc.arrays["codes"].max() < table.size  # logical codes within the table
    # error bound: half the largest gap times the block's scale
    from quantcli.methods.base import to_blocks
    s = enc.arrays["scale"].astype(np.float32).reshape(-1)
    err = to_blocks(np.abs(out - x), gran, group)
    bound = s * np.diff(table).max() / 2
    assert np.all(err <= bound[:, None] * (1 + 1e-5) + 1e-30)
    # decode uses only table values times the block's scale
    ratio = to_blocks(out, gran, group) / np.where(s > 0, s, 1)[:, None]
    assert np.isin(np.round(ratio, 5), np.round(table, 5)).all()


@pytest.mark.parametrize("method", ["log", "nf"])
@pytest.mark.parametrize("value", [0.0, 0.37, -3.25])
def test_constant_and_zero_tensors_exact(method, value):
    x = np.full((4, 10), value, np.float32)
    for gran in ("tensor", "channel", "group"):
        spec = Spec(method=method, bits=4, granularity=gran, group_size=4, scale_dtype="float32")
        enc = get_method(method).encode(x, spec)
        np.testing.assert_array_equal(get_method(method).decode(enc, x.shape), x)


def test_bits_out_of_range():
    for method in ("log", "nf"):
        with pytest.raises(ConfigError):
            get_method(method).encode(SEED, Spec(method=method, bits=1))
        with pytest.raises(ConfigError):
            get_method(method).encode(SEED, Spec(method=method, bits=9))


@pytest.mark.parametrize("bad", [{"bits": 9}, {"bits": "4"}, {"granularity": "row"}, {"scale_dtype": "int8"},
                                 {"group_size": 0}, {"scale_search": "yes"}])
def test_layout_rejects_bad_params(bad):
    params = {"bits": 4, "granularity": "group", "group_size": 8, "scale_dtype": "float16", **bad}
    with pytest.raises(ArchiveError):
        get_method("nf").layout((4, 16), params)


def test_scale_search_lowers_error_and_is_recorded():
    rng = np.random.default_rng(0)
    x = rng.standard_t(4, size=(64, 256)).astype(np.float32)
    for method in ("nf", "log"):
        m = get_method(method)
        base = Spec(method=method, bits=4, granularity="group", group_size=64)
        plain = m.encode(x, base)
        searched = m.encode(x, base.with_options(scale_search=True))
        assert searched.params["scale_search"] is True
        e0 = ((m.decode(plain, x.shape) - x) ** 2).sum()
        e1 = ((m.decode(searched, x.shape) - x) ** 2).sum()
        assert e1 < e0
        assert np.all(searched.arrays["scale"].astype(np.float32) <= plain.arrays["scale"].astype(np.float32))


def test_search_never_worse_per_block_and_vectorised():
    rng = np.random.default_rng(1)
    blocks = rng.standard_normal((50, 32)).astype(np.float32)
    qdq = uniform_qdq(4, "asymmetric")
    ratio = search_clip_ratios(blocks, qdq, chunk_elems=100)  # several chunks
    e_best = ((qdq(blocks, ratio) - blocks) ** 2).sum(axis=1)
    e_one = ((qdq(blocks, np.ones(50, np.float32)) - blocks) ** 2).sum(axis=1)
    assert np.all(e_best <= e_one) and np.any(e_best < e_one)
    assert set(np.unique(ratio)) <= set(np.round(np.linspace(1, 0.5, 21), 3).astype(np.float32))


def test_uniform_callback_matches_uniform_method_at_ratio_one():
    from quantcli.methods.uniform import uniform_quantize
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 64)).astype(np.float32)
    for scheme in ("symmetric", "asymmetric"):
        recon = uniform_quantize(x, 4, scheme, "group", 16, "float32")[4]
        blocks = x.reshape(-1, 16)
        mine = uniform_qdq(4, scheme)(blocks, np.ones(len(blocks), np.float32)).reshape(x.shape)
        np.testing.assert_allclose(mine, recon, atol=1e-6)


def test_levels_quantize_deterministic():
    x = np.random.default_rng(3).standard_normal((16, 48)).astype(np.float32)
    a = levels_quantize(x, nf_levels(4), "group", 16, "auto", True)
    b = levels_quantize(x, nf_levels(4), "group", 16, "auto", True)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[3], b[3])
