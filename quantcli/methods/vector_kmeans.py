"""The one vector k-means trainer behind `vq` and `pq`.

pq trains one codebook per subspace of a `[n, M, s]` cube; vq is the same problem with M = 1 (its
sub-vectors are the rows of a one-subspace cube), so both call `train_subspaces` and get the same
sampling, initialisation, stopping rule and seeding.

Per subspace:
  sample   k-means trains on at most max(256 K, 16384) rows drawn without replacement (seeded,
           shared by all subspaces; 256 per centroid is FAISS's default cap): the centroids are
           means whose noise falls like 1/sqrt(rows per centroid), so more rows buy little for a
           linear cost. The floor is the old vq's: at K = 16 on 2-D Gaussians, 4096 rows ended
           1-4% above 16384 in error. All n rows are then assigned to the trained centroids.
  exact    when every row takes part and n <= K, the codebook is the distinct sub-vectors
           (exact reconstruction); unused slots repeat the first one and are never chosen.
  init     greedy k-means++: each new centroid is the best (lowest total potential) of
           2 + ln K D^2-sampled candidates, which avoids the occasional bad pick of plain k-means++.
  Lloyd    at most `iters` mean updates; stop once at most LLOYD_TOL of the assignments changed
           and no cluster is empty that a row could fill (the last steps move almost nothing: on a 1536x384 MiniLM
           matrix at K = 256, 8.0 s -> 2.4 s for 0.002 dB). An empty cluster takes the row that is
           farthest from its centroid (the r-th empty cluster of a subspace the r-th farthest).
  assign   |x|^2 - 2 x.c + |c|^2 with one batched BLAS product per chunk of rows, so no distance
           block holds more than `chunk` entries.

Subspaces are trained in groups (arrays [g, rows, s]) so one numpy call serves g subspaces and
small tensors with many subspaces do not pay Python overhead per subspace. Every random draw comes
from numpy Generators seeded by (seed, first subspace of the group): deterministic for a seed.
"""

from __future__ import annotations

import math

import numpy as np

ROWS_PER_CENTROID = 256    # training sample cap, per centroid
MIN_TRAIN_ROWS = 1 << 14   # ... but never fewer rows than this (cheap, and small K still gains)
CHUNK_ENTRIES = 1 << 22    # distance-matrix entries per chunk (16 MB of float32)
LLOYD_TOL = 1e-3           # stop when at most this fraction of assignments changed in an iteration
_SAMPLE_STREAM = 0x5A3F    # second seed word of the row sample (the group streams use the subspace index)


def train_count(n: int, k: int) -> int:
    """How many of n rows k-means trains on: min(n, max(256 K, 16384))."""
    return int(min(n, max(ROWS_PER_CENTROID * k, MIN_TRAIN_ROWS)))


def train_rows(n: int, k: int, seed: int) -> np.ndarray | None:
    """Sorted indices of the rows k-means trains on, or None when all n rows do."""
    cap = train_count(n, k)
    if n <= cap:
        return None
    return np.sort(np.random.default_rng([int(seed), _SAMPLE_STREAM]).choice(n, size=cap, replace=False))


