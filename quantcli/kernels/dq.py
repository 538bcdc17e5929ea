"""Dependent quantization (DQ): the 4-state machine, its levels, and the trellis that chooses codes.

The machine (the VVC / MPEG NNC one, docs/FORMAT.md): every row starts in state 0; after code k the
state becomes NEXT[state, k & 1]; states 0 and 1 use quantizer Q0 (level 2k), states 2 and 3 use Q1
(level 2k - sign(k)). This is its only definition: the trellis (methods/dq.py) and the context model
of `crans` (codecs/context.py, kernels/crans.py) both import it from here.
"""

from __future__ import annotations

import numpy as np

from ._jit import jit

# numba keys a kernel's on-disk cache by this file's content only, not by the files it calls into:
# DEPENDS (a digest of _jit.py, checked by tests/test_structure.py) makes this file change with them.
DEPENDS = "2dbfa5bb8d804b2f"

NEXT = np.array([[0, 2], [2, 0], [1, 3], [3, 1]], dtype=np.int8)
QUANTIZER = np.array([0, 0, 1, 1], dtype=np.int8)
_NEXT_FLAT = NEXT.astype(np.int64).reshape(-1)  # [2 state + parity]: a lookup, no branch on the state


@jit(inline="always")
def next_state(s, parity):
    """NEXT[s, parity] for an integer state and parity (0 or 1)."""
    return _NEXT_FLAT[2 * s + parity]


@jit
def states(k, out):
    """out[r, j] = the state code k[r, j] was coded in (rows start in state 0)."""
    rows, cols = k.shape
    for r in range(rows):
        s = 0
        for j in range(cols):
            out[r, j] = s
            s = next_state(s, k[r, j] & 1)


@jit
def levels(k, out):
    """out[r, j] = integer level of code k[r, j]: 2k under Q0, 2k - sign(k) under Q1 (int64)."""
    rows, cols = k.shape
    for r in range(rows):
        s = 0
        for j in range(cols):
            v = np.int64(k[r, j])
            sg = (v > 0) - (v < 0)
            out[r, j] = 2 * v - sg if s >= 2 else 2 * v
            s = next_state(s, v & 1)


@jit
def shrink_sums(x, lv, step, sums):
    """sums[g] += sign(L) (L - x / step) and sums[2 + g] += 1, g = 0 where |L| = 1, 1 where |L| >= 2."""
    for i in range(lv.size):
        v = lv.flat[i]
        if v != 0:
            g = 0 if v == 1 or v == -1 else 1
            sg = 1.0 if v > 0 else -1.0
            sums[g] += sg * (np.float64(v) - np.float64(x.flat[i]) / step)
            sums[2 + g] += 1.0


@jit
def shrunk(lv, d1, d2, step, out):
    """out = float32(L - sign(L) d / 256) * step (float32), d = d1 where |L| = 1, else d2."""
    for i in range(lv.size):
        v = lv.flat[i]
        d = d1 if v == 1 or v == -1 else d2
        sg = (v > 0) - (v < 0)
        out.flat[i] = np.float32(np.float64(v) - sg * d / 256.0) * step


@jit
def order0_counts(k, lo, counts):
    """counts[q, k[r, j] - lo] += 1, q the quantizer of the state code k[r, j] was coded in: the
    histograms a priced pass's prices come from, without a state or key array beside k."""
    rows, cols = k.shape
    for r in range(rows):
        s = 0
        for j in range(cols):
            v = np.int64(k[r, j])
            counts[s >> 1, v - lo] += 1
            s = next_state(s, v & 1)


@jit
def code_shrink_sums(x, k, offset, step, sums):
    """shrink_sums(x, levels(k + offset)) in the same order, without the int64 levels array."""
    rows, cols = k.shape
    for r in range(rows):
        s = 0
        for j in range(cols):
            v = np.int64(k[r, j]) + offset
            sg = (v > 0) - (v < 0)
            lv = 2 * v - sg if s >= 2 else 2 * v
            s = next_state(s, v & 1)
            if lv != 0:
                g = 0 if lv == 1 or lv == -1 else 1
                sl = 1.0 if lv > 0 else -1.0
                sums[g] += sl * (np.float64(lv) - np.float64(x[r, j]) / step)
                sums[2 + g] += 1.0


@jit
def code_shrunk(k, offset, d1, d2, step, out):
    """shrunk(levels(k + offset), d1, d2, step, out) without the int64 levels array (d1 = d2 = 0:
    float32(level) * step, the plain reconstruction)."""
    rows, cols = k.shape
    for r in range(rows):
        s = 0
        for j in range(cols):
            v = np.int64(k[r, j]) + offset
            sg = (v > 0) - (v < 0)
            lv = 2 * v - sg if s >= 2 else 2 * v
            s = next_state(s, v & 1)
            d = d1 if lv == 1 or lv == -1 else d2
            sl = (lv > 0) - (lv < 0)
            out[r, j] = np.float32(np.float64(lv) - sl * d / 256.0) * step


