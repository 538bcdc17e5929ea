"""Product quantization (PQ): each row of a weight split into M sub-vectors, one k-means codebook
per subspace, and a row stored as M centroid indices.

The tensor is viewed as `[n, d]` (`matrix_shape`: rows are the vectors). Stored arrays:
  codes      the `[n, M]` code matrix of ceil(log2 K)-bit codes (uint8, or uint16 above 256
             centroids); the archive bit-packs it row-major (`quantcli.codecs.bitpack` bit order), so
             for K = 16 byte j of row r holds the codes of subspaces 2j (low nibble) and 2j+1
             (high nibble) when M is even.
  codebooks  `[M, K, s]` in float32 by default (see `resolve_codebook_dtype`).

Column split ("balanced"): M subspaces over d columns, s = ceil(d / M); the first
d - M*(s-1) subspaces take s consecutive columns, the rest s-1; narrower subspaces store a zero
in their last codebook column. So no column is dropped when d % M != 0, no subspace is all
padding, and a reader needs only (d, M) to rebuild the split (`column_split`). With
`--subvector-dim S`, M = ceil(d / S), so s <= S.

Training: one codebook per subspace by the shared vector k-means (`vector_kmeans`, also behind
`vq`): on at most max(256 K, 16384) seeded rows, greedy k-means++ then at most `iters`
Lloyd iterations with an early stop; all rows are then assigned to the trained centroids. When
every row takes part and n <= K, the codebook is the distinct sub-vectors (exact reconstruction).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ArchiveError, ConfigError
from ..calibration.importance import TensorImportance
from ..spec import Spec
from .base import ArrayLayout, Encoding, Method, check_finite_input, code_dtype, code_layout, matrix_shape, param
from .scales import STORAGE, store_narrow
from .vector_kmeans import train_count, train_subspaces
from . import register

SPLIT_RULE = "balanced"
DEFAULT_SUBVECTOR_DIM = 4
_CHUNK_ELEMENTS = 1 << 22  # gathered entries per chunk when decoding (16 MB of float32)


def code_bits(centroids: int) -> int:
    """Bits per code: ceil(log2 K), at least 1."""
    return max(1, (int(centroids) - 1).bit_length())


def resolve_codebook_dtype(requested: str) -> str:
    """`auto` means float32: a codebook costs 32*K/n bits per weight, small next to the codes when
    n >> K, and float32 keeps centroids exact (the seed's golden values to 1e-6). float16 halves
    that overhead for small tensors where it matters (e.g. K = 256 on 384 rows) at ~1e-3 relative
    codebook error; choose it with `scale_dtype="float16"`."""
    return "float32" if requested == "auto" else requested


def column_split(d: int, subspaces: int) -> tuple[int, np.ndarray, np.ndarray]:
    """The balanced split of d columns into M subspaces.

    Returns (s, widths [M], pos [d]) where s = ceil(d / M) is the stored sub-vector width and
    column j of the weight sits at position pos[j] of the padded `[M * s]` row.

    >>> s, widths, pos = column_split(10, 3)
    >>> s, widths.tolist(), pos.tolist()
    (4, [4, 3, 3], [0, 1, 2, 3, 4, 5, 6, 8, 9, 10])
    """
    if subspaces < 1 or subspaces > d:
        raise ConfigError(f"PQ needs 1 <= subspaces <= columns, got {subspaces} subspaces for {d} columns")
    s = -(-d // subspaces)
    full = d - subspaces * (s - 1)
    widths = np.where(np.arange(subspaces) < full, s, s - 1).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]])
    sub = np.repeat(np.arange(subspaces), widths)
    pos = sub * s + (np.arange(d) - starts[sub])
    return int(s), widths, pos.astype(np.int64)


def resolve_subspaces(d: int, subspaces: int | None = None, subvector_dim: int | None = None) -> int:
    """M from the options: `subspaces` as given, else ceil(d / subvector_dim) (default dim 4)."""
    if subspaces is not None and subvector_dim is not None:
        raise ConfigError("give subspaces or subvector_dim, not both")
    if d < 1:
        raise ConfigError("PQ needs at least one column")
    if subspaces is not None:
        if subspaces < 1 or subspaces > d:
            raise ConfigError(f"--subspaces must be from 1 to the number of columns ({d}), got {subspaces}")
        return int(subspaces)
    sdim = DEFAULT_SUBVECTOR_DIM if subvector_dim is None else subvector_dim
    if sdim < 1:
        raise ConfigError(f"--subvector-dim must be at least 1, got {sdim}")
    return -(-d // sdim)


@dataclass
class PQCodes:
    """A product-quantized `[n, d]` matrix: what `pq_encode` returns and `lookup_dot` consumes.

    codebooks: float32 `[M, K, s]`; codes: `[n, M]` uint8 (K <= 256) or uint16; d: columns.
    The split is `column_split(d, M)`. `_cache` holds backend-specific layouts built on first use.
    """

    codebooks: np.ndarray
    codes: np.ndarray
    d: int
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n(self) -> int:
        return int(self.codes.shape[0])

    @property
    def subspaces(self) -> int:
        return int(self.codebooks.shape[0])

    @property
    def centroids(self) -> int:
        return int(self.codebooks.shape[1])

    @property
    def subvector_dim(self) -> int:
        return int(self.codebooks.shape[2])

    @property
    def positions(self) -> np.ndarray:
        """pos[j]: where column j sits in the padded `[M * s]` row."""
        if "pos" not in self._cache:
            self._cache["pos"] = column_split(self.d, self.subspaces)[2]
        return self._cache["pos"]

    def pad_columns(self, x: np.ndarray) -> np.ndarray:
        """`[b, d]` -> `[b, M, s]` float32 with zeros in the padding slots (for queries)."""
        x = np.asarray(x, dtype=np.float32)
        if self.d == self.subspaces * self.subvector_dim:  # even split: no padding to place
            return x.reshape(x.shape[0], self.subspaces, self.subvector_dim)
        out = np.zeros((x.shape[0], self.subspaces * self.subvector_dim), dtype=np.float32)
        out[:, self.positions] = x
        return out.reshape(x.shape[0], self.subspaces, self.subvector_dim)


# ---------------------------------------------------------------------------------------------
# library API


def pq_encode(w: np.ndarray, *, subspaces: int | None = None, subvector_dim: int | None = None,
              centroids: int = 256, iters: int = 25, seed: int = 0, weights: np.ndarray | None = None) -> PQCodes:
    """Product-quantize `w` (viewed as `[shape[0], -1]`) into M codebooks of K centroids.
    `weights` (w's [n, d] view, >= 0; --importance) weight each value's squared error.

    Give `subspaces` (M) or `subvector_dim` (default 4, M = ceil(d / 4)). Deterministic for a seed.

    >>> import numpy as np
    >>> w = np.array([[0.1, -0.5, 0.0, 1.0], [2.5, -1.2, 0.7, -0.3], [0.9, 1.5, -2.0, 0.2]], np.float32)
    >>> pq = pq_encode(w, subspaces=2, centroids=3, seed=0)
    >>> pq.codebooks.shape, pq.codes.shape
    ((2, 3, 2), (3, 2))
    >>> bool(np.allclose(pq_decode(pq), w, atol=1e-6))
    True
    """
    if not 2 <= centroids <= 65536:
        raise ConfigError(f"--centroids must be from 2 to 65536, got {centroids}")
    if iters < 1:
        raise ConfigError(f"--iters must be at least 1, got {iters}")
    w = np.asarray(w, dtype=np.float32)
    n, d = matrix_shape(w.shape)
    m_sub = resolve_subspaces(d, subspaces, subvector_dim)
    s, _, pos = column_split(d, m_sub)
    check_finite_input(w)
    padded = np.zeros((n, m_sub * s), dtype=np.float32)
    padded[:, pos] = w.reshape(n, d)
    cube_weights = None
    if weights is not None:  # padding slots weigh nothing
        padded_weights = np.zeros((n, m_sub * s), dtype=np.float32)
        padded_weights[:, pos] = weights.reshape(n, d)
        cube_weights = padded_weights.reshape(n, m_sub, s)
    books, labels = train_subspaces(padded.reshape(n, m_sub, s), centroids, iters, seed, weights=cube_weights)
    assert labels is not None
    codes = labels.astype(np.uint8 if centroids <= 256 else np.uint16)
    return PQCodes(codebooks=books, codes=codes, d=d)


def pq_decode(pq: PQCodes, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Reconstruct the float32 matrix (`[n, d]`, or `shape`) from codes and codebooks.

    >>> import numpy as np
    >>> pq = PQCodes(codebooks=np.arange(8, dtype=np.float32).reshape(2, 2, 2),
    ...              codes=np.array([[1, 0]], np.uint8), d=3)
    >>> pq_decode(pq).tolist()   # split of 3 columns in 2 subspaces: widths 2, 1
    [[2.0, 3.0, 4.0]]
    """
    n, m_sub, s = pq.n, pq.subspaces, pq.subvector_dim
    books = np.asarray(pq.codebooks, dtype=np.float32)
    out = np.empty((n, pq.d), dtype=np.float32)
    step = max(1, _CHUNK_ELEMENTS // max(m_sub * s, 1))
    sub_idx = np.arange(m_sub)[None, :]
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        rows = books[sub_idx, pq.codes[lo:hi].astype(np.int64)]  # [rows, M, s]
        out[lo:hi] = rows.reshape(hi - lo, m_sub * s)[:, pq.positions]
    return out if shape is None else out.reshape(shape)


def pq_from_encoding(enc: Encoding, shape: tuple[int, ...]) -> PQCodes:
    """The `PQCodes` of a `pq` encoding (logical codes [n, M], codebooks as float32). The archive
    reader has already refused non-finite codebooks (`check_values`); codes are checked here."""
    p = enc.params
    n, d = matrix_shape(shape)
    k = p["centroids"]
    codes = enc.arrays["codes"].reshape(n, p["subspaces"])
    if codes.size and int(codes.max()) >= k:
        raise ArchiveError(f"code {int(codes.max())} is outside the {k}-centroid codebooks")
    if k <= 256:
        codes = codes.astype(np.uint8, copy=False)
    books = np.ascontiguousarray(enc.arrays["codebooks"], dtype=np.float32)
    return PQCodes(codebooks=books, codes=codes, d=d)


@register
class ProductQuantization(Method):
    name = "pq"
    weighs_importance = True
    options = frozenset({"iters", "seed", "scale_dtype", "subvector_dim", "subspaces", "centroids"})

    def check_spec(self, spec: Spec) -> None:
        resolve_codebook_dtype(spec.scale_dtype)  # every STORAGE dtype is accepted

    def params_for(self, shape: tuple[int, ...], spec: Spec, x: np.ndarray | None = None) -> dict[str, Any]:
        n, d = matrix_shape(shape)
        m_sub = resolve_subspaces(d, spec.subspaces, spec.subvector_dim)
        params = {"subspaces": m_sub, "subvector_dim": -(-d // m_sub), "centroids": spec.centroids,
                  "bits": code_bits(spec.centroids), "split": SPLIT_RULE,
                  "codebook_dtype": resolve_codebook_dtype(spec.scale_dtype), "iters": spec.iters, "seed": spec.seed,
                  "train_rows": train_count(n, spec.centroids)}
        if x is not None and params["codebook_dtype"] != "float32":  # whether the centroids fit: train them
            return self._encode(x, spec)[0].params
        return params

    def _encode_importance(self, x: np.ndarray, spec: Spec, imp: TensorImportance) -> Encoding:
        """Codebooks and codes for the weighted error (each column weighs as its statistic)."""
        return self._encode(x, spec, imp.element_weights(tuple(np.shape(x))))[0]

    def _encode(self, x: np.ndarray, spec: Spec, weights: np.ndarray | None = None
                ) -> tuple[Encoding, np.ndarray | None]:
        n, d = matrix_shape(np.shape(x))
        pq = pq_encode(x, subspaces=spec.subspaces, subvector_dim=spec.subvector_dim,
                       centroids=spec.centroids, iters=spec.iters, seed=spec.seed, weights=weights)
        # centroid components near zero are kept even when subnormal in float16 (absolute error < 6e-8)
        books, dtype_name = store_narrow(pq.codebooks, resolve_codebook_dtype(spec.scale_dtype), subnormal="keep")
        if dtype_name != "float32":
            pq = PQCodes(codebooks=books.astype(np.float32), codes=pq.codes, d=d)
        params = {**self.params_for(tuple(np.shape(x)), spec), "codebook_dtype": dtype_name}
        arrays = {"codes": pq.codes.astype(code_dtype(params["bits"]), copy=False), "codebooks": books}
        return Encoding(self.name, params, arrays), pq_decode(pq, tuple(np.shape(x)))

    def layout(self, shape: tuple[int, ...], params: dict[str, Any]) -> dict[str, ArrayLayout]:
        n, d = matrix_shape(shape)
        if d < 1:
            raise ArchiveError("PQ tensor has no columns")
        m_sub = param(params, "subspaces", int, lo=1, hi=d)
        s = param(params, "subvector_dim", int, lo=1, hi=d)
        if s != -(-d // m_sub):
            raise ArchiveError(f"subvector_dim {s} does not match ceil({d} / {m_sub})")
        k = param(params, "centroids", int, lo=2, hi=65536)
        bits = param(params, "bits", int, choices=(code_bits(k),))
        param(params, "split", str, choices=(SPLIT_RULE,))
        dtype_name = param(params, "codebook_dtype", str, choices=tuple(STORAGE))
        param(params, "iters", int, lo=1)  # how it was trained: informational, but part of the record
        param(params, "seed", int, lo=0)
        param(params, "train_rows", int, lo=0, hi=n)
        return {"codes": code_layout((n, m_sub), bits), "codebooks": ArrayLayout(STORAGE[dtype_name], (m_sub, k, s))}

    def decode(self, enc: Encoding, shape: tuple[int, ...]) -> np.ndarray:
        return pq_decode(pq_from_encoding(enc, shape), tuple(shape))

    def lookup_codes(self, enc: Encoding, shape: tuple[int, ...]) -> PQCodes:
        return pq_from_encoding(enc, shape)

    def describe(self, params: dict[str, Any]) -> str:
        return f"pq M{params['subspaces']}x{params['subvector_dim']} K{params['centroids']}"
