import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from quantcli.errors import ConfigError
from quantcli.methods import get_method
from quantcli.methods.base import scale_shape
from quantcli.methods.uniform import qrange, uniform_quantize
from quantcli.spec import Spec

UNIFORM = get_method("uniform")
SEED_CODES = [[5, -25, 0, 51], [127, -61, 36, -15], [46, 76, -102, 10]]
SEED_RECON = [[0.09842519, -0.492126, 0.0, 1.003937],
              [2.5, -1.2007874, 0.70866144, -0.2952756],
              [0.9055118, 1.496063, -2.007874, 0.19685039]]


def test_seed_golden_symmetric_int8(seed_matrix):
    codes, scale, zero, dtype, recon = uniform_quantize(seed_matrix, 8, "symmetric", "tensor")
    assert (codes.astype(int) - 127).reshape(3, 4).tolist() == SEED_CODES
    assert scale.dtype == np.float32 and scale.shape == (1,)
    assert scale[0] == np.float32(2.5) / np.float32(127)
    np.testing.assert_allclose(scale[0], 0.01968504, rtol=0, atol=5e-9)
    assert zero is None and dtype == "float32"
    np.testing.assert_allclose(recon, SEED_RECON, atol=1e-6)


def test_seed_golden_through_method(seed_matrix):
    enc = UNIFORM.encode(seed_matrix, Spec(granularity="tensor"))
    signed = enc.arrays["codes"].astype(int) - 127  # logical codes: one per value, the tensor's shape
    assert signed.reshape(3, 4).tolist() == SEED_CODES
    np.testing.assert_allclose(UNIFORM.decode(enc, (3, 4)), SEED_RECON, atol=1e-6)


def _max_scale(enc, shape):
    return float(enc.arrays["scale"].astype(np.float32).max())


arrays = hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9),
                    elements=st.floats(-1e3, 1e3, width=32, allow_subnormal=False))


@given(x=arrays, bits=st.integers(2, 8), scheme=st.sampled_from(["symmetric", "asymmetric"]),
       granularity=st.sampled_from(["tensor", "channel", "group"]), group_size=st.integers(1, 7),
       scale_dtype=st.sampled_from(["auto", "float32", "float16", "bfloat16"]))
def test_uniform_properties(x, bits, scheme, granularity, group_size, scale_dtype):
    spec = Spec(bits=bits, scheme=scheme, granularity=granularity, group_size=group_size, scale_dtype=scale_dtype)
    enc, error = UNIFORM.encode_measured(x, spec)
    codes = enc.arrays["codes"]
    lo, hi = qrange(bits, scheme)
    assert codes.shape == x.shape and codes.dtype == np.uint8
    assert codes.max(initial=0) <= hi - lo  # codes are unsigned, 0 .. 2^b-1 (or 2*qmax)
    layout = UNIFORM.layout(x.shape, enc.params)
    assert {k: (v.dtype, v.shape) for k, v in enc.arrays.items()} == {k: (d, s) for k, (d, s, _) in layout.items()}
    assert layout["codes"].bits == bits and layout["scale"].bits is None
    assert enc.arrays["scale"].shape == scale_shape(x.shape, granularity, group_size)
    x_hat = UNIFORM.decode(enc, x.shape)
    assert x_hat.shape == x.shape and x_hat.dtype == np.float32
    recon = uniform_quantize(x, bits, scheme, granularity, group_size, scale_dtype)[4]
    np.testing.assert_array_equal(x_hat, recon)  # the math alone and encode -> decode agree bit for bit
    assert error.max_abs == float(np.abs(x - x_hat).max(initial=0))
    # every value within half a step of its own block's stored scale
    from quantcli.methods.base import to_blocks
    s = enc.arrays["scale"].astype(np.float32).reshape(-1, 1)
    err = np.abs(to_blocks(x, granularity, group_size) - to_blocks(x_hat, granularity, group_size))
    tol = 1e-6 * np.abs(to_blocks(x, granularity, group_size)) + 1e-30
    assert (err <= s / 2 * (1 + 1e-5) + tol).all()
    assert np.isfinite(x_hat).all()


