"""Learned codebooks of scalar levels: k-means (`kmeans`).

kmeans (bits 1-8, K = 2^bits levels; the seed's section 4.1)
  normalize="none" (default), codebooks by granularity:
    tensor   one codebook for the whole tensor;
    channel  one codebook per row of the [shape[0], -1] view;
    group    one codebook per run of `codebook_rows` consecutive rows (the last run may be shorter);
             a codebook is shared by codebook_rows * cols values. (The manifest records it as
             params["group_size"], its name in format 1; the option is --codebook-rows.)
  normalize="group": per-(row, group_size columns) absmax scales exactly as nf stores them, and ONE
    learned codebook per tensor over the normalised values x / scale in [-1, 1]: nf with learned
    levels. Granularity is not used in this setting.
  Arrays: codes (one per value, the index into the sorted codebook of the value's row/group),
  codebook [P, K] (P = 1, rows, or ceil(rows / codebook_rows)), and scale with normalize="group".
  The codebook dtype follows --scale-dtype; `auto` is float32 when there is one codebook and
  float16 when there are many (16 levels x 16 bits per row is already 0.67 bits per weight for a
  384-wide row). Codes are assigned against the stored (rounded) codebook.

The 1-D k-means works on sorted "atoms" (value, weight): the sorted values themselves when a
codebook sees at most 8192 values, otherwise an 8192-bin histogram that keeps the exact count and
sum of each bin (cluster means stay exact; only the decision boundaries snap to bin edges, 1/8192
of the range). In 1-D an optimal cluster is a contiguous run of sorted atoms, so the optimal
codebook is a dynamic programme over run boundaries; the 1-D k-means cost is concave-Monge, so
divide and conquer solves each of the K layers in O(A log A), vectorised over all codebooks of
the tensor (`_optimal_atoms`). This is exact, hence deterministic and better than Lloyd: on
MiniLM's 384-value rows Lloyd (even sklearn with n_init=10) ends 5-45% above the optimum.
When atoms * K * log2(atoms) exceeds DP_WORK (K >= 64 on histograms) a best-of-three Lloyd on the
atoms is used instead, each step a binary search of the K - 1 midpoints plus prefix sums.

vq, the vector version, lives in vq.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError
from ..calibration.importance import TensorImportance
from ..spec import GRANULARITIES, NORMALIZE, Spec
from .base import (NONNEGATIVE, ArrayLayout, Encoding, Method, code_layout, group_width, matrix_shape,
                   param, scale_shape, to_blocks)
from .scales import STORAGE, fits, resolve_scale_dtype, store_narrow, store_scales
from .compensate import compensate
from . import register

MAX_ATOMS = 1 << 13        # sorted values up to this many per codebook, else a histogram of this many bins
DP_WORK = 1 << 25          # atoms * K * log2(atoms) per problem up to this: exact DP, else Lloyd
MAX_ITER_1D = 300          # Lloyd steps are O(K log A), so running to convergence is cheap
CHUNK_ATOMS = 1 << 25      # atoms x K per pass over a batch of codebooks (bounds the DP back-pointers)


# ---------------------------------------------------------------------------------------------
# 1-D k-means


def _atoms(values: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Sorted atoms (value, weight) per problem row of `values` [P, N]: exact or a histogram.

    Up to MAX_ATOMS values a problem's atoms are its sorted values. Beyond, MAX_ATOMS equal bins
    over [min, max], each atom being the exact mean and count of its bin (an empty bin is its
    centre at weight 0), so cluster means stay exact and only boundaries snap to bin edges.
    """
    p, n = values.shape
    if n <= MAX_ATOMS:
        order = np.argsort(values, axis=1, kind="stable")
        v = np.take_along_axis(values, order, axis=1).astype(np.float64)
        if weights is None:
            return v, np.ones((p, n))
        return v, np.take_along_axis(weights, order, axis=1).astype(np.float64)
    bins = MAX_ATOMS
    lo = values.min(axis=1, keepdims=True)
    span = values.max(axis=1, keepdims=True).astype(np.float64) - lo
    span[span <= 0] = 1.0
    step = (bins / span).astype(np.float32)
    idx = ((values - lo) * step).astype(np.intp)
    np.minimum(idx, bins - 1, out=idx)
    if p > 1:
        idx += np.arange(p, dtype=np.intp)[:, None] * bins
    flat = idx.reshape(-1)
    count: np.ndarray
    if weights is None:
        count = np.bincount(flat, minlength=p * bins).astype(np.float64)
        total = np.bincount(flat, weights=values.reshape(-1), minlength=p * bins)
    else:
        w = weights.reshape(-1).astype(np.float64)
        count = np.bincount(flat, weights=w, minlength=p * bins)
        total = np.bincount(flat, weights=values.reshape(-1) * w, minlength=p * bins)
    count, total = count.reshape(p, bins), total.reshape(p, bins)
    centre = lo.astype(np.float64) + (np.arange(bins) + 0.5) * (span / bins)
    v = np.where(count > 0, total / np.where(count > 0, count, 1), centre)
    return v, count