# ----------------------------------------------------------------------------- trellis
#
# One row at a time: (1) for every column, the candidates and their squared errors, (2) plus
# lam * price (table lookups), (3) the cheapest even and odd candidate of each quantizer (1 and 3
# have no dependence between columns: loops LLVM vectorises, which is why they divide with
# error_model="numpy", the step being checked > 0 by the caller, and pick by selects); (4) the
# Viterbi recursion over the four states (a short serial chain per column); (5) the traceback.
# Candidates of quantizer q at t = x / step (zero is always the third):
#   Q0: codes k1 = floor(t / 2) and k1 + 1, levels 2 k1 and 2 k1 + 2 (opposite parities);
#   Q1: odd levels 2m + 1 and 2m + 3, m = floor((t - 1) / 2), codes (L + sign L) / 2, which are
#       m + (m >= 0) and m + 1 + (m >= -1) (both odd when m = -1).
# Ties: the first of (zero, lower, upper) within a (quantizer, parity); into a state, the lower
# predecessor state; at the row end, the lowest state. A cost must be strictly lower to win.


@jit
def _price(table, k, offset, esc):
    """table[k - offset], or esc outside it (a branch that is nearly always taken the same way)."""
    i = k - offset
    if i >= 0 and i < table.size:
        return table[i]
    return esc


@jit(inline="always")
def _pick_q0(cz, ca, cb, k1):
    """(even cost, index, odd cost, index) of Q0: zero (even), k1, k1 + 1 (opposite parities)."""
    a_odd = (k1 & 1) == 1
    ce = cb if a_odd else ca
    take = ce < cz
    return (ce if take else cz), ((2 if a_odd else 1) if take else 0), (ca if a_odd else cb), (1 if a_odd else 2)


@jit(inline="always")
def _pick_q1(cz, ca, cb, ka, kb):
    """(even cost, index, odd cost, index) of Q1: zero, then ka, then kb, parities as they come."""
    a_odd = (ka & 1) == 1
    b_odd = (kb & 1) == 1
    take = (not a_odd) and ca < cz
    be = ca if take else cz
    ie = 1 if take else 0
    bo = ca if a_odd else np.inf  # costs are finite: the first odd candidate always takes it
    io = 1 if a_odd else 0
    take_e = (not b_odd) and cb < be
    take_o = b_odd and cb < bo
    return (cb if take_e else be), (2 if take_e else ie), (cb if take_o else bo), (2 if take_o else io)


@jit(inline="always")
def _column(xj, step):
    """t, Q0's k1 and its two squared errors, Q1's m, codes and two squared errors."""
    t = np.float64(xj) / step
    lo = np.floor(t * 0.5)
    m = np.floor((t - 1.0) * 0.5)
    mi = np.int64(m)
    ea0 = t - 2.0 * lo
    ea1 = t - (2.0 * m + 1.0)
    eb0 = t - (2.0 * lo + 2.0)
    eb1 = t - (2.0 * m + 3.0)
    return (t, np.int64(lo), ea0 * ea0, eb0 * eb0, mi + (mi >= 0), mi + 1 + (mi >= -1),
            ea1 * ea1, eb1 * eb1)


@jit(error_model="numpy")
def _row_candidates(xr, step, sq, codes):
    """Per column j: the squared errors of zero, Q0's two and Q1's two candidates in sq[0..4, j]
    and their codes in codes[j, 4 q + i] (codes[j, 0] and codes[j, 4] stay 0: the zero
    candidates). No dependence between columns: vectorised."""
    for j in range(xr.size):
        t, k1, ca0, cb0, qa, qb, ca1, cb1 = _column(xr[j], step)
        sq[0, j], sq[1, j], sq[2, j], sq[3, j], sq[4, j] = t * t, ca0, cb0, ca1, cb1
        codes[j, 1], codes[j, 2], codes[j, 5], codes[j, 6] = k1, k1 + 1, qa, qb


@jit
def _add_prices(lam, p0, p1, offset, esc, sq, codes, zero):
    """sq[1..4, j] += lam * price of the candidate's code; zero = (lam * price of code 0 under Q0,
    under Q1), added where the costs are picked (a table lookup per candidate: scalar)."""
    for j in range(sq.shape[1]):
        sq[1, j] += lam * _price(p0, codes[j, 1], offset, esc)
        sq[2, j] += lam * _price(p0, codes[j, 2], offset, esc)
        sq[3, j] += lam * _price(p1, codes[j, 5], offset, esc)
        sq[4, j] += lam * _price(p1, codes[j, 6], offset, esc)
    zero[0] = lam * _price(p0, 0, offset, esc)
    zero[1] = lam * _price(p1, 0, offset, esc)


