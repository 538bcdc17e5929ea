"""Dependent quantization (DQ): two interleaved scalar quantizers switched by a 4-state machine.

Q0 reconstructs code k as 2k * step (even multiples), Q1 as (2k - sign(k)) * step (odd multiples
and zero). Each row starts in state 0; after coding k the state becomes NEXT[state, k & 1]; states
0 and 1 use Q0, states 2 and 3 use Q1 (the VVC / MPEG NNC machine). The union of both grids is
step-spaced, but each code only chooses between levels 2 * step apart, so a code costs about one
bit less than plain rounding at the same step; the encoder buys the distortion back with a
Viterbi search along each row (docs/STUDY-ecsq.md: 0.10-0.16 bpw less at equal SQNR).

Pure functions, 2-D only (rows are independent trellises; the caller reshapes a tensor to 2-D):
  trellis          the Viterbi search: codes minimising squared error + lam * bits per row
  states           the state each code was coded in; reconstruct: float32 values of codes
  quantize_dq      a distortion-only pass, then passes re-priced by per-quantizer order-0 models
  split_by_quantizer / merge_streams
                   one symbol stream per quantizer (column-major), so an entropy coder can keep a
                   frequency table per quantizer; merging is vectorised over rows.

Backends: numba (the optional `fast` extra, imported lazily; one row at a time, ~8 bytes of
back-pointers per column) and a numpy path vectorised over the rows of a chunk (loop over
columns). Both evaluate the same float64 expressions in the same order with the same tie rules,
so they return identical codes (tested).
"""

from __future__ import annotations

import math

from typing import Callable

import numpy as np

from .. import accel

NEXT = np.array([[0, 2], [2, 0], [1, 3], [3, 1]], dtype=np.int8)
QUANTIZER = np.array([0, 0, 1, 1], dtype=np.int8)
# PRED[ns] = the two (state, parity) pairs that lead to state ns, lower state first
PRED = tuple(tuple((s, p) for s in range(4) for p in (0, 1) if NEXT[s, p] == ns) for ns in range(4))
BACKENDS = accel.BACKENDS
MAX_T = float(1 << 29)  # |x / step| bound: codes and levels stay well inside int32
_CHUNK_VALUES = 1 << 20  # numpy path: rows per chunk so that rows * cols <= this (4 MB of back-pointers)

_kernels: dict | None = None


# ----------------------------------------------------------------------------- state machine

def states(k: np.ndarray, backend: str = "auto") -> np.ndarray:
    """int8 [rows, cols]: the state each code of each row was coded in (every row starts in 0)."""
    k = _as_2d(k, "k")
    out = np.empty(k.shape, np.int8)
    if k.size == 0:
        return out
    if _resolve(backend) == "numba":
        _load_numba()["states"](np.ascontiguousarray(k), out)
        return out
    kt = np.ascontiguousarray(k.T)  # columns contiguous: each step reads one cache-friendly run
    st = np.empty(kt.shape, np.int8)
    s = np.zeros(k.shape[0], np.int8)
    for j in range(kt.shape[0]):
        st[j] = s
        s = NEXT[s, kt[j] & 1]
    out[...] = st.T
    return out


def levels(k: np.ndarray, backend: str = "auto") -> np.ndarray:
    """Integer reconstruction levels (units of step), int64: 2k under Q0, 2k - sign(k) under Q1."""
    k = _as_2d(k, "k")
    if k.size and _resolve(backend) == "numba":
        out = np.empty(k.shape, np.int64)
        _load_numba()["levels"](np.ascontiguousarray(k), out)
        return out
    k = k.astype(np.int64)
    return 2 * k - QUANTIZER[states(k, backend)].astype(np.int64) * np.sign(k)


def shrink_sums(x: np.ndarray, lv: np.ndarray, step: float, backend: str = "auto") -> np.ndarray:
    """float64 [4]: sum of sign(L) (L - x/step) over |L| = 1 and over |L| >= 2, then the two
    counts: what the least-squares reconstruction offsets of ecsq need, in one pass."""
    x, lv = np.ascontiguousarray(x), np.ascontiguousarray(lv, np.int64)
    sums = np.zeros(4)
    if lv.size and _resolve(backend) == "numba":
        _load_numba()["shrink_sums"](x, lv, float(step), sums)
        return sums
    xf = x.astype(np.float64) / float(step)
    a = np.abs(lv)
    r = np.sign(lv) * (lv - xf)
    for g, m in enumerate((a == 1, a >= 2)):
        sums[g], sums[2 + g] = float(r[m].sum()), float(np.count_nonzero(m))
    return sums


