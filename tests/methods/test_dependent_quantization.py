"""Dependent quantization engine (quantcli/methods/dq.py on quantcli/kernels/dq.py): the trellis
against brute force, the kernels against their numpy twins (tests/oracles/dq.py) bit for bit, and
the state machine."""

import itertools

import numpy as np
import pytest

import oracles
from oracles import dq as oracle
from quantcli.kernels.dq import NEXT, QUANTIZER
from quantcli.methods import dq


@pytest.fixture(params=["kernel", "oracle"])
def backend(request, monkeypatch):
    """Run a test on the compiled kernels and again on their numpy twins."""
    if request.param == "oracle":
        oracles.use(monkeypatch, "dq")
    return request.param


def split_streams(k):
    """(codes coded under Q0, under Q1), column-major: one symbol stream per quantizer."""
    q = (dq.states(k) >> 1).T
    return k.T[q == 0], k.T[q == 1]


def ref_states(row):
    """The machine written out for one row: 0,1 -> Q0; 2,3 -> Q1; next = NEXT[state][parity]."""
    table = {0: (0, 2), 1: (2, 0), 2: (1, 3), 3: (3, 1)}
    s, out = 0, []
    for k in row:
        out.append(s)
        s = table[s][int(k) % 2]
    return out


def ref_level(k, state):
    return 2 * k - (state >= 2) * (k > 0) + (state >= 2) * (k < 0)


def path_cost(t, k, lam_s=0.0, prices=None, offset=0, esc=0.0):
    """Cost of code rows k for t = x / step, in units of step^2, as the trellis defines it."""
    lv = dq.levels(k).astype(np.float64)
    cost = ((t - lv) ** 2).sum(-1)
    if prices is not None:
        q = QUANTIZER[dq.states(k)]
        i = k.astype(np.int64) - offset
        bits = np.full(k.shape, esc)
        for z in (0, 1):
            tab = prices[z]
            ok = (q == z) & (i >= 0) & (i < tab.size)
            bits[ok] = tab[i[ok]]
        cost = cost + lam_s * bits.sum(-1)
    return cost


def candidate_levels(tj, q):
    """Zero and the two levels of quantizer q around tj (largest level <= tj and the next)."""
    if q == 0:
        lo = 2 * np.floor(tj / 2)
    else:
        lo = 2 * np.floor((tj - 1) / 2) + 1
    return {0.0, lo, lo + 2}


def all_sequences(n, r):
    return np.array(list(itertools.product(range(-r, r + 1), repeat=n)), dtype=np.int32)


# ----------------------------------------------------------------------------- state machine

def test_states_and_levels_match_the_written_out_machine():
    rng = np.random.default_rng(1)
    k = rng.integers(-6, 7, (7, 11)).astype(np.int32)
    s = dq.states(k)
    assert s.dtype == np.int8
    for r in range(k.shape[0]):
        assert list(s[r]) == ref_states(k[r])
        want = [ref_level(int(a), b) for a, b in zip(k[r], s[r])]
        assert list(dq.levels(k)[r]) == want
    rec = dq.reconstruct(k, 0.25)
    assert rec.dtype == np.float32
    np.testing.assert_array_equal(rec, dq.levels(k).astype(np.float32) * np.float32(0.25))
    # Q0 levels are even, Q1 levels odd or zero
    lv, q = dq.levels(k), QUANTIZER[s]
    assert np.all(lv[q == 0] % 2 == 0)
    assert np.all((lv[q == 1] % 2 == 1) | (lv[q == 1] == 0))


def test_pred_table_inverts_next():
    for ns, pairs in enumerate(oracle.PRED):
        assert len(pairs) == 2 and pairs[0][0] < pairs[1][0]
        assert all(NEXT[s, p] == ns for s, p in pairs)


# ----------------------------------------------------------------------------- optimality

@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_trellis_is_optimal_over_all_codes_without_prices(backend, n):
    """Pure distortion: the candidate sets hold the optimum, so no code sequence in a wide range
    does better."""
    rng = np.random.default_rng(n)
    seqs = all_sequences(n, 4)  # levels up to +-8, beyond every t below
    for _ in range(6):
        t = rng.uniform(-5, 5, n)
        k = dq.trellis(t[None].astype(np.float32), 1.0, 0.0)
        t32 = t.astype(np.float32).astype(np.float64)
        best = path_cost(t32, seqs).min()
        assert path_cost(t32, k)[0] == pytest.approx(best, abs=1e-9)


