"""Lookup-table dot products with a product-quantized matrix: `Q @ W_hat.T` without building W_hat.

For a query q and subspace m, LUT[m, k] = <q_m, codebook_m[k]>; then (Q @ W_hat.T)[r] is the sum
over m of LUT[m, codes[r, m]]: M table reads per row instead of d multiply-adds, and the weight
traffic is the code bytes (n*M*log2(K)/8) instead of 4*n*d bytes of float32.

The gather-sum is a numba kernel (kernels/lut.py), parallel over rows, imported on first use. For
K <= 16 two subspaces share one 256-entry table indexed by a byte holding both codes, halving the
reads (for K = 16 that byte is exactly the packed archive byte). tests/oracles/lut.py holds the
numpy twin it must match bit for bit.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .errors import InputError


class PQCodes(Protocol):
    """What the products read of a product-quantized `[n, d]` matrix (the pq method's `PQCodes`,
    reached through `Method.lookup_codes`): float32 codebooks `[M, K, s]`, codes `[n, M]`, the
    column count `d`, and `_cache` for layouts built on first use."""

    codebooks: np.ndarray
    codes: np.ndarray
    d: int
    _cache: dict

    @property
    def n(self) -> int: ...

    def pad_columns(self, x: np.ndarray) -> np.ndarray: ...

_QUERY_TILE = 16  # queries per kernel pass: keeps one table tile near the cache for large b


def _as_queries(queries: np.ndarray, pq: PQCodes) -> tuple[np.ndarray, bool]:
    q = np.asarray(queries)
    single = q.ndim == 1
    q = q.reshape(1, -1) if single else q
    if q.ndim != 2 or q.shape[1] != pq.d:
        raise InputError(f"queries must have shape [{pq.d}] or [b, {pq.d}], got {list(np.shape(queries))}")
    if not np.issubdtype(q.dtype, np.floating) and not np.issubdtype(q.dtype, np.integer):
        raise InputError(f"queries must be numbers, got dtype {q.dtype}")
    q = q.astype(np.float32, copy=False)
    if not np.isfinite(q).all():
        raise InputError("queries hold NaN or Inf values")
    return q, single


def lookup_tables(queries: np.ndarray, pq: PQCodes) -> np.ndarray:
    """LUT[b, m, k] = <query_b restricted to subspace m, codebook_m[k]> as float32 `[b, M, K]`.

    Padding slots of the split are zero in both query and codebook, so they add nothing.

    >>> import numpy as np
    >>> from quantcli.methods.pq import PQCodes
    >>> pq = PQCodes(codebooks=np.array([[[1, 0], [0, 1]]], np.float32), codes=np.zeros((1, 1), np.uint8), d=2)
    >>> lookup_tables(np.array([3.0, 5.0]), pq).tolist()
    [[[3.0, 5.0]]]
    """
    q, _ = _as_queries(queries, pq)
    books = np.asarray(pq.codebooks, dtype=np.float32)
    # one batched product [M, K, s] @ [M, s, b]; the [M, K, b] result is what the kernel reads
    return np.matmul(books, pq.pad_columns(q).transpose(1, 2, 0)).transpose(2, 0, 1)


def _paired(lut: np.ndarray, pq: PQCodes) -> tuple[np.ndarray, np.ndarray]:
    """For K <= 16: (codes [n, ceil(M/2)] uint8 = c_even | c_odd << 4, table [b, ceil(M/2), 256]).

    table[p, lo | hi << 4] = LUT[2p, lo] + LUT[2p+1, hi]; an odd M gets a zero partner subspace.
    """
    b, m_sub, k = lut.shape
    half = (m_sub + 1) // 2
    if "paired_codes" not in pq._cache:
        codes = pq.codes.astype(np.uint8)
        if m_sub % 2:
            codes = np.concatenate([codes, np.zeros((pq.n, 1), np.uint8)], axis=1)
        pq._cache["paired_codes"] = np.ascontiguousarray(codes[:, 0::2] | (codes[:, 1::2] << 4))
    from .kernels import lut as kernels

    table = np.empty((b, half, 256), dtype=np.float32)
    kernels.pair_tables(np.ascontiguousarray(lut), table)
    return pq._cache["paired_codes"], table


def _dot(lut: np.ndarray, pq: PQCodes) -> np.ndarray:
    from .kernels import lut as kernels

    b, _, k = lut.shape
    if k <= 16:
        codes, lut = _paired(lut, pq)
    else:
        if "codes_c" not in pq._cache:
            pq._cache["codes_c"] = np.ascontiguousarray(pq.codes)
        codes = pq._cache["codes_c"]
    if b == 1:
        out = np.empty(pq.n, dtype=np.float32)
        kernels.gather_one(codes, np.ascontiguousarray(lut[0]).reshape(-1), out)
        return out[None, :]
    out = np.empty((pq.n, b), dtype=np.float32)
    for lo in range(0, b, _QUERY_TILE):
        hi = min(b, lo + _QUERY_TILE)
        tile = np.ascontiguousarray(lut[lo:hi].transpose(1, 2, 0))  # [M, K, tile]
        part = np.empty((pq.n, hi - lo), dtype=np.float32)
        kernels.gather_many(codes, tile, part)
        out[:, lo:hi] = part
    return out.T


def lookup_dot(queries: np.ndarray, pq: PQCodes) -> np.ndarray:
    """`queries @ W_hat.T` by table lookup: `[d]` -> `[n]`, `[b, d]` -> `[b, n]`, float32.

    The code layouts the kernel reads are cached on `pq`, so repeated calls pay only the lookups.

    >>> import numpy as np
    >>> from quantcli.methods.pq import pq_encode
    >>> w = np.array([[0.1, -0.5, 0.0, 1.0], [2.5, -1.2, 0.7, -0.3], [0.9, 1.5, -2.0, 0.2]], np.float32)
    >>> pq = pq_encode(w, subspaces=2, centroids=3, seed=0)
    >>> lookup_dot(np.array([0.2, -0.1, 0.5, 1.0], np.float32), pq).astype(float).round(5).tolist()
    [1.07, 0.67, -0.77]
    """
    q, single = _as_queries(queries, pq)
    lut = lookup_tables(q, pq)
    if pq.n == 0:
        out = np.zeros((q.shape[0], 0), dtype=np.float32)
    else:
        out = _dot(lut, pq)
    out = np.ascontiguousarray(out, dtype=np.float32)
    return out[0] if single else out