def shrunk(lv: np.ndarray, step: float, shrink: tuple[int, int], backend: str = "auto") -> np.ndarray:
    """float32 values of integer levels with offsets toward zero: float32(L - sign(L) d / 256) *
    float32(step), d = shrink[0] where |L| = 1, shrink[1] where |L| >= 2 (L exact in float64)."""
    lv = np.ascontiguousarray(lv, np.int64)
    if lv.size and _resolve(backend) == "numba":
        out = np.empty(lv.shape, np.float32)
        _load_numba()["shrunk"](lv, float(shrink[0]), float(shrink[1]), np.float32(step), out)
        return out
    d = np.where(np.abs(lv) == 1, shrink[0], shrink[1]) * np.sign(lv)
    return (lv - d / 256.0).astype(np.float32) * np.float32(step)


def reconstruct(k: np.ndarray, step: float, backend: str = "auto") -> np.ndarray:
    """float32 values of codes k: one float32 product level * step, the same in encode and decode
    (as ecsq.reconstruct), so the error measured while encoding is the archive's error."""
    return levels(k, backend).astype(np.float32) * np.float32(step)


# ----------------------------------------------------------------------------- trellis

def trellis(x: np.ndarray, step: float, lam: float,
            prices: tuple[np.ndarray, np.ndarray] | None = None, *, offset: int = 0,
            escape: float | None = None, backend: str = "auto", chunk_rows: int | None = None) -> np.ndarray:
    """int32 codes k [rows, cols] minimising, along each row of 2-D x, sum (x/step - level)^2 +
    (lam / step^2) * bits (the squared error + lam * bits of the brief, divided by step^2).

    Candidates per quantizer at each value: zero and the two levels of that quantizer around
    t = x/step (Q0: 2 floor(t/2) and the next even level; Q1: the odd levels 2m+1 <= t < 2m+3).
    Without prices these hold the optimum (the nearest level of each parity); with prices a level
    nearer zero than both could be cheaper in bits and is not searched, as in ecsq_core.

    prices = (bits under Q0, bits under Q1): code k costs prices[q][k - offset], and `escape`
    (default: 1 + the largest price) outside the tables. None: pure distortion.

    Ties (deterministic, both backends): among candidates for one (state, parity) the first of
    (zero, lower, upper) wins; into a state, the predecessor with the lower state number wins;
    at the row end, the lowest-numbered state. A lower cost must be strictly lower to win.

    chunk_rows bounds the numpy path's memory (rows searched together; default: ~1M values)."""
    x = _as_2d(x, "x")
    step = float(step)
    lam = float(lam)
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"step must be a positive finite number, got {step!r}")
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
    if x.size and not max(-float(x.min()), float(x.max())) / step < MAX_T:  # False for NaN too
        raise ValueError(f"x must be finite with |x / step| < 2^29 (step {step!r} is too small for x)")
    p0, p1, esc = _price_tables(prices, escape)
    lam_s = lam / (step * step) if prices is not None else 0.0
    out = np.empty(x.shape, np.int32)
    if x.size == 0:
        return out
    if _resolve(backend) == "numba":
        _load_numba()["viterbi"](np.ascontiguousarray(x), step, lam_s, p0, p1, int(offset), esc, out)
        return out
    rows, cols = x.shape
    chunk = chunk_rows if chunk_rows is not None else max(1, _CHUNK_VALUES // cols)
    if chunk < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows!r}")
    for r0 in range(0, rows, chunk):
        t = x[r0:r0 + chunk].astype(np.float64) / step
        out[r0:r0 + chunk] = _viterbi_numpy(t, lam_s, p0, p1, int(offset), esc)
    return out


def _price_tables(prices, escape) -> tuple[np.ndarray, np.ndarray, float]:
    if prices is None:
        z = np.zeros(0, np.float64)
        return z, z, 0.0
    if len(prices) != 2:
        raise ValueError("prices must be a pair (bits under Q0, bits under Q1)")
    p0, p1 = (np.ascontiguousarray(p, np.float64).ravel() for p in prices)
    both = np.concatenate([p0, p1])
    if both.size and not np.all(np.isfinite(both) & (both >= 0)):
        raise ValueError("prices must be finite and >= 0")
    esc = float(both.max()) + 1.0 if escape is None else float(escape)
    if not (math.isfinite(esc) and esc >= 0):
        raise ValueError(f"escape price must be finite and >= 0, got {escape!r}")
    return p0, p1, esc