@pytest.mark.parametrize("n", [1, 3, 5])
def test_trellis_is_optimal_over_its_candidates_with_prices(backend, n):
    """With prices the search is exact over sequences whose every code is zero or one of its
    quantizer's two levels around t (the documented candidate set); escape prices included."""
    rng = np.random.default_rng(10 + n)
    seqs = all_sequences(n, 4)
    st_ = dq.states(seqs)
    for trial in range(6):
        step = 0.5
        t = rng.uniform(-4.5, 4.5, n)
        x = (t * step).astype(np.float32)
        t = x.astype(np.float64) / step
        prices = (rng.uniform(0, 6, 5), rng.uniform(0, 6, 5))  # codes -2..2; others escape
        lam = rng.uniform(0.05, 3.0) * step * step
        k = dq.trellis(x[None], step, lam, prices, offset=-2, escape=7.5)
        lv = dq.levels(seqs).astype(np.float64)
        ok = np.ones(len(seqs), bool)
        for j in range(n):
            for z in (0, 1):
                cand = candidate_levels(t[j], z)
                ok &= (QUANTIZER[st_[:, j]] != z) | np.isin(lv[:, j], list(cand))
        costs = path_cost(t, seqs, lam / step ** 2, prices, -2, 7.5)
        got = path_cost(t, k, lam / step ** 2, prices, -2, 7.5)[0]
        assert got == pytest.approx(costs[ok].min(), abs=1e-9), trial
        assert any(np.array_equal(s, k[0]) for s in seqs[ok])


# ----------------------------------------------------------------------------- backends, ties, chunks

def tie_heavy(rng, rows, cols):
    """Values on the half-step grid (exact t = x / step): ties between candidates everywhere."""
    return (rng.integers(-12, 13, (rows, cols)) * 0.25).astype(np.float32)


@pytest.mark.parametrize("seed", range(4))
def test_kernel_and_oracle_give_identical_codes(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    cases = [(rng.standard_normal((37, 53)) * 0.07).astype(np.float32), tie_heavy(rng, 29, 41)]

    def run():
        out = []
        for x in cases:
            for step in (0.5, 0.01, 0.13):
                a = dq.trellis(x, step, 0.0)
                prices, lo = dq.order0_prices(a)
                out += [a] + [dq.trellis(x, step, lam * step * step, prices, offset=lo) for lam in (0.1, 2.0)]
                out += [dq.trellis(x, step, 0.3, (np.zeros(0), np.zeros(0)), escape=2.5)]  # empty tables
            out += list(dq.quantize_dq(x, 0.05))
        return out

    want = run()
    oracles.use(monkeypatch, "dq")
    for a, b in zip(want, run(), strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_tie_rules(backend):
    # t = 1 in state 0: level 0 (k 0, stays in state 0) and level 2 (k 1, to state 2) both cost 1:
    # the lower end state wins, so k = 0; t = 2 is level 2 exactly (k = 1); t = -1: level 0 (zero,
    # the first even candidate) ties with level -2 (odd k, state 2): state 0 wins again.
    x = np.array([[1.0], [2.0], [-1.0], [0.0]], np.float32)
    np.testing.assert_array_equal(dq.trellis(x, 1.0, 0.0)[:, 0], [0, 1, 0, 0])
    # t = 2 priced: zero (4 + 0 bits) ties with level 2 (0 + 4 bits): end state 0 (zero) wins
    k = dq.trellis(np.array([[2.0]], np.float32), 1.0, 1.0, (np.array([0.0, 4.0]), np.zeros(2)))
    assert k[0, 0] == 0


def test_deterministic_and_rows_independent(backend):
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((20, 30)) * 0.05).astype(np.float32)
    a = dq.trellis(x, 0.01, 0.0)
    np.testing.assert_array_equal(a, dq.trellis(x.copy(), 0.01, 0.0))
    perm = rng.permutation(20)
    np.testing.assert_array_equal(dq.trellis(x[perm], 0.01, 0.0), a[perm])


# ----------------------------------------------------------------------------- error bound, edges

def test_error_bound(backend):
    """Each chosen level is zero or one of its quantizer's two levels around t, which lie within
    2 steps of t; the trellis may take the farther one (to reach a better state), so DQ's bound
    is 2 steps, not the 1 step of rounding within one quantizer (max seen ~1.5). With prices,
    zero can win only if t^2 <= 4 + lam/step^2 * (largest price)."""
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((50, 200)) * 0.05).astype(np.float32)
    step = 0.01
    k = dq.trellis(x, step, 0.0)
    err = np.abs(x.astype(np.float64) - dq.reconstruct(k, step))
    assert err.max() <= 2 * step * (1 + 1e-6)
    assert err.max() > step  # the bound is not the within-quantizer one: the trellis uses it
    prices, lo = dq.order0_prices(k)
    lam = 0.1 * step * step
    k2 = dq.trellis(x, step, lam, prices, offset=lo)
    pmax = max(prices[0].max(), prices[1].max()) + 1.0  # the default escape
    err2 = np.abs(x.astype(np.float64) - dq.reconstruct(k2, step))
    assert err2.max() <= np.sqrt(4 + lam / step ** 2 * pmax) * step * (1 + 1e-6)


def test_edges_zero_single_column_empty(backend):
    z = np.zeros((4, 9), np.float32)
    np.testing.assert_array_equal(dq.trellis(z, 0.1, 0.0), 0)
    k, rec = dq.quantize_dq(z, 0.1)
    assert k.dtype == np.int32 and not k.any() and not rec.any()
    # one column: every row is in state 0 (Q0), so the code is the nearest even level (ties low)
    x = np.array([[0.9], [1.1], [-3.2], [5.0]], np.float32)
    np.testing.assert_array_equal(dq.trellis(x, 1.0, 0.0)[:, 0], [0, 1, -2, 2])
    for shape in [(0, 5), (3, 0), (0, 0)]:
        e = np.zeros(shape, np.float32)
        k = dq.trellis(e, 0.1, 0.0)
        assert k.shape == shape and k.dtype == np.int32
        assert dq.reconstruct(k, 0.1).shape == shape and dq.states(k).shape == shape
        k2, rec = dq.quantize_dq(e, 0.1)
        assert k2.shape == rec.shape == shape


