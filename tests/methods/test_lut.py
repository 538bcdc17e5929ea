"""Lookup-table dot products: the seed's golden values (4.2.2), the kernels and their numpy twins
(tests/oracles/lut.py) against the brute-force reference `queries @ pq_decode(pq).T`, and the
kernels equal to the twins bit for bit."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import oracles
from quantcli import lut
from quantcli.errors import InputError
from quantcli.methods.pq import PQCodes, column_split, pq_decode, pq_encode

SEED_MATRIX = np.array([[0.1, -0.5, 0.0, 1.0],
                        [2.5, -1.2, 0.7, -0.3],
                        [0.9, 1.5, -2.0, 0.2]], dtype=np.float32)
SEED_QUERY = np.array([0.2, -0.1, 0.5, 1.0], dtype=np.float32)



@pytest.fixture(params=["kernel", "oracle"])
def backend(request, monkeypatch):
    """Run a test on the compiled kernels and again on their numpy twins."""
    if request.param == "oracle":
        oracles.use(monkeypatch, "lut")
    return request.param


def random_pq(rng, n, d, k, m_sub):
    """Random codes and codebooks with zero padding slots, as pq_encode makes them."""
    s, widths, _ = column_split(d, m_sub)
    books = rng.standard_normal((m_sub, k, s)).astype(np.float32)
    books *= np.arange(s)[None, None, :] < widths[:, None, None]
    codes = rng.integers(0, k, (n, m_sub)).astype(np.uint8 if k <= 256 else np.uint16)
    return PQCodes(codebooks=books, codes=codes, d=d)


def test_golden_422(backend):
    pq = pq_encode(SEED_MATRIX, subspaces=2, centroids=3, seed=0)
    out = lut.lookup_dot(SEED_QUERY, pq)
    assert out.shape == (3,) and out.dtype == np.float32
    np.testing.assert_allclose(out, [1.07, 0.67, -0.77], atol=1e-5)
    tables = lut.lookup_tables(SEED_QUERY, pq)
    assert tables.shape == (1, 2, 3)
    # the seed's tables, in whatever centroid order k-means produced
    np.testing.assert_allclose(np.sort(tables[0, 0]), [0.03, 0.07, 0.62], atol=1e-5)
    np.testing.assert_allclose(np.sort(tables[0, 1]), [-0.8, 0.05, 1.0], atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 60), d=st.integers(1, 40), k=st.sampled_from([2, 3, 5, 16, 17, 256, 300]),
       b=st.sampled_from([1, 2, 7, 17, 33]), data=st.data())
def test_matches_bruteforce(backend, n, d, k, b, data):
    m_sub = data.draw(st.integers(1, d))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    pq = random_pq(rng, n, d, k, m_sub)
    q = rng.standard_normal((b, d)).astype(np.float32)
    ref = q.astype(np.float64) @ pq_decode(pq).astype(np.float64).T
    out = lut.lookup_dot(q, pq)
    assert out.shape == (b, n) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.sqrt(d))
    tables = lut.lookup_tables(q, pq)
    assert tables.shape == (b, m_sub, k)


def test_trained_uneven_split_and_repeat_calls(backend):
    rng = np.random.default_rng(11)
    w = rng.standard_normal((97, 30)).astype(np.float32)
    pq = pq_encode(w, subspaces=7, centroids=16, iters=8)  # 30 % 7 != 0
    for b in (1, 5):
        q = rng.standard_normal((b, 30)).astype(np.float32)
        ref = q @ pq_decode(pq).T
        for _ in range(2):  # second call uses the cached layouts
            np.testing.assert_allclose(lut.lookup_dot(q, pq), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k", [3, 16, 17, 300])
@pytest.mark.parametrize("b", [1, 5, 40])
def test_kernels_equal_their_twins_bit_for_bit(monkeypatch, k, b):
    """Sums in subspace order, no fastmath: the same floats from the kernels and from numpy
    (K <= 16 goes through the paired tables, K > 16 through the plain ones)."""
    rng = np.random.default_rng(k * 100 + b)
    pq = random_pq(rng, 70, 27, k, 7)
    q = rng.standard_normal((b, 27)).astype(np.float32)
    want = lut.lookup_dot(q, pq)
    oracles.use(monkeypatch, "lut")
    got = lut.lookup_dot(q, pq)
    assert got.dtype == want.dtype == np.float32 and got.tobytes() == want.tobytes()


def test_bad_queries():
    pq = pq_encode(SEED_MATRIX, subspaces=2, centroids=3)
    with pytest.raises(InputError):
        lut.lookup_dot(np.ones(5, np.float32), pq)
    with pytest.raises(InputError):
        lut.lookup_dot(np.ones((2, 2, 4), np.float32), pq)
    with pytest.raises(InputError):
        lut.lookup_dot(np.array([np.nan, 0, 0, 0], np.float32), pq)


def test_empty_matrix():
    pq = PQCodes(codebooks=np.zeros((2, 4, 2), np.float32), codes=np.zeros((0, 2), np.uint8), d=4)
    assert lut.lookup_dot(np.ones((3, 4), np.float32), pq).shape == (3, 0)
