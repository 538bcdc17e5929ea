"""pq-dot's kernels (quantcli/lut.py): gather-sums over lookup tables, parallel over rows.

No fastmath: each row's sum is taken in subspace order from 0.0, so results are the same floats
as tests/oracles/lut.py's numpy sums in that order (and the same on every run and thread count).
"""

from __future__ import annotations

import numba
import numpy as np

from ._jit import jit

# numba keys a kernel's on-disk cache by this file's content only, not by the files it calls into:
# DEPENDS (a digest of _jit.py, checked by tests/test_structure.py) makes this file change with them.
DEPENDS = "2dbfa5bb8d804b2f"


@jit(parallel=True)
def gather_one(codes, lut, out):
    """b = 1: out[r] = sum over m of lut[m * K + codes[r, m]] (codes [n, M], lut flat [M * K])."""
    n, m_sub = codes.shape
    k = lut.shape[0] // m_sub
    for r in numba.prange(n):
        c = codes[r]
        acc = np.float32(0.0)
        for m in range(m_sub):
            acc += lut[m * k + np.int64(c[m])]
        out[r] = acc


@jit(parallel=True)
def gather_many(codes, lut, out):
    """b > 1: out[r, :] = sum over m of lut[m, codes[r, m], :] (lut [M, K, b]: one code selects a
    contiguous run of b values, so the adds are vector adds)."""
    n, m_sub = codes.shape
    b = lut.shape[2]
    for r in numba.prange(n):
        acc = out[r]  # a view: no allocation per row
        for j in range(b):
            acc[j] = 0.0
        for m in range(m_sub):
            row = lut[m, codes[r, m]]
            for j in range(b):
                acc[j] += row[j]


@jit(parallel=True)
def pair_tables(lut, out):
    """out[j, p, lo + 16 hi] = lut[j, 2p, lo] + lut[j, 2p + 1, hi] (0 where a subspace or code
    does not exist): two subspaces of K <= 16 codes read through one byte."""
    b, m_sub, k = lut.shape
    half = out.shape[1]
    for p in numba.prange(half):
        for j in range(b):
            for hi in range(16):
                upper = np.float32(0.0)
                if 2 * p + 1 < m_sub and hi < k:
                    upper = lut[j, 2 * p + 1, hi]
                for lo in range(16):
                    lower = lut[j, 2 * p, lo] if lo < k else np.float32(0.0)
                    out[j, p, lo + 16 * hi] = lower + upper