def _row_keys(v: np.ndarray, lo: np.ndarray | float, span: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Order-preserving float64 keys that put problem r's values in [4r + 0.5, 4r + 3.5].

    One np.searchsorted over the flattened keys then answers a search per problem at once.
    """
    return rows * 4.0 + 2.0 + np.clip((v - lo) / span, -1.5, 1.5)


def _inits(v: np.ndarray, w: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Three sorted starts per problem, [P, 3, K]: weighted quantiles, even spacing, random quantiles."""
    p = v.shape[0]
    cdf = np.cumsum(w, axis=1)
    total = np.maximum(cdf[:, -1:], 1e-300)
    rng = np.random.default_rng(seed)
    probs = np.stack([np.broadcast_to((np.arange(k) + 0.5) / k, (p, k)),
                      np.sort(rng.random((p, k)), axis=1)], axis=1)  # [P, 2, K]
    targets = probs * total[:, :, None]
    rows = np.arange(p)[:, None]
    lo, hi = v[:, :1], v[:, -1:]
    keys = _row_keys(cdf, 0.0, total, rows).reshape(-1)
    tkeys = _row_keys(targets.reshape(p, -1), 0.0, total, rows)
    pos = np.searchsorted(keys, tkeys.reshape(-1), side="left").reshape(p, -1) - rows * v.shape[1]
    pos = np.clip(pos, 0, v.shape[1] - 1)
    quant = np.take_along_axis(v, pos, axis=1).reshape(p, 2, k)
    even = lo + (np.arange(k) + 0.5) / k * (hi - lo)
    return np.sort(np.stack([quant[:, 0], even, quant[:, 1]], axis=1), axis=2)


def _lloyd_atoms(v: np.ndarray, w: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Best-of-three Lloyd on sorted atoms; returns sorted centroids [P, K] (float64)."""
    p, a = v.shape
    lo, hi = v[:, :1], v[:, -1:]
    span = np.where(hi > lo, hi - lo, 1.0)
    rows = np.arange(p)[:, None]
    keys = _row_keys(v, lo, span, rows).reshape(-1)
    zero = np.zeros((p, 1))
    cw = np.concatenate([zero, np.cumsum(w, axis=1)], axis=1)
    cs = np.concatenate([zero, np.cumsum(v * w, axis=1)], axis=1)
    c = _inits(v, w, k, seed)  # [P, I, K]
    starts = c.shape[1]
    rows3 = np.arange(p)[:, None, None]
    ends = np.broadcast_to(np.array([0, a]), (p, starts, 2))
    prev = None
    for _ in range(MAX_ITER_1D):
        mids = (c[:, :, 1:] + c[:, :, :-1]) / 2
        mkeys = _row_keys(mids, lo[:, :, None], span[:, :, None], rows3)
        pos = np.searchsorted(keys, mkeys.reshape(-1), side="right").reshape(mids.shape) - rows3 * a
        bounds = np.concatenate([ends[:, :, :1], pos, ends[:, :, 1:]], axis=2).reshape(p, -1)
        cnt = np.diff(np.take_along_axis(cw, bounds, axis=1).reshape(p, starts, k + 1), axis=2)
        tot = np.diff(np.take_along_axis(cs, bounds, axis=1).reshape(p, starts, k + 1), axis=2)
        c = np.sort(np.where(cnt > 0, tot / np.where(cnt > 0, cnt, 1), c), axis=2)
        if prev is not None and np.array_equal(pos, prev):
            break
        prev = pos
    # sum of squared errors = sum w v^2 - sum_j S_j^2 / N_j: keep the start with the largest second term
    gain = np.where(cnt > 0, tot * tot / np.where(cnt > 0, cnt, 1), 0).sum(axis=2)
    best = np.argmax(gain, axis=1)
    return c[np.arange(p), best]


def _optimal_atoms(v: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    """The optimal 1-D clustering of sorted atoms by dynamic programming; sorted centroids [P, K].

    best[j, i] = least squared error of the first i atoms in j + 1 clusters
               = min over t <= i of best[j - 1, t] + cost(atoms t .. i-1),
    cost from prefix sums of w, w u, w u^2 (u = value minus the problem's mean, against
    cancellation). The 1-D k-means cost is concave-Monge, so the best t is non-decreasing in i and
    each layer is solved by divide and conquer: the middle i of a range is searched over its
    allowed t range only, which halves the ranges of its two children. All nodes of one recursion
    depth, over all problems, are evaluated in one vectorised pass (ragged ranges flattened with
    np.repeat, argmins by np.minimum.reduceat): O(K A log A) work per problem.
    """
    p, a = v.shape
    n1 = a + 1
    centre = (v * w).sum(axis=1, keepdims=True) / np.maximum(w.sum(axis=1, keepdims=True), 1e-300)
    u = v - centre
    zero = np.zeros((p, 1))
    cw = np.concatenate([zero, np.cumsum(w, axis=1)], axis=1)
    cs = np.concatenate([zero, np.cumsum(u * w, axis=1)], axis=1)
    cq = np.concatenate([zero, np.cumsum(u * u * w, axis=1)], axis=1)
    cwf, csf, cqf = cw.reshape(-1), cs.reshape(-1), cq.reshape(-1)

    def cost(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:  # flat indices of the run's two ends
        ww = cwf[hi] - cwf[lo]
        ss = csf[hi] - csf[lo]
        c = cqf[hi] - cqf[lo] - np.where(ww > 0, ss * ss / np.where(ww > 0, ww, 1), 0)
        return np.maximum(c, 0)

    base = (np.arange(p) * n1)[:, None]
    best = cost(np.broadcast_to(base, (p, n1)), base + np.arange(n1)).reshape(-1)
    back = np.zeros((k, p, n1), dtype=np.int32)
    for j in range(1, k):
        new = np.empty(p * n1)
        node = np.arange(p)
        ilo, ihi = np.zeros(p, np.int64), np.full(p, a, np.int64)
        tlo, thi = np.zeros(p, np.int64), np.full(p, a, np.int64)
        while node.size:
            mid = (ilo + ihi) // 2
            span = np.minimum(thi, mid) - tlo + 1
            offs = np.cumsum(span) - span
            nid = np.repeat(np.arange(node.size), span)
            t = tlo[nid] + np.arange(nid.size) - offs[nid]
            b = node[nid] * n1
            val = best[b + t] + cost(b + t, b + mid[nid])
            low = np.minimum.reduceat(val, offs)
            arg = np.minimum.reduceat(np.where(val <= low[nid], t, n1), offs)
            new[node * n1 + mid] = low
            back[j, node, mid] = arg
            left, right = mid > ilo, mid < ihi
            node = np.concatenate([node[left], node[right]])
            ilo, ihi = np.concatenate([ilo[left], mid[right] + 1]), np.concatenate([mid[left] - 1, ihi[right]])
            tlo, thi = np.concatenate([tlo[left], arg[right]]), np.concatenate([arg[left], thi[right]])
        best = new
    ends = np.full(p, a, dtype=np.int64)
    bounds = np.zeros((p, k + 1), dtype=np.int64)
    bounds[:, k] = a
    for j in range(k - 1, 0, -1):
        ends = back[j][np.arange(p), ends].astype(np.int64)
        bounds[:, j] = ends
    rows = np.arange(p)[:, None]
    cnt = cw[rows, bounds[:, 1:]] - cw[rows, bounds[:, :-1]]
    tot = cs[rows, bounds[:, 1:]] - cs[rows, bounds[:, :-1]]
    # an empty cluster (fewer distinct values than K) repeats the value at its boundary
    edge = v[rows, np.minimum(bounds[:, :-1], a - 1)]
    return np.where(cnt > 0, tot / np.where(cnt > 0, cnt, 1) + centre, edge)


def kmeans_1d(values: np.ndarray, k: int, seed: int = 0, weights: np.ndarray | None = None) -> np.ndarray:
    """Sorted 1-D k-means codebooks [P, k] (float64) for each row of `values` [P, N].

    Example: the seed's 12 values with k = 4 give [-1.6, -0.1, 1.025, 2.5], the optimal clustering.
    `weights` (same shape, >= 0) lets callers pad ragged problems with weight-0 entries.
    """
    values = np.asarray(values, dtype=np.float32)
    if values.ndim == 1:
        values = values[None, :]
    p, n = values.shape
    out = np.zeros((p, k))
    if n == 0:
        return out
    step = max(1, CHUNK_ATOMS // (min(n, MAX_ATOMS) * k))
    for start in range(0, p, step):
        sl = slice(start, start + step)
        v, w = _atoms(values[sl], None if weights is None else weights[sl])
        if v.shape[1] * k * max(1, int(np.log2(v.shape[1] + 1))) <= DP_WORK:
            out[sl] = np.sort(_optimal_atoms(v, w, k), axis=1)
        else:
            out[sl] = _lloyd_atoms(v, w, k, seed + start)
    return out


def assign_sorted(values: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """Index of the nearest entry of each row's sorted codebook: values [P, N], codebooks [P, K].

    A binary search on the midpoints (ties go to the lower level), all rows in one np.searchsorted.
    """
    p, n = values.shape
    k = codebooks.shape[1]
    dtype = np.uint8 if k <= 256 else np.uint16
    mids = (codebooks[:, 1:].astype(np.float64) + codebooks[:, :-1]) / 2
    if p == 1:  # float32 midpoints: no float64 copy of the values
        m32 = (codebooks[0, 1:].astype(np.float32) + codebooks[0, :-1].astype(np.float32)) / np.float32(2)
        return np.searchsorted(m32, values[0].astype(np.float32), side="left").astype(dtype)[None, :]
    lo = codebooks[:, :1].astype(np.float64)
    span = codebooks[:, -1:] - lo
    span[span <= 0] = 1.0
    rows = np.arange(p)[:, None]
    mkeys = _row_keys(mids, lo, span, rows).reshape(-1)
    out = np.empty((p, n), dtype=dtype)
    step = max(1, (1 << 22) // max(n, 1))
    for start in range(0, p, step):
        sl = slice(start, start + step)
        vkeys = _row_keys(values[sl].astype(np.float64), lo[sl], span[sl], rows[sl])
        pos = np.searchsorted(mkeys, vkeys.reshape(-1), side="left").reshape(vkeys.shape)
        out[sl] = (pos - rows[sl] * (k - 1)).astype(dtype)
    return out


def spread_scales(scale: np.ndarray, rows: int, cols: int, group_size: int) -> np.ndarray:
    """Per-(row, group) scales [rows, groups] as float32 [rows, cols], each value's own scale: one
    gather of the tensor's size (a group wider than the row is the row, so nothing more)."""
    s = np.asarray(scale).astype(np.float32).reshape(rows, -1)
    return s[:, np.arange(cols) // group_width(group_size, cols)]


def codebook_dtype(requested: str, many: bool) -> str:
    """The codebook dtype before any fallback: `auto` = float16 for many codebooks, else float32."""
    return requested if requested != "auto" else ("float16" if many else "float32")


def store_codebook(codebook: np.ndarray, requested: str, many: bool) -> tuple[np.ndarray, str]:
    """Round a codebook for storage: (stored array, dtype name). `auto` = float16 if `many` else float32;
    the narrow dtype falls back to float32 by the rule of scales.py (overflow, or a level that would
    be subnormal there: weights of order 1e-5 would lose their precision in float16)."""
    return store_narrow(codebook, codebook_dtype(requested, many))


def kmeans_quantize(x: np.ndarray, bits: int, granularity: str = "tensor", group_size: int = 128,
                    normalize: str = "none", scale_dtype: str = "auto", seed: int = 0,
                    weights: np.ndarray | None = None):
    """The math alone: (codes [P, N] with the values of each codebook, arrays, params extras, recon).

    Returns (codes in the tensor's flat order, {"codebook": ..., ["scale": ...]}, params, recon).
    `weights` (>= 0, x's [rows, cols] view; --importance) weight each value's squared error in
    the k-means objective (with normalize group, times its scale squared: the error in x).
    """
    x = np.asarray(x, dtype=np.float32)
    shape = tuple(x.shape)
    rows, cols = matrix_shape(shape)
    m = x.reshape(rows, cols)
    k = 2**bits
    params: dict[str, Any] = {"bits": bits, "normalize": normalize}
    arrays: dict[str, np.ndarray] = {}
    if normalize == "group" and x.size == 0:
        stored, used = store_scales(np.zeros(scale_shape(shape, "group", group_size), np.float32), scale_dtype, "group")
        cb, cb_name = store_codebook(np.zeros((1, k)), scale_dtype, many=False)
        params.update(group_size=group_size, scale_dtype=used, codebook_dtype=cb_name)
        return np.zeros(0, np.uint8), {"codebook": cb, "scale": stored}, params, x.copy()
    if normalize == "group":
        blocks = to_blocks(x, "group", group_size)
        absmax = np.abs(blocks).max(axis=1) if blocks.shape[1] else np.zeros(blocks.shape[0], np.float32)
        stored, used = store_scales(absmax.astype(np.float32), scale_dtype, "group")
        s_full = spread_scales(stored, rows, cols, group_size)
        y = m / np.where(s_full > 0, s_full, np.float32(1))
        wy = None if weights is None else (weights * s_full.astype(np.float64) ** 2).reshape(1, -1)
        cb, cb_name = store_codebook(kmeans_1d(y.reshape(1, -1), k, seed, wy), scale_dtype, many=False)
        cbf = cb.astype(np.float32)
        codes = assign_sorted(y.reshape(1, -1), cbf)
        recon = (cbf[0][codes[0]].reshape(rows, cols) * s_full).reshape(shape)
        arrays.update(codebook=cb, scale=stored.reshape(scale_shape(shape, "group", group_size)))
        params.update(group_size=group_size, scale_dtype=used, codebook_dtype=cb_name)
        return codes.reshape(-1), arrays, params, recon.astype(np.float32)
    params["granularity"] = granularity
    if granularity == "group":
        params["group_size"] = group_size
    if x.size == 0:  # nothing to learn: zero codebooks of the declared shape
        count = {"tensor": 1, "channel": rows}.get(granularity, -(-rows // group_size))
        cb, cb_name = store_codebook(np.zeros((count, k)), scale_dtype, many=False)
        params["codebook_dtype"] = cb_name
        return np.zeros(0, np.uint8), {"codebook": cb}, params, x.copy()
    if granularity == "tensor":
        problems = m.reshape(1, -1)
        weights = None if weights is None else weights.reshape(1, -1)
    elif granularity == "channel":
        problems = m
    else:
        groups = -(-rows // group_size)
        padded_rows = groups * group_size
        if padded_rows != rows:
            # the last run of rows is shorter: pad with its own last value at weight 0
            pad = np.repeat(m[-1:], padded_rows - rows, axis=0)
            m_pad = np.concatenate([m, pad], axis=0)
            w_pad = np.zeros((padded_rows, cols))
            w_pad[:rows] = 1 if weights is None else weights
            weights = w_pad.reshape(groups, -1)
        else:
            m_pad = m
            weights = None if weights is None else weights.reshape(groups, -1)
        problems = m_pad.reshape(groups, -1)
    cb, cb_name = store_codebook(kmeans_1d(problems, k, seed, weights), scale_dtype,
                                 many=granularity != "tensor")
    cbf = cb.astype(np.float32)
    codes = assign_sorted(problems, cbf)
    recon = np.take_along_axis(cbf, codes.astype(np.int64), axis=1).reshape(-1)[: rows * cols]
    arrays["codebook"] = cb
    params["codebook_dtype"] = cb_name
    return codes.reshape(-1)[: rows * cols], arrays, params, recon.reshape(shape)


@register
class KMeans(Method):
    name = "kmeans"
    options = frozenset({"bits", "granularity", "codebook_rows", "group_size", "scale_dtype", "normalize", "seed"})
    value_rules = {"scale": NONNEGATIVE}  # normalize group: absmax scales
    weighs_importance = True

    def planner_candidates(self, level: str) -> list[Spec]:
        """normalize=group 2-4 bits at g64/g128 (one learned codebook over group-absmax normalised
        values): the best measured 2-4 bit fixed-rate setting, but several times the measuring
        time of all other candidates together, so only at level "all"."""
        if level != "all":
            return []
        return [Spec(method=self.name, bits=bits, normalize="group", group_size=g)
                for bits in range(2, 5) for g in (64, 128)]

    def candidate_family(self, spec: Spec) -> str:
        if spec.normalize == "group":
            return f"{self.name} g{spec.group_size}"
        return super().candidate_family(spec)

    def check_spec(self, spec: Spec) -> None:
        if not 1 <= spec.bits <= 8:
            raise ConfigError(f"kmeans quantization takes --bits 1 to 8, got {spec.bits}")

    def check_writable(self, shape: tuple[int, ...], spec: Spec) -> None:
        """Codebooks per row (or row group) may not hold many more levels than the tensor has
        values: on a 1-D tensor (one value a row) they would be 2^bits levels per value, an archive
        and a peak memory many times the tensor's. Refused (beyond 4 levels a value and 65536
        levels in all), naming the settings that fit."""
        super().check_writable(shape, spec)
        if spec.normalize == "group" or spec.granularity == "tensor":
            return
        rows, cols = matrix_shape(shape)
        books = rows if spec.granularity == "channel" else -(-rows // spec.codebook_rows)
        if books * (1 << spec.bits) > max(4 * rows * cols, 1 << 16):  # small tensors: any overhead is small
            raise ConfigError(f"kmeans --granularity {spec.granularity} would store {books} codebooks of "
                              f"{1 << spec.bits} levels for {rows * cols} values; use --granularity tensor, "
                              "--normalize group, or fewer --bits")

    def reads(self, spec: Spec) -> frozenset[str]:
        """normalize=group: per-(row, group_size values) scales, one codebook (no granularity);
        otherwise codebooks per tensor, row or run of codebook_rows rows (no group_size)."""
        if spec.normalize == "group":
            return self.options - {"granularity", "codebook_rows"}
        return self.options - {"group_size"} - (set() if spec.granularity == "group" else {"codebook_rows"})

    def params_for(self, shape: tuple[int, ...], spec: Spec, x: np.ndarray | None = None) -> dict[str, Any]:
        if spec.normalize == "group":
            params = {"bits": spec.bits, "normalize": "group", "group_size": spec.group_size,
                      "scale_dtype": resolve_scale_dtype(spec.scale_dtype, "group"),
                      "codebook_dtype": codebook_dtype(spec.scale_dtype, many=False)}
        else:
            params = {"bits": spec.bits, "normalize": "none", "granularity": spec.granularity}
            if spec.granularity == "group":
                params["group_size"] = spec.codebook_rows  # the manifest's name since format 1: rows
            params["codebook_dtype"] = codebook_dtype(spec.scale_dtype, many=spec.granularity != "tensor")
        if x is None or not np.size(x):
            return params
        if params["codebook_dtype"] != "float32":  # whether the learned levels fit: learn them
            return self._encode(x, spec)[0].params
        if params.get("scale_dtype", "float32") != "float32":
            blocks = to_blocks(np.asarray(x, dtype=np.float32), "group", spec.group_size)
            absmax = np.abs(blocks).max(axis=1) if blocks.shape[1] else np.zeros(blocks.shape[0], np.float32)
            if not fits(absmax.astype(np.float32), str(params["scale_dtype"]), rounding="up"):
                params["scale_dtype"] = "float32"
        return params

    def _encode(self, x: np.ndarray, spec: Spec, weights: np.ndarray | None = None
                ) -> tuple[Encoding, np.ndarray | None]:
        group = spec.group_size if spec.normalize == "group" else spec.codebook_rows
        codes, arrays, params, recon = kmeans_quantize(
            x, spec.bits, spec.granularity, group, spec.normalize, spec.scale_dtype, spec.seed, weights)
        arrays = {"codes": codes.reshape(np.shape(x)), **arrays}
        return Encoding(self.name, params, arrays), recon

    def _encode_importance(self, x: np.ndarray, spec: Spec, imp: TensorImportance) -> Encoding:
        """Levels learned for the weighted error; with normalize group and a Gram, the codebook so
        learned stays and the rounding is compensated column by column (compensate.py), each
        group's scale taken when the group starts."""
        enc = self._encode(x, spec, imp.element_weights(tuple(np.shape(x))))[0]
        if imp.gram is None or spec.normalize != "group" or not np.size(x):
            return enc
        grid = _LevelGrid(enc.arrays["codebook"].astype(np.float32)[0], enc.params["scale_dtype"], np.shape(x))
        compensate(x, imp.gram, grid, spec.group_size)
        if grid.used != {enc.params["scale_dtype"]}:  # a compensated group outgrew the narrow dtype
            return self._encode_importance(x, spec.with_options(scale_dtype="float32"), imp)
        return Encoding(self.name, enc.params, {**enc.arrays, "codes": grid.codes,
                                                "scale": np.stack(grid.scales, axis=1)})

    def layout(self, shape: tuple[int, ...], params: dict[str, Any]) -> dict[str, ArrayLayout]:
        bits = param(params, "bits", int, lo=1, hi=8)
        normalize = param(params, "normalize", str, choices=NORMALIZE)
        cb_dtype = param(params, "codebook_dtype", str, choices=tuple(STORAGE))
        rows, _ = matrix_shape(shape)
        out = {"codes": code_layout(shape, bits)}
        if normalize == "group":
            group_size = param(params, "group_size", int, lo=1)
            scale_dtype = param(params, "scale_dtype", str, choices=tuple(STORAGE))
            out["codebook"] = ArrayLayout(STORAGE[cb_dtype], (1, 2**bits))
            out["scale"] = ArrayLayout(STORAGE[scale_dtype], scale_shape(shape, "group", group_size))
            return out
        granularity = param(params, "granularity", str, choices=GRANULARITIES)
        if granularity == "tensor":
            p = 1
        elif granularity == "channel":
            p = rows
        else:
            p = -(-rows // param(params, "group_size", int, lo=1))
        out["codebook"] = ArrayLayout(STORAGE[cb_dtype], (p, 2**bits))
        return out

    def decode(self, enc: Encoding, shape: tuple[int, ...]) -> np.ndarray:
        """Gathers from the codebooks: temporaries are the tensor's size (codes as indices, the
        values), never a size taken from params alone (a group wider than the row is the row)."""
        p = enc.params
        rows, cols = matrix_shape(shape)
        cb = enc.arrays["codebook"].astype(np.float32)
        if rows * cols == 0:
            return np.zeros(shape, np.float32)
        codes = enc.arrays["codes"].reshape(rows, cols)
        if p["normalize"] == "group":
            s_full = spread_scales(enc.arrays["scale"], rows, cols, p["group_size"])
            return (cb[0][codes] * s_full).reshape(shape)
        if p["granularity"] == "tensor":
            return cb[0][codes].reshape(shape)
        per = 1 if p["granularity"] == "channel" else p["group_size"]  # rows per codebook
        first = (np.arange(rows, dtype=np.int64) // per * cb.shape[1])[:, None]  # each row's codebook
        return cb.reshape(-1)[codes + first].reshape(shape)

    def describe(self, params: dict[str, Any]) -> str:
        if params.get("normalize") == "group":
            return f"kmeans{params['bits']} norm g{params.get('group_size')}"
        g = params.get("granularity")
        where = {"tensor": "tensor", "channel": "channel"}.get(str(g), f"rows{params.get('group_size')}")
        return f"kmeans{params['bits']} {where}"


# ---------------------------------------------------------------------------------------------
# vector VQ


class _LevelGrid:
    """compensate.ColumnGrid of kmeans normalize=group: a fixed sorted codebook, per-(row, group)
    absmax scales taken from the compensated values when the group starts."""

    def __init__(self, levels: np.ndarray, scale_dtype: str, shape: tuple[int, ...]):
        self.levels = levels
        self.scale_dtype = scale_dtype
        self.codes = np.zeros(shape, np.uint8 if levels.size <= 256 else np.uint16)
        self.scales: list[np.ndarray] = []
        self.used: set[str] = set()
        self.scale = self.safe = np.ones(0)

    def fit(self, columns: np.ndarray, start: int) -> None:
        absmax = np.abs(columns).max(axis=1).astype(np.float32)
        stored, used = store_scales(absmax, self.scale_dtype, "group")
        self.scales.append(stored)
        self.used.add(used)
        self.scale = stored.astype(np.float32).astype(np.float64)
        self.safe = np.where(self.scale > 0, self.scale, 1.0)

    def snap(self, column: np.ndarray, j: int) -> np.ndarray:
        k = assign_sorted((column / self.safe)[None, :].astype(np.float32), self.levels[None, :])[0]
        self.codes[:, j] = k
        return self.levels[k].astype(np.float64) * self.scale