def group_size(rows: int, k: int, m_sub: int, chunk: int = CHUNK_ENTRIES) -> int:
    """Subspaces per group so that one [g, rows, K] distance block stays near `chunk` entries."""
    return int(max(1, min(m_sub, chunk // max(rows * k, 1))))


def assign(x: np.ndarray, c: np.ndarray, xx: np.ndarray | None = None,
           chunk: int = CHUNK_ENTRIES, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(nearest centroid [g, n] int64, squared distance [g, n] float32) per row of each subspace.

    x [g, n, s], c [g, K, s], xx = |x|^2 [g, n] (computed when not given). Rows go in chunks of
    max(1, chunk // (g K)) so the [g, rows, K] block never exceeds `chunk` entries (or one row).
    With weights w (x's shape, >= 0) the distance is sum_s w (x - c)^2 (xx then = sum w x^2).
    """
    g, n, _ = x.shape
    k = c.shape[1]
    if xx is None:
        xx = np.einsum("gns,gns->gn", x, x) if w is None else np.einsum("gns,gns,gns->gn", x, x, w)
    cc = np.einsum("gks,gks->gk", c, c)
    ct2 = np.ascontiguousarray((-2.0 * c).transpose(0, 2, 1), dtype=np.float32)
    c2t = np.ascontiguousarray((c * c).transpose(0, 2, 1), dtype=np.float32)
    labels = np.empty((g, n), dtype=np.int64)
    dist = np.empty((g, n), dtype=np.float32)
    step = max(1, chunk // max(g * k, 1))
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        if w is None:
            dd = np.matmul(x[:, lo:hi], ct2)
            dd += cc[:, None, :]
        else:
            dd = np.matmul((x[:, lo:hi] * w[:, lo:hi]).astype(np.float32), ct2)
            dd += np.matmul(w[:, lo:hi].astype(np.float32), c2t)
        lab = np.argmin(dd, axis=2)
        labels[:, lo:hi] = lab
        best = np.take_along_axis(dd, lab[:, :, None], axis=2)[:, :, 0]
        dist[:, lo:hi] = np.maximum(best + xx[:, lo:hi], 0.0)
    return labels, dist


def nearest(points: np.ndarray, centroids: np.ndarray, chunk: int = CHUNK_ENTRIES) -> tuple[np.ndarray, np.ndarray]:
    """`assign` for one subspace: points [n, d], centroids [K, d] -> (index [n], squared distance [n])."""
    x = np.ascontiguousarray(points, dtype=np.float32)[None]
    labels, dist = assign(x, np.asarray(centroids, dtype=np.float32)[None], chunk=chunk)
    return labels[0], dist[0]


def kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator, w: np.ndarray | None = None) -> np.ndarray:
    """Greedy k-means++ start [g, K, s] for every subspace of the group.

    Distances to the candidates are direct float32 differences over the s coordinates of a
    [g, s, n] copy (contiguous along rows): for the small s of vq and pq this is ~15x faster than
    the |x|^2 - 2 x.c + |c|^2 expansion through a BLAS product with an inner dimension of s, and
    exact up to rounding. When every row already sits on a centroid (fewer distinct rows than K)
    the potential is zero; the draw then repeats an existing row, a duplicate that is never chosen.
    Weights w (x's shape) weight each coordinate's squared difference.
    """
    g, n, s = x.shape
    trials = 2 + int(math.log(k))
    gi = np.arange(g)
    xt = np.ascontiguousarray(x.transpose(0, 2, 1))  # [g, s, n]
    wt = None if w is None else np.ascontiguousarray(w.transpose(0, 2, 1), dtype=np.float32)
    c = np.empty((g, k, s), dtype=np.float32)
    c[:, 0] = x[gi, rng.integers(n, size=g)]
    d2 = ((xt - c[:, 0, :, None]) ** 2 if wt is None else (xt - c[:, 0, :, None]) ** 2 * wt).sum(axis=1)  # [g, n]
    acc = np.empty((g, trials, n), dtype=np.float32)
    for j in range(1, k):
        # one cumulative sum over the whole group: subspace i owns the range [i*n, (i+1)*n)
        cum = np.cumsum(d2.reshape(-1), dtype=np.float64)
        ends = cum[n - 1::n]
        starts = ends - d2.sum(axis=1, dtype=np.float64)
        draw = starts[:, None] + rng.random((g, trials)) * (ends - starts)[:, None]
        cand = np.clip(np.searchsorted(cum, draw, side="right") - (gi * n)[:, None], 0, n - 1)
        cx = x[gi[:, None], cand]  # [g, trials, s]
        acc.fill(0)
        for a in range(s):  # s passes over [g, trials, n]
            diff = xt[:, a, None, :] - cx[:, :, a, None]
            diff *= diff
            if wt is not None:
                diff *= wt[:, a, None, :]
            acc += diff
        np.minimum(acc, d2[:, None, :], out=acc)
        best = np.argmin(acc.sum(axis=2, dtype=np.float64), axis=1)
        c[:, j] = cx[gi, best]
        d2 = acc[gi, best]
    return c


def _reseed(x: np.ndarray, c: np.ndarray, counts: np.ndarray, dist: np.ndarray) -> None:
    """Move each empty centroid onto a badly served row: the r-th empty one of a subspace onto the
    r-th farthest row (rows already on a centroid, at distance 0, are not taken)."""
    empty = counts == 0
    rank = np.cumsum(empty, axis=1) - 1
    order = np.argsort(-dist, axis=1, kind="stable")
    far = np.take_along_axis(dist, order, axis=1)
    gs, ks = np.nonzero(empty & (rank < x.shape[1]))
    take = far[gs, rank[gs, ks]] > 0
    gs, ks = gs[take], ks[take]
    c[gs, ks] = x[gs, order[gs, rank[gs, ks]]]


def lloyd(x: np.ndarray, c: np.ndarray, iters: int, xx: np.ndarray, chunk: int = CHUNK_ENTRIES,
          w: np.ndarray | None = None) -> np.ndarray:
    """At most `iters` Lloyd updates of the group's centroids c [g, K, s] (in place, returned).
    With weights w (x's shape) each coordinate of a centroid is the weighted mean of its members'
    (kept where they all weigh 0).

    Stops once at most LLOYD_TOL of the assignments changed and no empty cluster can take a row.
    When the updates run out, a last assignment checks for empty clusters and re-seeds them (up to
    four rounds), so no centroid is left unused while some row is off every centroid.
    """
    g, n, s = x.shape
    k = c.shape[1]
    offsets = (np.arange(g) * k)[:, None]
    prev = None
    for it in range(iters + 4):
        labels, dist = assign(x, c, xx, chunk, w)
        flat = (labels + offsets).reshape(-1)
        counts = np.bincount(flat, minlength=g * k).reshape(g, k)
        filled = counts > 0
        # an empty cluster can take a row only if some row is not on a centroid yet
        fixable = bool(((~filled).any(axis=1) & (dist.max(axis=1) > 0)).any()) if n else False
        if it >= iters:  # updates used up: only repair empty clusters
            if not fixable:
                break
            _reseed(x, c, counts, dist)
            continue
        if not fixable and prev is not None and np.count_nonzero(labels != prev) <= labels.size * LLOYD_TOL:
            break
        prev = labels
        if w is None:
            sums = np.stack([np.bincount(flat, weights=x[:, :, j].reshape(-1), minlength=g * k)
                             for j in range(s)], axis=1).reshape(g, k, s)
            c[filled] = (sums[filled] / counts[filled][:, None]).astype(np.float32)
        else:
            sums = np.stack([np.bincount(flat, weights=(x[:, :, j] * w[:, :, j]).reshape(-1), minlength=g * k)
                             for j in range(s)], axis=1).reshape(g, k, s)
            mass = np.stack([np.bincount(flat, weights=w[:, :, j].reshape(-1), minlength=g * k)
                             for j in range(s)], axis=1).reshape(g, k, s)
            c[:] = np.where(mass > 0, sums / np.where(mass > 0, mass, 1), c).astype(np.float32)
        if not filled.all():
            _reseed(x, c, counts, dist)
    return c


def _exact(sub: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Codebooks of the distinct sub-vectors (n <= K rows, so a loop over the g subspaces is small)."""
    g, n, s = sub.shape
    books = np.empty((g, k, s), dtype=np.float32)
    codes = np.empty((g, n), dtype=np.int64)
    for i in range(g):
        uniq, inverse = np.unique(sub[i], axis=0, return_inverse=True)
        books[i, : len(uniq)] = uniq
        books[i, len(uniq):] = uniq[0]
        codes[i] = inverse.reshape(-1)
    return books, codes


def train_group(sub: np.ndarray, rows: np.ndarray | None, k: int, iters: int, rng: np.random.Generator,
                labels: bool = True, chunk: int = CHUNK_ENTRIES, weights: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """(codebooks [g, K, s] float32, codes [g, n] or None) for a group of subspaces `sub` [g, n, s],
    trained on the rows `rows` (None: all); `weights` (sub's shape) weight the squared errors."""
    g, n, s = sub.shape
    if n == 0:
        return np.zeros((g, k, s), np.float32), np.zeros((g, 0), np.int64)
    if rows is None and n <= k:
        return _exact(sub, k)
    x = sub if rows is None else np.ascontiguousarray(sub[:, rows])
    w = weights if rows is None or weights is None else np.ascontiguousarray(weights[:, rows])
    xx = np.einsum("gns,gns->gn", x, x) if w is None else np.einsum("gns,gns,gns->gn", x, x, w)
    books = lloyd(x, kmeans_pp(x, k, rng, w), iters, xx, chunk, w)
    if not labels:
        return books, None
    codes = assign(sub, books, xx if rows is None else None, chunk, weights)[0]
    return books, codes


def train_subspaces(cube: np.ndarray, k: int, iters: int, seed: int, labels: bool = True,
                    chunk: int = CHUNK_ENTRIES, weights: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray | None]:
    """Train one codebook per subspace of `cube` [n, M, s] (float32); `weights` (cube's shape,
    >= 0; --importance) weight each coordinate's squared error in training and assignment.

    Returns (codebooks [M, K, s] float32, codes [n, M] int64, or None with labels=False).
    Deterministic for a seed; `chunk` bounds every distance block (entries).
    """
    n, m_sub, s = cube.shape
    rows = train_rows(n, k, seed)
    books = np.empty((m_sub, k, s), dtype=np.float32)
    codes = np.empty((n, m_sub), dtype=np.int64) if labels else None
    group = group_size(n if rows is None else len(rows), k, m_sub, chunk)
    for lo in range(0, m_sub, group):
        hi = min(m_sub, lo + group)
        sub = np.ascontiguousarray(cube[:, lo:hi].transpose(1, 0, 2), dtype=np.float32)
        wsub = None if weights is None else np.ascontiguousarray(weights[:, lo:hi].transpose(1, 0, 2), np.float32)
        rng = np.random.default_rng([int(seed), lo])
        books[lo:hi], lab = train_group(sub, rows, k, iters, rng, labels, chunk, wsub)
        if labels:
            assert codes is not None and lab is not None
            codes[:, lo:hi] = lab.T
    return books, codes