@jit(error_model="numpy")
def _row_costs_plain(xr, step, ce0, co0, ce1, co1, idx, codes):
    """Distortion only, in one vectorised loop: the candidates and codes (as _row_candidates),
    then the cheapest even / odd candidate of Q0 and Q1 (costs, and their indices packed as
    i0e | i0o << 2 | i1e << 4 | i1o << 6)."""
    for j in range(xr.size):
        t, k1, ca0, cb0, qa, qb, ca1, cb1 = _column(xr[j], step)
        cz = t * t
        e0, i0e, o0, i0o = _pick_q0(cz, ca0, cb0, k1)
        e1, i1e, o1, i1o = _pick_q1(cz, ca1, cb1, qa, qb)
        ce0[j], co0[j], ce1[j], co1[j] = e0, o0, e1, o1
        idx[j] = i0e | (i0o << 2) | (i1e << 4) | (i1o << 6)
        codes[j, 1], codes[j, 2], codes[j, 5], codes[j, 6] = k1, k1 + 1, qa, qb


@jit(error_model="numpy")
def _row_costs(sq, codes, z0, z1, ce0, co0, ce1, co1, idx):
    """_row_costs_plain's picks from priced costs: sq (with prices added), zero's costs + z0 / z1."""
    for j in range(sq.shape[1]):
        cz = sq[0, j]
        cz0 = cz + z0
        cz1 = cz + z1
        e0, i0e, o0, i0o = _pick_q0(cz0, sq[1, j], sq[2, j], np.int64(codes[j, 1]))
        e1, i1e, o1, i1o = _pick_q1(cz1, sq[3, j], sq[4, j], np.int64(codes[j, 5]), np.int64(codes[j, 6]))
        ce0[j], co0[j], ce1[j], co1[j] = e0, o0, e1, o1
        idx[j] = i0e | (i0o << 2) | (i1e << 4) | (i1o << 6)


@jit(error_model="numpy")
def viterbi(x, step, lam, p0, p1, offset, esc, priced, out):
    """Codes out[r, :] minimising sum (x/step - level)^2 + lam * price along each row of x;
    priced: p0, p1 (>= 1 entry each) price the codes, else lam is ignored (distortion only).
    Predecessors: 0 <- (0, even), (1, odd); 1 <- (2, even), (3, odd); 2 <- (0, odd), (1, even);
    3 <- (2, odd), (3, even)."""
    rows, cols = x.shape
    back = np.empty((cols, 4), np.uint8)  # (predecessor state << 2) | candidate index
    ce0, co0, ce1, co1 = np.empty(cols), np.empty(cols), np.empty(cols), np.empty(cols)
    idx = np.empty(cols, np.int64)
    codes = np.zeros((cols, 8), np.int32)  # |codes| < 2**28: the caller bounds |x / step| by 2**29
    sq = np.empty((5, cols))
    zero = np.zeros(2)
    for r in range(rows):
        if priced:
            _row_candidates(x[r], step, sq, codes)
            _add_prices(lam, p0, p1, offset, esc, sq, codes, zero)
            _row_costs(sq, codes, zero[0], zero[1], ce0, co0, ce1, co1, idx)
        else:
            _row_costs_plain(x[r], step, ce0, co0, ce1, co1, idx, codes)
        c0, c1, c2, c3 = 0.0, np.inf, np.inf, np.inf
        for j in range(cols):
            e0, o0, e1, o1, ix = ce0[j], co0[j], ce1[j], co1[j], idx[j]
            i0e, i0o, i1e, i1o = ix & 3, (ix >> 2) & 3, (ix >> 4) & 3, ix >> 6
            ta, tb = c0 + e0, c1 + o0
            w = tb < ta
            n0 = tb if w else ta
            back[j, 0] = (4 | i0o) if w else i0e
            ta, tb = c2 + e1, c3 + o1
            w = tb < ta
            n1 = tb if w else ta
            back[j, 1] = (12 | i1o) if w else (8 | i1e)
            ta, tb = c0 + o0, c1 + e0
            w = tb < ta
            n2 = tb if w else ta
            back[j, 2] = (4 | i0e) if w else i0o
            ta, tb = c2 + o1, c3 + e1
            w = tb < ta
            n3 = tb if w else ta
            back[j, 3] = (12 | i1e) if w else (8 | i1o)
            c0, c1, c2, c3 = n0, n1, n2, n3
        s = 0
        best = c0
        if c1 < best:
            s, best = 1, c1
        if c2 < best:
            s, best = 2, c2
        if c3 < best:
            s, best = 3, c3
        for j in range(cols - 1, -1, -1):
            b = np.int64(back[j, s])
            s = b >> 2
            out[r, j] = codes[j, ((s >> 1) << 2) | (b & 3)]  # a lookup: s is data, a branch on it mispredicts
