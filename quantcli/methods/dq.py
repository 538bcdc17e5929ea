"""Dependent quantization (DQ): two interleaved scalar quantizers switched by a 4-state machine.

Q0 reconstructs code k as 2k * step (even multiples), Q1 as (2k - sign(k)) * step (odd multiples
and zero). Each row starts in state 0; after coding k the state becomes NEXT[state, k & 1]; states
0 and 1 use Q0, states 2 and 3 use Q1 (the VVC / MPEG NNC machine, defined once in kernels/dq.py,
which the context model of `crans` uses too). The union of both grids is step-spaced, but each code
only chooses between levels 2 * step apart, so a code costs about one bit less than plain rounding
at the same step; the encoder buys the distortion back with a Viterbi search along each row
(docs/STUDY-ecsq.md: 0.10-0.16 bpw less at equal SQNR).

Pure functions, 2-D only (rows are independent trellises; the caller reshapes a tensor to 2-D):
  trellis          the Viterbi search: codes minimising squared error + lam * bits per row
  states           the state each code was coded in; reconstruct: float32 values of codes
  quantize_dq      a distortion-only pass, then passes re-priced by per-quantizer order-0 models

The work is done by compiled kernels (kernels/dq.py), imported when a function first needs them;
tests/oracles/dq.py holds the numpy twins they must match bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

MAX_T = float(1 << 29)  # |x / step| bound: codes and levels stay well inside int32


# ----------------------------------------------------------------------------- state machine

def states(k: np.ndarray) -> np.ndarray:
    """int8 [rows, cols]: the state each code of each row was coded in (every row starts in 0)."""
    from ..kernels import dq as kernels

    k = _as_2d(k, "k")
    out = np.empty(k.shape, np.int8)
    if k.size:
        kernels.states(np.ascontiguousarray(k), out)
    return out


def levels(k: np.ndarray) -> np.ndarray:
    """Integer reconstruction levels (units of step), int64: 2k under Q0, 2k - sign(k) under Q1."""
    from ..kernels import dq as kernels

    k = _as_2d(k, "k")
    out = np.empty(k.shape, np.int64)
    if k.size:
        kernels.levels(np.ascontiguousarray(k), out)
    return out


def shrink_sums(x: np.ndarray, lv: np.ndarray, step: float) -> np.ndarray:
    """float64 [4]: sum of sign(L) (L - x/step) over |L| = 1 and over |L| >= 2, then the two
    counts: what the least-squares reconstruction offsets of ecsq need, in one pass."""
    from ..kernels import dq as kernels

    x, lv = np.ascontiguousarray(x), np.ascontiguousarray(lv, np.int64)
    sums = np.zeros(4)
    if lv.size:
        kernels.shrink_sums(x, lv, float(step), sums)
    return sums


def shrunk(lv: np.ndarray, step: float, shrink: tuple[int, int]) -> np.ndarray:
    """float32 values of integer levels with offsets toward zero: float32(L - sign(L) d / 256) *
    float32(step), d = shrink[0] where |L| = 1, shrink[1] where |L| >= 2 (L exact in float64)."""
    from ..kernels import dq as kernels

    lv = np.ascontiguousarray(lv, np.int64)
    out = np.empty(lv.shape, np.float32)
    if lv.size:
        kernels.shrunk(lv, float(shrink[0]), float(shrink[1]), np.float32(step), out)
    return out


def code_shrink_sums(x: np.ndarray, k: np.ndarray, step: float, offset: int = 0) -> np.ndarray:
    """shrink_sums(x, levels(k + offset), step) of 2-D x and codes k, without the int64 levels."""
    from ..kernels import dq as kernels

    k = np.ascontiguousarray(_as_2d(k, "k"))
    sums = np.zeros(4)
    if k.size:
        kernels.code_shrink_sums(np.ascontiguousarray(x, np.float32).reshape(k.shape), k, int(offset),
                                 float(step), sums)
    return sums


def code_shrunk(k: np.ndarray, step: float, shrink: tuple[int, int] = (0, 0), offset: int = 0,
                out: np.ndarray | None = None) -> np.ndarray:
    """shrunk(levels(k + offset), step, shrink) of 2-D codes k, without the int64 levels (into
    `out`, float32 of k's shape, when given); shrink (0, 0) is reconstruct(k + offset, step)."""
    from ..kernels import dq as kernels

    k = np.ascontiguousarray(_as_2d(k, "k"))
    out = np.empty(k.shape, np.float32) if out is None else out
    if k.size:
        kernels.code_shrunk(k, int(offset), float(shrink[0]), float(shrink[1]), np.float32(step), out)
    return out


def reconstruct(k: np.ndarray, step: float) -> np.ndarray:
    """float32 values of codes k: one float32 product level * step, the same in encode and decode
    (as ecsq.reconstruct), so the error measured while encoding is the archive's error."""
    return levels(k).astype(np.float32) * np.float32(step)


# ----------------------------------------------------------------------------- trellis

def trellis(x: np.ndarray, step: float, lam: float,
            prices: tuple[np.ndarray, np.ndarray] | None = None, *, offset: int = 0,
            escape: float | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """int32 codes k [rows, cols] minimising, along each row of 2-D x, sum (x/step - level)^2 +
    (lam / step^2) * bits (the squared error + lam * bits of the brief, divided by step^2).

    Candidates per quantizer at each value: zero and the two levels of that quantizer around
    t = x/step (Q0: 2 floor(t/2) and the next even level; Q1: the odd levels 2m+1 <= t < 2m+3).
    Without prices these hold the optimum (the nearest level of each parity); with prices a level
    nearer zero than both could be cheaper in bits and is not searched, as in ecsq_core.

    prices = (bits under Q0, bits under Q1): code k costs prices[q][k - offset], and `escape`
    (default: 1 + the largest price) outside the tables. None: pure distortion.

    Ties (deterministic): among candidates for one (state, parity) the first of
    (zero, lower, upper) wins; into a state, the predecessor with the lower state number wins;
    at the row end, the lowest-numbered state. A lower cost must be strictly lower to win.

    out: a C-contiguous int32 array of x's shape to write the codes into (the codes of the pass
    the prices came from, which the pass reads no more: one tensor-sized array fewer)."""
    from ..kernels import dq as kernels

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
    if out is None:
        out = np.empty(x.shape, np.int32)
    elif out.dtype != np.int32 or out.shape != x.shape or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous int32 of shape {x.shape}")
    if x.size == 0:
        return out
    priced = prices is not None
    if priced:  # the kernel reads one entry of each table at least; [esc] prices like no table
        p0, p1 = (p if p.size else np.full(1, esc) for p in (p0, p1))
    kernels.viterbi(np.ascontiguousarray(x), step, lam_s, p0, p1, int(offset), esc, priced, out)
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


# ----------------------------------------------------------------------------- rate-distortion passes

def order0_prices(k: np.ndarray, alpha: float = 0.5) -> tuple[tuple[np.ndarray, np.ndarray], int]:
    """((bits under Q0, bits under Q1), offset): -log2 of each quantizer's smoothed code
    frequencies (count + alpha over the code range of k), the model a re-pricing pass uses.
    Counted by a kernel in one pass over k: no state or key array as large as k."""
    from ..kernels import dq as kernels

    k = np.ascontiguousarray(_as_2d(k, "k"))
    lo = int(k.min())
    size = int(k.max()) - lo + 1
    counts = np.zeros((2, size), np.int64)
    kernels.order0_counts(k, lo, counts)
    p = (counts + alpha) / (counts.sum(1, keepdims=True) + alpha * size)
    bits = -np.log2(p)
    return (bits[0], bits[1]), lo


PRICE_SAMPLE = 1 << 20  # the first priced pass is priced from the distortion-only codes of about this many values


def quantize_dq(x: np.ndarray, step: float, c: float = 0.1, passes: int = 2,
                recon: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """(codes int32, float32 reconstruction) of 2-D x: a pure-distortion trellis pass, then
    passes - 1 passes with lambda = c step^2 priced by per-quantizer order-0 models of the
    previous pass (as benchmarks/ecsq_core.dq_quantize). c = 0 or passes = 1: distortion only.

    The distortion-only pass only prices the next one, so on a tensor of more than 2 x
    PRICE_SAMPLE values it runs on evenly spaced rows (every m-th, about PRICE_SAMPLE values):
    the histogram of a million codes is the whole tensor's to ~1e-3, and the tensor is searched
    once instead of twice (docs/BENCHMARKS.md 12b: the same bits and SQNR to 1e-3)."""
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes!r}")
    if not (math.isfinite(c) and c >= 0):
        raise ValueError(f"c must be a finite number >= 0, got {c!r}")
    x = _as_2d(x, "x")
    repricings = passes - 1 if c > 0 and x.size else 0
    m = max(1, min(x.shape[0], x.size // PRICE_SAMPLE)) if repricings else 1
    k = trellis(x[::m], step, 0.0)
    for i in range(repricings):
        prices, lo = order0_prices(k)
        reuse = k if i == repricings - 1 and k.shape == x.shape else None  # the last pass may overwrite its input
        k_new = trellis(x, step, c * float(step) ** 2, prices, offset=lo, out=reuse)
        done = k_new is reuse or np.array_equal(k_new, k)
        k = k_new
        if done:
            break
    return k, reconstruct(k, step) if recon else None


def _as_2d(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D [rows, cols] (reshape a tensor first), got shape {a.shape}")
    return a


__all__ = ["code_shrink_sums", "code_shrunk", "levels", "order0_prices", "quantize_dq", "reconstruct", "shrink_sums",
           "shrunk", "states", "trellis"]
