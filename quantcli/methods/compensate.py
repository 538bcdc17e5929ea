"""Second-order error compensation (GPTQ-style) for methods with a per-element grid.

Quantizing column j of W [out, in] leaves an error e_j; with the inputs' second moment G
(`NAME.gram`), the output error sum_i dW_i G dW_i^T is smallest when the columns not yet quantized
absorb that error: w_k -= e_j (G^-1)_jk / (G^-1)_jj for k > j. Done in Cholesky form (U upper with
G^-1 = U^T U): e_j is divided by U_jj and spread with row j of U, one column at a time inside a
block of columns, and onto the later blocks with one matrix product per block.

The method stays in charge of its grid through a `ColumnGrid`: `fit` sets the grid of a group of
columns from their current (already compensated) values, when the group starts; `snap` rounds one
column onto it. Rows are independent (they share G), so a row sample measures what the whole
tensor gets. Deterministic: float64 throughout, fixed block order, no threads of its own.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

DAMP = 0.01  # added to G's diagonal, as a fraction of its mean: keeps the inverse well conditioned
BLOCK = 128  # columns per block of lazy updates


class ColumnGrid(Protocol):
    def fit(self, columns: np.ndarray, start: int) -> None:
        """Set the grid for columns [start, start + columns.shape[1]) from their current values."""

    def snap(self, column: np.ndarray, j: int) -> np.ndarray:
        """Quantize column j (float64 [rows]) onto the grid; return its float64 reconstruction."""


def input_factor(gram: np.ndarray, damp: float = DAMP) -> np.ndarray:
    """R, upper triangular, with R R^T = G + damp mean(diag G) I (the Cholesky factor of G taken
    from the last column back). Columns whose input is always zero (G_jj = 0) get a unit diagonal:
    their error couples to nothing. Damping grows tenfold (up to four times) if rounding leaves
    the matrix short of positive definite."""
    g = np.array(gram, dtype=np.float64)
    n = g.shape[0]
    diag = np.diagonal(g).copy()
    dead = diag <= 0
    g[dead, :] = 0
    g[:, dead] = 0
    g[dead, dead] = 1.0
    live = diag[~dead]
    base = float(live.mean()) if live.size else 1.0
    for attempt in range(5):
        h = g + np.eye(n) * (damp * 10 ** attempt * base)
        try:
            return np.ascontiguousarray(np.linalg.cholesky(h[::-1, ::-1])[::-1, ::-1])
        except np.linalg.LinAlgError:
            continue
    raise np.linalg.LinAlgError("the Gram matrix stays singular after damping")


def compensate(w: np.ndarray, gram: np.ndarray, grid: ColumnGrid, group: int, block: int = BLOCK,
               damp: float = DAMP) -> np.ndarray:
    """Quantize the columns of w [rows, cols] in order onto `grid`, compensating each column's error
    on the columns after it. `group`: columns per `grid.fit` (cols for one grid fitted on the
    original values). Returns the float64 reconstruction [rows, cols].

    With G = R R^T (R upper), the output error is ||(W - Q) R||^2 and column k of (W - Q) R is
    sum_{i<=k} (w_i - q_i) R_ik: once columns i < k are fixed, column k's share is smallest when
    q_k is the grid point nearest to w_k + sum_{i<k} (w_i - q_i) R_ik / R_kk (GPTQ's update, in
    the form of Babai's nearest plane). The sums are kept per block of columns: within the block
    after each column, onto later blocks with one matrix product per block."""
    m = np.asarray(w, dtype=np.float64)
    rows, cols = m.shape
    out = np.empty((rows, cols))
    if m.size == 0:
        return out
    r = input_factor(gram, damp)
    diag = np.diagonal(r).copy()
    carry = np.zeros((rows, cols))  # sum over quantized columns i of (w_i - q_i) R_ik, for later k
    group = max(1, min(group, cols))
    if group < cols:  # a block holds whole groups, so each group's grid is fitted on updated values
        block = group * max(1, block // group)
    for b0 in range(0, cols, block):
        b1 = min(b0 + block, cols)
        part = carry[:, b0:b1] / diag[b0:b1]  # the corrections, updated column by column below
        errors = np.empty((rows, b1 - b0))
        for i in range(b1 - b0):
            j = b0 + i
            if j % group == 0:
                grid.fit(m[:, j:j + group] + part[:, i:i + group] if group < cols else m, j)
            q = grid.snap(m[:, j] + part[:, i], j)
            out[:, j] = q
            e = m[:, j] - q
            if i + 1 < b1 - b0:
                part[:, i + 1:] += np.outer(e, r[j, j + 1:b1] / diag[j + 1:b1])
            errors[:, i] = e
        if b1 < cols:
            carry[:, b1:] += errors @ r[b0:b1, b1:]
    return out
