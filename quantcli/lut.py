"""Lookup-table dot products with a product-quantized matrix: `Q @ W_hat.T` without building W_hat.

For a query q and subspace m, LUT[m, k] = <q_m, codebook_m[k]>; then (Q @ W_hat.T)[r] is the sum
over m of LUT[m, codes[r, m]]: M table reads per row instead of d multiply-adds, and the weight
traffic is the code bytes (n*M*log2(K)/8) instead of 4*n*d bytes of float32.

Backends, chosen per call:
  numba  compiled gather-sum, parallel over rows (the `fast` extra: `pip install numba`).
         For K <= 16 two subspaces share one 256-entry table indexed by a byte holding both codes,
         halving the reads (for K = 16 that byte is exactly the packed archive byte).
  numpy  always available: chunked gather of the tables then a sum over subspaces.
`auto` (the default) takes numba when it imports. The environment variable QUANTCLI_LUT_BACKEND
(`auto`, `numpy`, `numba`) or the `backend=` argument overrides it; tests use it to cover both.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import ConfigError, InputError
from .methods.pq import PQCodes

BACKENDS = ("auto", "numpy", "numba")
ENV_VAR = "QUANTCLI_LUT_BACKEND"
_CHUNK_ELEMENTS = 1 << 22  # gathered table entries per chunk in the numpy path (16 MB)
_QUERY_TILE = 16  # queries per numba pass: keeps one table tile near the cache for large b

_kernels: dict | None = None  # compiled numba kernels, or {} when numba is unavailable


def _load_numba() -> dict:
    """Compile the numba kernels once; {} when numba is not installed (the numpy path is used)."""
    global _kernels
    if _kernels is not None:
        return _kernels
    try:
        import numba
    except Exception:  # not installed, or broken install: the numpy path still works
        _kernels = {}
        return _kernels

    def jit(fn):
        # fastmath lets LLVM reassociate the float sums, which is what vectorises the gathers;
        # inputs are checked finite first, so its no-NaN/Inf assumption holds.
        try:
            return numba.njit(parallel=True, fastmath=True, cache=True)(fn)
        except Exception:  # no writable cache location (read-only install): compile per process
            return numba.njit(parallel=True, fastmath=True)(fn)

    def gather_one(codes, lut, out):
        # b = 1: codes [n, M] row-major, lut flat [M*K]; one pass over each row's code bytes.
        n, m_sub = codes.shape
        k = lut.shape[0] // m_sub
        for r in numba.prange(n):
            c = codes[r]
            acc = np.float32(0.0)
            for m in range(m_sub):
                acc += lut[m * k + np.int64(c[m])]
            out[r] = acc

    def gather_many(codes, lut, out):
        # b > 1: lut is [M, K, b], so one code selects a contiguous run of b values (vector adds).
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

    def pair_tables(lut, out):
        # out[j, p, lo + 16*hi] = lut[j, 2p, lo] + lut[j, 2p+1, hi]; codes >= K never occur.
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

    _kernels = {"one": jit(gather_one), "many": jit(gather_many), "pair": jit(pair_tables)}
    return _kernels


def resolve_backend(backend: str | None = None) -> str:
    """The backend a call will use: the argument, else $QUANTCLI_LUT_BACKEND, else auto."""
    choice = backend or os.environ.get(ENV_VAR, "auto") or "auto"
    if choice not in BACKENDS:
        raise ConfigError(f"LUT backend must be one of {', '.join(BACKENDS)}, got {choice!r}")
    if choice == "numpy":
        return "numpy"
    available = bool(_load_numba())
    if choice == "numba" and not available:
        raise ConfigError("the numba LUT backend was asked for but numba is not installed "
                          "(pip install numba)")
    return "numba" if available else "numpy"


def active_backend() -> str:
    """'numba' or 'numpy': what `lookup_dot` uses by default in this process."""
    return resolve_backend(None)


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
    # one batched product [M, K, s] @ [M, s, b]; the [M, K, b] result is what the numba kernel reads
    return np.matmul(books, pq.pad_columns(q).transpose(1, 2, 0)).transpose(2, 0, 1)


def _numpy_dot(lut: np.ndarray, pq: PQCodes) -> np.ndarray:
    """Gather rows of the `[M*K, b]` table by flat index codes + m*K, sum over m, in row chunks."""
    b, m_sub, k = lut.shape
    if "flat_index" not in pq._cache:
        pq._cache["flat_index"] = pq.codes.astype(np.intp) + (np.arange(m_sub, dtype=np.intp) * k)[None, :]
    idx = pq._cache["flat_index"]
    table = np.ascontiguousarray(lut.reshape(b, m_sub * k).T)  # [M*K, b]
    n = pq.n
    out = np.empty((n, b), dtype=np.float32)
    step = max(1, _CHUNK_ELEMENTS // max(m_sub * b, 1))
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        out[lo:hi] = np.take(table, idx[lo:hi], axis=0).sum(axis=1, dtype=np.float32)
    return out.T


def _paired(lut: np.ndarray, pq: PQCodes, kernels: dict) -> tuple[np.ndarray, np.ndarray]:
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
    if kernels:
        table = np.empty((b, half, 256), dtype=np.float32)
        kernels["pair"](np.ascontiguousarray(lut), table)
        return pq._cache["paired_codes"], table
    wide = np.zeros((b, 2 * half, 16), dtype=np.float32)
    wide[:, :m_sub, :k] = lut
    table = wide[:, 0::2, None, :] + wide[:, 1::2, :, None]  # [b, half, hi, lo] -> index lo + 16*hi
    return pq._cache["paired_codes"], table.reshape(b, half, 256)


def _numba_dot(lut: np.ndarray, pq: PQCodes) -> np.ndarray:
    kernels = _load_numba()
    b, _, k = lut.shape
    if k <= 16:
        codes, lut = _paired(lut, pq, kernels)
    else:
        if "codes_c" not in pq._cache:
            pq._cache["codes_c"] = np.ascontiguousarray(pq.codes)
        codes = pq._cache["codes_c"]
    if b == 1:
        out = np.empty(pq.n, dtype=np.float32)
        kernels["one"](codes, np.ascontiguousarray(lut[0]).reshape(-1), out)
        return out[None, :]
    out = np.empty((pq.n, b), dtype=np.float32)
    for lo in range(0, b, _QUERY_TILE):
        hi = min(b, lo + _QUERY_TILE)
        tile = np.ascontiguousarray(lut[lo:hi].transpose(1, 2, 0))  # [M, K, tile]
        part = np.empty((pq.n, hi - lo), dtype=np.float32)
        kernels["many"](codes, tile, part)
        out[:, lo:hi] = part
    return out.T


def lookup_dot(queries: np.ndarray, pq: PQCodes, *, backend: str | None = None) -> np.ndarray:
    """`queries @ W_hat.T` by table lookup: `[d]` -> `[n]`, `[b, d]` -> `[b, n]`, float32.

    `backend`: 'auto' (numba when installed), 'numpy' or 'numba'; default from $QUANTCLI_LUT_BACKEND.
    Layouts each backend needs are cached on `pq`, so repeated calls pay only the lookups.

    >>> import numpy as np
    >>> from quantcli.methods.pq import pq_encode
    >>> w = np.array([[0.1, -0.5, 0.0, 1.0], [2.5, -1.2, 0.7, -0.3], [0.9, 1.5, -2.0, 0.2]], np.float32)
    >>> pq = pq_encode(w, subspaces=2, centroids=3, seed=0)
    >>> lookup_dot(np.array([0.2, -0.1, 0.5, 1.0], np.float32), pq).astype(float).round(5).tolist()
    [1.07, 0.67, -0.77]
    """
    q, single = _as_queries(queries, pq)
    which = resolve_backend(backend)
    lut = lookup_tables(q, pq)
    if pq.n == 0:
        out = np.zeros((q.shape[0], 0), dtype=np.float32)
    elif which == "numba":
        out = _numba_dot(lut, pq)
    else:
        out = _numpy_dot(lut, pq)
    out = np.ascontiguousarray(out, dtype=np.float32)
    return out[0] if single else out
