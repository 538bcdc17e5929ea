"""The kernels that work from codes directly (order-0 counts for the priced pass, shrink sums and
the reconstruction from stored codes) match their numpy twins bit for bit and give what the
levels-based path gives, and the last priced pass writing over its input changes no code."""

from __future__ import annotations

import numpy as np
import pytest
from oracles import dq as oracle

from quantcli.kernels import dq as kernels
from quantcli.methods import dq, ecsq

SHAPES = [(1, 1), (5, 1), (1, 9), (13, 17), (37, 53)]


@pytest.mark.parametrize("shape", SHAPES)
def test_order0_counts_match_the_oracle_and_a_histogram_by_quantizer(shape):
    rng = np.random.default_rng(sum(shape))
    x = (rng.laplace(0, 1, shape) * 3).astype(np.float32)
    k = dq.trellis(x, 0.7, 0.0)
    lo, size = int(k.min()), int(k.max() - k.min()) + 1
    a, b = np.zeros((2, size), np.int64), np.zeros((2, size), np.int64)
    kernels.order0_counts(k, lo, a)
    oracle.order0_counts(k, lo, b)
    assert a.tobytes() == b.tobytes()
    q = oracle.QUANTIZER[dq.states(k)]
    for z in (0, 1):
        assert a[z].tolist() == np.bincount(k[q == z] - lo, minlength=size).tolist()
    assert a.sum() == k.size


@pytest.mark.parametrize("dtype,offset", [(np.int32, 0), (np.uint8, -9), (np.uint16, -300), (np.int64, 5)])
def test_code_shrink_kernels_match_the_levels_path_and_the_oracle(dtype, offset):
    rng = np.random.default_rng(3)
    for shape in SHAPES:
        x = (rng.laplace(0, 1, shape) * 3).astype(np.float32)
        k = dq.trellis(x, 0.7, 0.0) if offset == 0 else rng.integers(0, 40, shape)
        codes = (k - (offset if offset == 0 else 0)).astype(dtype)
        lv = dq.levels(codes.astype(np.int64) + offset)
        want = dq.shrink_sums(x, lv, 0.7)
        a, b = np.zeros(4), np.zeros(4)
        kernels.code_shrink_sums(x, codes, offset, 0.7, a)
        oracle.code_shrink_sums(x, codes, offset, 0.7, b)
        assert a.tobytes() == b.tobytes() == want.tobytes()
        for d in ((0, 0), (37, -5), (128, 128)):
            want32 = dq.shrunk(lv, 0.7, d)
            got = dq.code_shrunk(codes, 0.7, d, offset=offset)
            b32 = np.empty(shape, np.float32)
            oracle.code_shrunk(codes, offset, float(d[0]), float(d[1]), np.float32(0.7), b32)
            assert got.tobytes() == b32.tobytes() == want32.tobytes()
        assert dq.code_shrunk(codes, 0.7, offset=offset).tobytes() == \
            dq.reconstruct(codes.astype(np.int64) + offset, 0.7).tobytes()


def test_order0_prices_equal_the_counted_model():
    rng = np.random.default_rng(5)
    k = dq.trellis((rng.laplace(0, 1, (20, 30)) * 4).astype(np.float32), 0.5, 0.0)
    (b0, b1), lo = dq.order0_prices(k)
    counts = np.zeros((2, int(k.max()) - lo + 1), np.int64)
    oracle.order0_counts(k, lo, counts)
    p = (counts + 0.5) / (counts.sum(1, keepdims=True) + 0.5 * counts.shape[1])
    assert lo == int(k.min())
    np.testing.assert_array_equal(np.stack([b0, b1]), -np.log2(p))


@pytest.mark.parametrize("passes", [2, 3])
def test_last_priced_pass_in_place_gives_the_codes_of_fresh_passes(passes):
    rng = np.random.default_rng(passes)
    x = (rng.laplace(0, 1, (31, 47)) * 2).astype(np.float32)
    step = 0.4
    want = dq.trellis(x, step, 0.0)
    for _ in range(passes - 1):
        prices, lo = dq.order0_prices(want)
        want = dq.trellis(x, step, 0.3 * step * step, prices, offset=lo)
    k, rec = dq.quantize_dq(x, step, c=0.3, passes=passes)
    assert k.tobytes() == want.tobytes()
    assert rec is not None and rec.tobytes() == dq.reconstruct(want, step).tobytes()


def test_trellis_out_must_be_contiguous_int32_of_the_shape():
    x = np.ones((3, 4), np.float32)
    for bad in (np.empty((3, 4), np.int64), np.empty((4, 3), np.int32), np.empty((3, 8), np.int32)[:, ::2]):
        with pytest.raises(ValueError, match="out must be"):
            dq.trellis(x, 0.5, 0.0, out=bad)
    out = np.full((3, 4), 7, np.int32)
    assert dq.trellis(x, 0.5, 0.0, out=out) is out and out.tolist() == dq.trellis(x, 0.5, 0.0).tolist()


def test_trellis_quantize_reconstruction_is_the_shrunk_levels():
    rng = np.random.default_rng(8)
    x = (rng.laplace(0, 1, (40, 64)) * 0.05).astype(np.float32)
    k, rec, shrink = ecsq.trellis_quantize(x, 0.01)
    assert shrink == ecsq.best_shrink(x, dq.levels(k), 0.01)
    assert rec.tobytes() == ecsq.shrunk(dq.levels(k), 0.01, shrink).tobytes()


def test_a_large_tensor_is_priced_from_the_distortion_codes_of_every_mth_row(monkeypatch):
    monkeypatch.setattr(dq, "PRICE_SAMPLE", 200)
    rng = np.random.default_rng(9)
    x = (rng.laplace(0, 1, (60, 25)) * 2).astype(np.float32)  # 1500 values: every 7th row prices
    step = 0.4
    prices, lo = dq.order0_prices(dq.trellis(x[::7], step, 0.0))
    want = dq.trellis(x, step, 0.3 * step * step, prices, offset=lo)
    k, _ = dq.quantize_dq(x, step, c=0.3, recon=False)
    assert k.tobytes() == want.tobytes()
    full, _ = dq.quantize_dq(x[:15], step, c=0.3, recon=False)  # 375 values, under 2 x 200: every row
    prices, lo = dq.order0_prices(dq.trellis(x[:15], step, 0.0))
    assert full.tobytes() == dq.trellis(x[:15], step, 0.3 * step * step, prices, offset=lo).tobytes()
