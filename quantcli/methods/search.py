"""Choosing per-block scales by a small search over clipping ratios (`--scale-search`).

Absmax scaling spends the whole grid on the range up to the block's largest value; clipping the
few largest values a little buys a finer grid for all the others. For each block we try the scale
`ratio * base` for every ratio in a short list and keep the ratio with the smallest squared error.
The search is a loop over the (about 20) candidate ratios and over chunks of blocks; every step
inside is vectorised over all blocks of the chunk, so the cost is about (number of ratios) times
one quantize-dequantize pass.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

# 1.0 comes first so that a block keeps plain absmax unless clipping strictly lowers its error.
RATIOS = np.round(np.linspace(1.0, 0.5, 21), 3).astype(np.float32)

# A quantize-dequantize callback: (blocks [n, w] float32, ratio [n] float32) -> reconstruction [n, w].
QDQ = Callable[[np.ndarray, np.ndarray], np.ndarray]


def search_clip_ratios(blocks: np.ndarray, qdq: QDQ, ratios: np.ndarray = RATIOS,
                       chunk_elems: int = 1 << 20, weights: np.ndarray | None = None) -> np.ndarray:
    """The clipping ratio per block (float32 [n]) that minimises sum((qdq(block, r) - block)^2),
    or sum(weights * (qdq(block, r) - block)^2) with `weights` [n, w] (importance, --importance).

    `qdq` receives a chunk of blocks with one ratio per block and returns their reconstruction;
    it is responsible for turning the ratio into a scale (e.g. absmax * ratio) and for clipping.
    Chunks of about `chunk_elems` values keep the temporaries small and in cache.
    """
    blocks = np.asarray(blocks, dtype=np.float32)
    n, w = blocks.shape
    best = np.ones(n, dtype=np.float32)
    if n == 0 or w == 0:
        return best
    ratios = np.asarray(ratios, dtype=np.float32)
    step = max(1, chunk_elems // w)
    for start in range(0, n, step):
        chunk = blocks[start:start + step]
        wchunk = None if weights is None else weights[start:start + step]
        best_err = np.full(chunk.shape[0], np.inf)
        best_ratio = np.ones(chunk.shape[0], dtype=np.float32)
        for r in ratios:
            diff = qdq(chunk, np.full(chunk.shape[0], r, dtype=np.float32)) - chunk
            err = (np.einsum("ij,ij->i", diff, diff, dtype=np.float64) if wchunk is None
                   else np.einsum("ij,ij,ij->i", diff, diff, wchunk, dtype=np.float64))
            better = err < best_err
            best_err[better] = err[better]
            best_ratio[better] = r
        best[start:start + step] = best_ratio
    return best


def uniform_qdq(bits: int, scheme: str) -> QDQ:
    """The quantize-dequantize callback for the uniform method (same math as uniform.py).

    symmetric: scale = ratio * absmax / qmax; asymmetric: the range [lo, hi] (which always
    contains 0) is shrunk by `ratio` about zero and the zero point recomputed.
    """
    if scheme == "symmetric":
        qmax = 2 ** (bits - 1) - 1
        qmin = -qmax
    else:
        qmin, qmax = 0, 2**bits - 1

    def qdq(blocks: np.ndarray, ratio: np.ndarray) -> np.ndarray:
        hi = np.maximum(blocks.max(axis=1), 0) * ratio
        lo = np.minimum(blocks.min(axis=1), 0) * ratio
        if scheme == "symmetric":
            scale = np.maximum(hi, -lo) / np.float32(qmax)
        else:
            scale = (hi - lo) / np.float32(qmax)
        safe = np.where(scale > 0, scale, np.float32(1))[:, None]
        zero = np.zeros_like(safe) if scheme == "symmetric" else np.clip(np.rint(-lo[:, None] / safe), 0, qmax)
        q = np.clip(np.rint(blocks / safe) + zero, qmin, qmax)
        return ((q - zero) * np.where(scale > 0, scale, np.float32(0))[:, None]).astype(np.float32)

    return qdq