@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric"])
@pytest.mark.parametrize("granularity", ["tensor", "channel", "group"])
def test_all_zero_is_exact(scheme, granularity):
    x = np.zeros((4, 10), np.float32)
    enc = UNIFORM.encode(x, Spec(bits=4, scheme=scheme, granularity=granularity, group_size=3))
    out = UNIFORM.decode(enc, x.shape)
    assert np.array_equal(out, x) and not np.isnan(enc.arrays["scale"].astype(np.float32)).any()


@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric"])
@pytest.mark.parametrize("value", [0.75, -3.0, 1e-3])
def test_constant_tensor_reconstructs(scheme, value):
    x = np.full((3, 8), value, np.float32)
    enc = UNIFORM.encode(x, Spec(bits=8, scheme=scheme, granularity="channel"))
    np.testing.assert_allclose(UNIFORM.decode(enc, x.shape), x, rtol=1e-6)


def test_group_scales_are_float16_rounded_up():
    x = np.random.default_rng(1).normal(0, 0.02, (16, 256)).astype(np.float32)
    enc = UNIFORM.encode(x, Spec(bits=4, granularity="group", group_size=64))
    assert enc.params["scale_dtype"] == "float16" and enc.arrays["scale"].dtype == np.float16
    exact = np.abs(x.reshape(-1, 64)).max(1) / 7
    assert (enc.arrays["scale"].astype(np.float32).reshape(-1) >= exact).all()


def test_float16_falls_back_when_scales_do_not_fit():
    x = np.array([[1e9, -2.0], [3.0, 4.0]], np.float32)
    enc = UNIFORM.encode(x, Spec(bits=8, granularity="group", group_size=2))
    assert enc.params["scale_dtype"] == "float32"


def test_partial_last_group():
    x = np.arange(2 * 10, dtype=np.float32).reshape(2, 10)
    enc = UNIFORM.encode(x, Spec(bits=8, granularity="group", group_size=4, scale_dtype="float32"))
    assert enc.arrays["scale"].shape == (2, 3)
    np.testing.assert_allclose(UNIFORM.decode(enc, x.shape), x, atol=19 / 127 / 2 + 1e-6)


@pytest.mark.parametrize("bits", [1, 9])
def test_bits_out_of_range(bits):
    with pytest.raises(ConfigError, match="2 to 8"):
        UNIFORM.encode(np.ones((2, 2), np.float32), Spec(bits=bits))


def test_group_size_must_be_positive():
    with pytest.raises(ConfigError, match="group-size"):
        Spec(group_size=0)


def test_more_bits_less_error():
    x = np.random.default_rng(2).standard_normal((64, 64)).astype(np.float32)
    errs = [np.mean((UNIFORM.decode(e, x.shape) - x) ** 2)
            for e in (UNIFORM.encode(x, Spec(bits=b)) for b in range(2, 9))]
    assert all(a > b for a, b in zip(errs, errs[1:]))
    # each extra bit buys close to 6 dB at high rate
    assert 5.0 < 10 * np.log10(errs[4] / errs[5]) < 7.0


@pytest.mark.parametrize("scale_search", [False, True])
def test_huge_values_give_finite_metrics(scale_search):
    """Squares of 1e30 overflow float32: the error sums must still be right (float64 there)."""
    x = np.array([[1e30, -3e29, 2e29, 0.0], [1.0, 2.0, -3.0, 4.0]], np.float32)
    enc, error = UNIFORM.encode_measured(x, Spec(bits=8, scale_search=scale_search))
    ref = x.astype(np.float64)
    err = ref - UNIFORM.decode(enc, x.shape).astype(np.float64)
    assert error.signal == pytest.approx(float((ref ** 2).sum()), rel=1e-6)
    assert error.error == pytest.approx(float((err ** 2).sum()), rel=1e-5)
    assert np.isfinite(error.sqnr_db)
