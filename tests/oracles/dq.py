"""Numpy twin of quantcli/kernels/dq.py: the same float64 expressions in the same order and the same
tie rules, vectorised over the rows of x (a loop over columns)."""

from __future__ import annotations

import numpy as np

KERNELS = ("states", "levels", "shrink_sums", "shrunk", "order0_counts", "code_shrink_sums", "code_shrunk", "viterbi")
NEXT = np.array([[0, 2], [2, 0], [1, 3], [3, 1]], dtype=np.int8)
QUANTIZER = np.array([0, 0, 1, 1], dtype=np.int8)
# PRED[ns] = the two (state, parity) pairs that lead to state ns, lower state first
PRED = tuple(tuple((s, p) for s in range(4) for p in (0, 1) if NEXT[s, p] == ns) for ns in range(4))


def states(k, out):
    kt = np.ascontiguousarray(k.T)
    st = np.empty(kt.shape, np.int8)
    s = np.zeros(k.shape[0], np.int8)
    for j in range(kt.shape[0]):
        st[j] = s
        s = NEXT[s, kt[j] & 1]
    out[...] = st.T


def levels(k, out):
    st = np.empty(k.shape, np.int8)
    states(k, st)
    k = k.astype(np.int64)
    out[...] = 2 * k - QUANTIZER[st].astype(np.int64) * np.sign(k)


def shrink_sums(x, lv, step, sums):
    xf = x.astype(np.float64) / float(step)
    a = np.abs(lv)
    r = np.sign(lv) * (lv - xf)
    for g, m in enumerate((a == 1, a >= 2)):  # summed in element order, as the kernel does
        acc = 0.0
        for v in r[m].tolist():
            acc += v
        sums[g] += acc
        sums[2 + g] += float(np.count_nonzero(m))


def shrunk(lv, d1, d2, step, out):
    d = np.where(np.abs(lv) == 1, d1, d2) * np.sign(lv)
    out[...] = (lv - d / 256.0).astype(np.float32) * np.float32(step)


def order0_counts(k, lo, counts):
    st = np.empty(k.shape, np.int8)
    states(k, st)
    key = (k.astype(np.int64) - lo) + QUANTIZER[st].astype(np.int64) * counts.shape[1]
    counts += np.bincount(key.ravel(), minlength=counts.size).reshape(counts.shape)


def _levels_of(k, offset):
    kk = k.astype(np.int64) + offset
    lv = np.empty(kk.shape, np.int64)
    levels(kk, lv)
    return lv


def code_shrink_sums(x, k, offset, step, sums):
    shrink_sums(x, _levels_of(k, offset), step, sums)


def code_shrunk(k, offset, d1, d2, step, out):
    shrunk(_levels_of(k, offset), d1, d2, step, out)


def _candidates(t, q):
    """Codes and float64 levels of the candidates (zero, lower, upper) of quantizer q at t."""
    zero = np.zeros(t.shape, np.int64)
    if q == 0:
        lo = np.floor(t / 2.0).astype(np.int64)
        hi = lo + 1
        return [zero, lo, hi], [zero.astype(np.float64), 2.0 * lo, 2.0 * hi]
    m = np.floor((t - 1.0) / 2.0).astype(np.int64)
    llo, lhi = 2 * m + 1, 2 * m + 3  # odd levels; odd L is code (L + sign L) / 2
    return ([zero, (llo + np.sign(llo)) // 2, (lhi + np.sign(lhi)) // 2],
            [zero.astype(np.float64), llo.astype(np.float64), lhi.astype(np.float64)])


def _price(table, k, offset, esc):
    if table.size == 0:
        return np.full(k.shape, esc)
    i = k - offset
    inside = (i >= 0) & (i < table.size)
    return np.where(inside, table[np.clip(i, 0, table.size - 1)], esc)


def viterbi(x, step, lam, p0, p1, offset, esc, priced, out):
    t = x.astype(np.float64) / step
    if not priced:
        lam, p0, p1, esc = 0.0, np.zeros(0), np.zeros(0), 0.0
    rows, cols = t.shape
    inf = np.inf
    cost = np.full((4, rows), inf)
    cost[0] = 0.0
    back = np.empty((cols, 4, rows), np.uint8)  # (predecessor state << 2) | candidate index
    tables = (p0, p1)
    for j in range(cols):
        tj = t[:, j]
        best = np.empty((2, 2, rows))  # [quantizer, parity]
        bidx = np.zeros((2, 2, rows), np.uint8)
        for q in (0, 1):
            codes, lv = _candidates(tj, q)
            for p in (0, 1):
                b = np.full(rows, inf)
                bi = np.zeros(rows, np.uint8)
                for i in range(3):
                    e = tj - lv[i]
                    c = e * e + lam * _price(tables[q], codes[i], offset, esc)
                    win = ((codes[i] & 1) == p) & (c < b)
                    b = np.where(win, c, b)
                    bi = np.where(win, np.uint8(i), bi)
                best[q, p], bidx[q, p] = b, bi
        new = np.empty((4, rows))
        for ns in range(4):
            (sa, pa), (sb, pb) = PRED[ns]
            qa, qb = QUANTIZER[sa], QUANTIZER[sb]
            ta = cost[sa] + best[qa, pa]
            tb = cost[sb] + best[qb, pb]
            takeb = tb < ta
            new[ns] = np.where(takeb, tb, ta)
            back[j, ns] = np.where(takeb, np.uint8(sb << 2) | bidx[qb, pb], np.uint8(sa << 2) | bidx[qa, pa])
        cost = new
    s = cost.argmin(0)  # first minimum: the lowest state
    ar = np.arange(rows)
    for j in range(cols - 1, -1, -1):
        b = back[j, s, ar]
        s = (b >> 2).astype(np.int64)
        i = (b & 3).astype(np.int64)
        c0 = np.stack(_candidates(t[:, j], 0)[0])
        c1 = np.stack(_candidates(t[:, j], 1)[0])
        out[:, j] = np.where(QUANTIZER[s] == 0, c0[i, ar], c1[i, ar])
