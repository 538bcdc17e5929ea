"""Vector quantization of row pieces (`vq`): one learned codebook of 2^bits centroids per tensor.

vq (bits 1-16, K = 2^bits centroids of vector_dim values): rows are cut into sub-vectors of
`vector_dim` consecutive values; when cols % vector_dim != 0 each row is zero-padded to the next
multiple (params["pad"] records how many zeros; decode drops them). One codebook per tensor,
trained by the shared vector k-means (`vector_kmeans`: vq is pq with one subspace); assignment
runs in chunks of at most 4M distance entries. Arrays: codes [rows, pieces per row],
codebook [K, vector_dim] (float32 under `auto`: one per tensor). With --importance the centroids
are weighted means and pieces are assigned by weighted distance.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ArchiveError, ConfigError
from ..calibration.importance import TensorImportance
from ..spec import Spec
from .base import ArrayLayout, Encoding, Method, code_dtype, code_layout, matrix_shape, param
from .kmeans import codebook_dtype
from .scales import STORAGE, store_narrow
from .vector_kmeans import assign, nearest as _nearest, train_subspaces
from . import register


def vq_train(vectors: np.ndarray, k: int, iters: int, seed: int, weights: np.ndarray | None = None) -> np.ndarray:
    """A [k, d] float32 codebook for `vectors` [n, d]: the shared vector k-means with one subspace
    (pq's trainer on an [n, 1, d] cube), so vq and pq train, sample and seed alike."""
    return train_subspaces(np.asarray(vectors, dtype=np.float32)[:, None, :], k, iters, seed, labels=False,
                           weights=None if weights is None else weights[:, None, :])[0][0]


def _vq_geometry(shape: tuple[int, ...], dim: int) -> tuple[int, int, int]:
    """(rows, cols, pad): each row gets `pad` zeros so that cols + pad is a multiple of dim."""
    rows, cols = matrix_shape(shape)
    return rows, cols, (-cols) % dim


@register
class VQ(Method):
    name = "vq"
    weighs_importance = True
    options = frozenset({"bits", "vector_dim", "iters", "seed", "scale_dtype"})

    def check_spec(self, spec: Spec) -> None:
        if not 1 <= spec.bits <= 16:
            raise ConfigError(f"vq takes --bits 1 to 16, got {spec.bits}")

    def _encode(self, x: np.ndarray, spec: Spec, weights: np.ndarray | None = None
                ) -> tuple[Encoding, np.ndarray | None]:
        x = np.asarray(x, dtype=np.float32)
        dim, k = spec.vector_dim, 2**spec.bits
        rows, cols, pad = _vq_geometry(x.shape, dim)
        m = x.reshape(rows, cols)
        wv = None
        if pad:
            m = np.concatenate([m, np.zeros((rows, pad), np.float32)], axis=1)
        if weights is not None:  # padding weighs nothing
            wv = np.concatenate([weights, np.zeros((rows, pad), np.float32)], axis=1).reshape(-1, dim)
        vectors = np.ascontiguousarray(m).reshape(-1, dim)
        c = vq_train(vectors, k, spec.iters, spec.seed, wv)
        # centroids are values, not multipliers: a few subnormal components among normal ones cost
        # only their own tiny absolute error and are kept; a codebook of tiny values falls back
        narrow = codebook_dtype(spec.scale_dtype, many=False)
        tiny = float(np.finfo(STORAGE[narrow]).tiny) if narrow != "float32" else 0.0
        keep = c.size > 0 and float(np.abs(c).max()) >= tiny
        cb, cb_name = store_narrow(c, narrow, subnormal="keep" if keep else "refuse")
        cbf = cb.astype(np.float32)
        idx = _nearest(vectors, cbf)[0] if wv is None else assign(vectors[None], cbf[None], w=wv[None])[0][0]
        recon = cbf[idx].reshape(rows, cols + pad)[:, :cols].reshape(x.shape)
        params = {**self.params_for(x.shape, spec), "codebook_dtype": cb_name}
        codes = idx.astype(code_dtype(spec.bits)).reshape(rows, (cols + pad) // dim)
        return (Encoding(self.name, params, {"codes": codes, "codebook": cb}),
                np.ascontiguousarray(recon).reshape(x.shape))

    def _encode_importance(self, x: np.ndarray, spec: Spec, imp: TensorImportance) -> Encoding:
        """Centroids and assignments for the weighted error: each coordinate of a piece weighs as
        its column (and row) of the statistics."""
        return self._encode(x, spec, imp.element_weights(tuple(np.shape(x))))[0]

    def params_for(self, shape: tuple[int, ...], spec: Spec, x: np.ndarray | None = None) -> dict[str, Any]:
        params = {"bits": spec.bits, "vector_dim": spec.vector_dim, "pad": _vq_geometry(shape, spec.vector_dim)[2],
                  "codebook_dtype": codebook_dtype(spec.scale_dtype, many=False)}
        if x is not None and params["codebook_dtype"] != "float32":  # whether the centroids fit: train them
            return self._encode(x, spec)[0].params
        return params

    def layout(self, shape: tuple[int, ...], params: dict[str, Any]) -> dict[str, ArrayLayout]:
        bits = param(params, "bits", int, lo=1, hi=16)
        dim = param(params, "vector_dim", int, lo=1, hi=1 << 16)
        pad = param(params, "pad", int, lo=0, hi=dim - 1)
        cb_dtype = param(params, "codebook_dtype", str, choices=tuple(STORAGE))
        rows, cols, expected = _vq_geometry(shape, dim)
        if pad != expected:
            raise ArchiveError(f"param 'pad' = {pad} but {cols} columns need {expected} to fill {dim}-wide pieces")
        return {"codes": code_layout((rows, (cols + pad) // dim), bits),
                "codebook": ArrayLayout(STORAGE[cb_dtype], (2**bits, dim))}

    def decode(self, enc: Encoding, shape: tuple[int, ...]) -> np.ndarray:
        p = enc.params
        rows, cols, pad = _vq_geometry(shape, p["vector_dim"])
        idx = enc.arrays["codes"].reshape(-1).astype(np.int64)
        cb = enc.arrays["codebook"].astype(np.float32)
        return np.ascontiguousarray(cb[idx].reshape(rows, cols + pad)[:, :cols]).reshape(shape)

    def describe(self, params: dict[str, Any]) -> str:
        return f"vq{params['bits']} d{params['vector_dim']}"