def test_refusals():
    x = np.ones((2, 3), np.float32)
    for bad in [np.ones(4, np.float32), np.ones((2, 2, 2), np.float32)]:
        with pytest.raises(ValueError, match="2-D"):
            dq.trellis(bad, 0.1, 0.0)
    with pytest.raises(ValueError, match="2-D"):
        dq.states(np.zeros(3, np.int32))
    for step in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="step"):
            dq.trellis(x, step, 0.0)
    with pytest.raises(ValueError, match="lam"):
        dq.trellis(x, 0.1, -1.0)
    for v in (np.nan, np.inf):
        y = x.copy()
        y[1, 2] = v
        with pytest.raises(ValueError, match="finite"):
            dq.trellis(y, 0.1, 0.0)
    with pytest.raises(ValueError, match="too small"):
        dq.trellis(x * 1e6, 1e-6, 0.0)
    with pytest.raises(ValueError, match="prices"):
        dq.trellis(x, 0.1, 0.1, (np.array([1.0, -1.0]), np.zeros(2)))
    with pytest.raises(ValueError, match="passes"):
        dq.quantize_dq(x, 0.1, passes=0)


# ----------------------------------------------------------------------------- rate-distortion passes

def order0_entropy(stream):
    if stream.size == 0:
        return 0.0
    _, c = np.unique(stream, return_counts=True)
    p = c / c.sum()
    return float(-(c * np.log2(p)).sum())


def test_quantize_dq_passes():
    rng = np.random.default_rng(11)
    x = (rng.laplace(size=(64, 256)) * 0.03).astype(np.float32)
    step = 0.02
    k0, r0 = dq.quantize_dq(x, step, c=0.0)
    np.testing.assert_array_equal(k0, dq.trellis(x, step, 0.0))
    np.testing.assert_array_equal(r0, dq.reconstruct(k0, step))
    k1, r1 = dq.quantize_dq(x, step, c=0.1, passes=2)
    prices, lo = dq.order0_prices(k0)
    np.testing.assert_array_equal(k1, dq.trellis(x, step, 0.1 * step * step, prices, offset=lo))
    bits0 = sum(order0_entropy(s) for s in split_streams(k0))
    bits1 = sum(order0_entropy(s) for s in split_streams(k1))
    err0 = ((x - r0).astype(np.float64) ** 2).sum()
    err1 = ((x - r1).astype(np.float64) ** 2).sum()
    assert bits1 < bits0 and err1 > err0  # the rate term trades error for bits
    assert err1 + 0.1 * step * step * bits1 < err0 + 0.1 * step * step * bits0


def test_order0_prices():
    k = np.array([[0, 1, -1, 0, 0, 2]], np.int32)
    (b0, b1), lo = dq.order0_prices(k)
    assert lo == -1 and b0.size == b1.size == 4
    q = QUANTIZER[dq.states(k)][0]
    for z, b in ((0, b0), (1, b1)):
        counts = np.bincount(k[0][q == z] + 1, minlength=4)
        np.testing.assert_allclose(b, -np.log2((counts + 0.5) / (counts.sum() + 2.0)))


# ----------------------------------------------------------------------------- kernels against oracles

def test_state_level_and_shrink_kernels_match_the_oracle_bit_for_bit():
    from quantcli.kernels import dq as kernels

    rng = np.random.default_rng(11)
    for shape in [(1, 1), (5, 1), (1, 9), (13, 17), (37, 53)]:
        x = (rng.laplace(0, 1, shape) * 3).astype(np.float32)
        k = dq.trellis(x, 0.7, 0.0)
        for fn in ("states", "levels"):
            want = np.empty(shape, np.int8 if fn == "states" else np.int64)
            got = np.empty_like(want)
            getattr(kernels, fn)(k, got)
            getattr(oracle, fn)(k, want)
            assert got.tobytes() == want.tobytes(), fn
        lv = dq.levels(k)
        a, b = np.zeros(4), np.zeros(4)
        kernels.shrink_sums(x, lv, 0.7, a)
        oracle.shrink_sums(x, lv, 0.7, b)
        assert a.tobytes() == b.tobytes()
        assert a[2] == np.count_nonzero(np.abs(lv) == 1) and a[3] == np.count_nonzero(np.abs(lv) >= 2)
        for d1, d2 in ((0, 0), (37, -5), (128, 128)):
            a32, b32 = np.empty(shape, np.float32), np.empty(shape, np.float32)
            kernels.shrunk(lv, float(d1), float(d2), np.float32(0.7), a32)
            oracle.shrunk(lv, float(d1), float(d2), np.float32(0.7), b32)
            assert a32.tobytes() == b32.tobytes()