def _candidates_numpy(t: np.ndarray, q: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
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


def _viterbi_numpy(t, lam, p0, p1, offset, esc) -> np.ndarray:
    """The numba kernel's arithmetic and tie rules, vectorised over the rows of t."""
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
            codes, lv = _candidates_numpy(tj, q)
            for p in (0, 1):
                b = np.full(rows, inf)
                bi = np.zeros(rows, np.uint8)
                for i in range(3):
                    e = tj - lv[i]
                    c = e * e + lam * _price_numpy(tables[q], codes[i], offset, esc)
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
    k = np.empty((rows, cols), np.int32)
    s = cost.argmin(0)  # first minimum: the lowest state
    ar = np.arange(rows)
    for j in range(cols - 1, -1, -1):
        b = back[j, s, ar]
        s = (b >> 2).astype(np.int64)
        i = (b & 3).astype(np.int64)
        c0 = np.stack(_candidates_numpy(t[:, j], 0)[0])
        c1 = np.stack(_candidates_numpy(t[:, j], 1)[0])
        k[:, j] = np.where(QUANTIZER[s] == 0, c0[i, ar], c1[i, ar])
    return k


def _price_numpy(table: np.ndarray, k: np.ndarray, offset: int, esc: float) -> np.ndarray:
    if table.size == 0:
        return np.full(k.shape, esc)
    i = k - offset
    inside = (i >= 0) & (i < table.size)
    return np.where(inside, table[np.clip(i, 0, table.size - 1)], esc)


# ----------------------------------------------------------------------------- backends

def _resolve(backend: str) -> str:
    return accel.choose(backend, _load_numba)


def _load_numba() -> dict:
    """Compile the Viterbi kernel once; {} when numba is unavailable (the numpy path is used)."""
    global _kernels
    if _kernels is None:
        _kernels = accel.compile_kernels(_build)
    return _kernels


def _build(jit: Callable[[Callable], Callable]) -> dict:
    """The kernels, compiled by `jit` (accel.compile_kernels); float64 rounds exactly as numpy's."""

    @jit
    def price(table, k, offset, esc):
        i = k - offset
        if i >= 0 and i < table.size:
            return table[i]
        return esc

    @jit
    def code_of(tj, q, i):
        # candidate i (0 zero, 1 lower, 2 upper) of quantizer q at tj, as _candidates_numpy
        if i == 0:
            return np.int64(0)
        if q == 0:
            return np.int64(np.floor(tj / 2.0)) + (i - 1)
        lev = 2 * np.int64(np.floor((tj - 1.0) / 2.0)) + 1 + 2 * (i - 1)
        return (lev + np.sign(lev)) // 2

    @jit
    def best_by_parity(tj, q, lam, table, offset, esc):
        # cheapest candidate of each parity, first of (zero, lower, upper) on ties:
        # (cost even, index even, cost odd, index odd)
        be, ie, bo, io = tj * tj + lam * price(table, 0, offset, esc), 0, np.inf, 0
        if q == 0:
            lo = np.int64(np.floor(tj / 2.0))
            k1, k2, l1, l2 = lo, lo + 1, 2.0 * lo, 2.0 * (lo + 1)
        else:
            m = np.int64(np.floor((tj - 1.0) / 2.0))
            a, b = 2 * m + 1, 2 * m + 3
            k1, k2, l1, l2 = (a + np.sign(a)) // 2, (b + np.sign(b)) // 2, np.float64(a), np.float64(b)
        e = tj - l1
        c = e * e + lam * price(table, k1, offset, esc)
        if k1 & 1 == 0:
            if c < be:
                be, ie = c, 1
        elif c < bo:
            bo, io = c, 1
        e = tj - l2
        c = e * e + lam * price(table, k2, offset, esc)
        if k2 & 1 == 0:
            if c < be:
                be, ie = c, 2
        elif c < bo:
            bo, io = c, 2
        return be, ie, bo, io

    @jit
    def viterbi(x, step, lam, p0, p1, offset, esc, out):
        # predecessors (PRED): 0 <- (0, even), (1, odd); 1 <- (2, even), (3, odd);
        #                      2 <- (0, odd), (1, even); 3 <- (2, odd), (3, even)
        rows, cols = x.shape
        back = np.empty((cols, 4), np.uint8)  # (predecessor state << 2) | candidate index
        for r in range(rows):
            c0, c1, c2, c3 = 0.0, np.inf, np.inf, np.inf
            for j in range(cols):
                tj = np.float64(x[r, j]) / step
                e0, i0e, o0, i0o = best_by_parity(tj, 0, lam, p0, offset, esc)
                e1, i1e, o1, i1o = best_by_parity(tj, 1, lam, p1, offset, esc)
                ta, tb = c0 + e0, c1 + o0
                if tb < ta:
                    n0, back[j, 0] = tb, 4 | i0o
                else:
                    n0, back[j, 0] = ta, i0e
                ta, tb = c2 + e1, c3 + o1
                if tb < ta:
                    n1, back[j, 1] = tb, 12 | i1o
                else:
                    n1, back[j, 1] = ta, 8 | i1e
                ta, tb = c0 + o0, c1 + e0
                if tb < ta:
                    n2, back[j, 2] = tb, 4 | i0e
                else:
                    n2, back[j, 2] = ta, i0o
                ta, tb = c2 + o1, c3 + e1
                if tb < ta:
                    n3, back[j, 3] = tb, 12 | i1e
                else:
                    n3, back[j, 3] = ta, 8 | i1o
                c0, c1, c2, c3 = n0, n1, n2, n3
            s = np.int64(0)
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
                out[r, j] = code_of(np.float64(x[r, j]) / step, s >> 1, b & 3)

    @jit
    def nxt_flat(s, p):
        # NEXT[s, p] = [[0, 2], [2, 0], [1, 3], [3, 1]][s][p]
        if s < 2:
            return 2 * (s ^ p)
        return 1 + 2 * ((s & 1) ^ p)

    @jit
    def states_kernel(k, out):
        rows, cols = k.shape
        for r in range(rows):
            s = 0
            for j in range(cols):
                out[r, j] = s
                s = nxt_flat(s, k[r, j] & 1)

    @jit
    def split_kernel(k, a, b):
        # column-major walk; the state of every row is carried in `st`
        rows, cols = k.shape
        st = np.zeros(rows, np.int64)
        n0 = 0
        n1 = 0
        for j in range(cols):
            for r in range(rows):
                v = k[r, j]
                if st[r] < 2:
                    a[n0] = v
                    n0 += 1
                else:
                    b[n1] = v
                    n1 += 1
                st[r] = nxt_flat(st[r], v & 1)
        return n0

    @jit
    def merge_kernel(a, b, k):
        # returns 0, or 2 * (column + 1) + the stream that ran out
        rows, cols = k.shape
        st = np.zeros(rows, np.int64)
        n0 = 0
        n1 = 0
        for j in range(cols):
            for r in range(rows):
                if st[r] < 2:
                    if n0 >= a.size:
                        return 2 * (j + 1)
                    v = a[n0]
                    n0 += 1
                else:
                    if n1 >= b.size:
                        return 2 * (j + 1) + 1
                    v = b[n1]
                    n1 += 1
                k[r, j] = v
                st[r] = nxt_flat(st[r], v & 1)
        return 0

    @jit
    def levels_kernel(k, out):
        rows, cols = k.shape
        for r in range(rows):
            s = 0
            for j in range(cols):
                v = np.int64(k[r, j])
                sg = (v > 0) - (v < 0)
                out[r, j] = 2 * v - sg if s >= 2 else 2 * v
                s = nxt_flat(s, v & 1)

    @jit
    def shrink_sums(x, lv, step, sums):
        # sums[g] += sign(L) (L - x / step), sums[2 + g] += 1, g = 0 for |L| = 1, 1 for |L| >= 2
        for i in range(lv.size):
            v = lv.flat[i]
            if v != 0:
                g = 0 if v == 1 or v == -1 else 1
                sg = 1.0 if v > 0 else -1.0
                sums[g] += sg * (np.float64(v) - np.float64(x.flat[i]) / step)
                sums[2 + g] += 1.0

    @jit
    def shrunk_kernel(lv, d1, d2, step, out):
        for i in range(lv.size):
            v = lv.flat[i]
            d = d1 if v == 1 or v == -1 else d2
            sg = (v > 0) - (v < 0)
            out.flat[i] = np.float32(np.float64(v) - sg * d / 256.0) * step

    return {"viterbi": viterbi, "states": states_kernel, "split": split_kernel, "merge": merge_kernel,
                "levels": levels_kernel, "shrink_sums": shrink_sums, "shrunk": shrunk_kernel}


# ----------------------------------------------------------------------------- rate-distortion passes

def order0_prices(k: np.ndarray, alpha: float = 0.5) -> tuple[tuple[np.ndarray, np.ndarray], int]:
    """((bits under Q0, bits under Q1), offset): -log2 of each quantizer's smoothed code
    frequencies (count + alpha over the code range of k), the model a re-pricing pass uses."""
    k = _as_2d(k, "k")
    lo = int(k.min())
    size = int(k.max()) - lo + 1
    q = QUANTIZER[states(k)]
    key = (k.astype(np.int64) - lo) + q.astype(np.int64) * size
    counts = np.bincount(key.ravel(), minlength=2 * size).reshape(2, size).astype(np.float64)
    p = (counts + alpha) / (counts.sum(1, keepdims=True) + alpha * size)
    bits = -np.log2(p)
    return (bits[0], bits[1]), lo


def quantize_dq(x: np.ndarray, step: float, c: float = 0.1, passes: int = 2,
                backend: str = "auto", recon: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """(codes int32, float32 reconstruction) of 2-D x: a pure-distortion trellis pass, then
    passes - 1 passes with lambda = c step^2 priced by per-quantizer order-0 models of the
    previous pass (as benchmarks/ecsq_core.dq_quantize). c = 0 or passes = 1: distortion only."""
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes!r}")
    if not (math.isfinite(c) and c >= 0):
        raise ValueError(f"c must be a finite number >= 0, got {c!r}")
    k = trellis(x, step, 0.0, backend=backend)
    if k.size:
        for _ in range(passes - 1 if c > 0 else 0):
            prices, lo = order0_prices(k)
            k_new = trellis(x, step, c * float(step) ** 2, prices, offset=lo, backend=backend)
            if np.array_equal(k_new, k):
                break
            k = k_new
    return k, reconstruct(k, step) if recon else None


# ----------------------------------------------------------------------------- context-split streams

def split_by_quantizer(k: np.ndarray, backend: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """(codes coded under Q0, codes coded under Q1), each in column-major order (column j's rows
    in order, then column j+1), so merge_streams can rebuild k one column at a time."""
    k = _as_2d(k, "k")
    if k.size and _resolve(backend) == "numba":
        a, b = np.empty(k.size, k.dtype), np.empty(k.size, k.dtype)
        n0 = _load_numba()["split"](np.ascontiguousarray(k), a, b)
        return a[:n0].copy(), b[:k.size - n0].copy()
    kt = k.T.ravel()
    q = QUANTIZER[states(k, backend)].T.ravel()
    return kt[q == 0], kt[q == 1]


def merge_streams(codes_q0: np.ndarray, codes_q1: np.ndarray, rows: int, cols: int,
                  backend: str = "auto") -> np.ndarray:
    """Inverse of split_by_quantizer: k [rows, cols] (dtype of the streams). At column j each row's
    state follows from column j-1; rows under Q0 take the next symbols of stream 0 in row order
    (boolean-mask assignment is that cumulative count), the others the next of stream 1.
    ValueError when the stream lengths do not fit the shape exactly."""
    c0, c1 = np.asarray(codes_q0).ravel(), np.asarray(codes_q1).ravel()
    if rows < 0 or cols < 0:
        raise ValueError(f"shape ({rows}, {cols}) is negative")
    if c0.size + c1.size != rows * cols:
        raise ValueError(f"streams hold {c0.size} + {c1.size} codes, not {rows} x {cols}")
    if not (np.issubdtype(c0.dtype, np.integer) and np.issubdtype(c1.dtype, np.integer)):
        raise ValueError("streams must hold integer codes")
    dtype = np.result_type(c0.dtype, c1.dtype)
    k = np.empty((rows, cols), dtype)
    if k.size and _resolve(backend) == "numba":
        code = _load_numba()["merge"](np.ascontiguousarray(c0, dtype), np.ascontiguousarray(c1, dtype), k)
        if code:
            raise ValueError(f"stream {code % 2} runs out at column {code // 2 - 1}: "
                             "the streams do not match this shape")
        return k
    kt = np.empty((cols, rows), dtype)  # built column by column, contiguous
    s = np.zeros(rows, np.int8)
    n0 = n1 = 0
    for j in range(cols):
        use0 = QUANTIZER[s] == 0
        a = int(np.count_nonzero(use0))
        b = rows - a
        if n0 + a > c0.size or n1 + b > c1.size:
            raise ValueError(f"stream {0 if n0 + a > c0.size else 1} runs out at column {j}: "
                             "the streams do not match this shape")
        col = kt[j]
        col[use0] = c0[n0:n0 + a]
        col[~use0] = c1[n1:n1 + b]
        n0, n1 = n0 + a, n1 + b
        s = NEXT[s, col & 1]
    k[...] = kt.T
    return k


def _as_2d(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D [rows, cols] (reshape a tensor first), got shape {a.shape}")
    return a


__all__ = ["NEXT", "QUANTIZER", "levels", "merge_streams", "order0_prices", "quantize_dq", "reconstruct",
           "shrink_sums", "shrunk", "split_by_quantizer", "states", "trellis"]
