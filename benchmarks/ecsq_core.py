"""Entropy-coded scalar quantization (ECSQ): quantizers and code-length models, vectorised numpy.

Everything here works on integer codes q (x ~ q * step) and prices them with ideal code lengths,
so a design can be judged before an entropy coder exists:

- `entropy_bits`: empirical order-0 entropy of each context's symbols (a lower bound: the decoder
  would need the exact frequencies for free).
- `adaptive_bits`: what an adaptive arithmetic coder whose model starts empty really spends
  (Krichevsky-Trofimov / Dirichlet-1/2 estimator: exact, it includes the cost of learning the
  statistics, about (K-1)/2 log2 n bits per context, so no table needs sending).
- `static_table_bits`: the side information of a static coder (each frequency as an Elias-gamma code).

Quantizers: `round_codes` (plain rounding), `rdoq` (rate-distortion optimised rounding against an
order-0 model re-estimated over a few passes), `trellis_dq` (dependent quantization: two
interleaved quantizers switched by a 4-state machine on the parity of each code, as in VVC and
MPEG NNC, searched with a Viterbi pass vectorised over rows).
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln

LN2 = np.log(2.0)


# ----------------------------------------------------------------------------- code lengths

def context_counts(q: np.ndarray, ctx: np.ndarray | None = None, n_ctx: int = 1) -> np.ndarray:
    """Counts [n_ctx, K] of symbols q (any ints) per context, K spanning q.min()..q.max()."""
    q = q.ravel()
    lo = int(q.min())
    k = int(q.max()) - lo + 1
    key = q.astype(np.int64) - lo
    if ctx is not None:
        key = key + ctx.ravel().astype(np.int64) * k
    return np.bincount(key, minlength=n_ctx * k).reshape(n_ctx, k)


def entropy_bits(counts: np.ndarray) -> float:
    """Sum over contexts (rows) of n * H(empirical distribution), in bits."""
    counts = np.asarray(counts, np.float64).reshape(-1, np.shape(counts)[-1])
    n = counts.sum(1, keepdims=True)
    nz = counts > 0
    return float(-(counts[nz] * np.log2((counts / np.maximum(n, 1))[nz])).sum())


def adaptive_bits(counts: np.ndarray, alpha: float = 0.5) -> float:
    """Exact code length of an adaptive arithmetic coder with a Dirichlet(alpha) prior per context.

    It does not depend on the symbols' order; alphabet size K is the row length (the decoder
    learns the code range from the tensor header)."""
    counts = np.asarray(counts, np.float64).reshape(-1, np.shape(counts)[-1])
    k = counts.shape[1]
    n = counts.sum(1)
    nats = (gammaln(n + k * alpha) - gammaln(k * alpha)
            - (gammaln(counts + alpha) - gammaln(alpha)).sum(1))
    return float(nats[n > 0].sum() / LN2)


def static_table_bits(counts: np.ndarray) -> float:
    """Side info of a static coder: every count of the range, as an Elias-gamma code of count+1."""
    c = np.asarray(counts, np.int64).ravel() + 1
    return float((2 * np.floor(np.log2(c)) + 1).sum())


def code_bits(counts: np.ndarray, model: str = "adaptive") -> float:
    """Bits for symbols with these per-context counts: 'entropy' (ideal, free table),
    'static' (entropy plus the frequency tables), or 'adaptive' (KT arithmetic coder)."""
    if model == "entropy":
        return entropy_bits(counts)
    if model == "static":
        return entropy_bits(counts) + static_table_bits(counts)
    if model == "adaptive":
        return adaptive_bits(counts)
    raise ValueError(f"unknown code-length model {model!r}")


def model_bits(counts: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """-log2 p per symbol and context [n_ctx, K] under smoothed counts: the price table RDOQ uses."""
    counts = np.asarray(counts, np.float64)
    p = (counts + alpha) / (counts.sum(-1, keepdims=True) + alpha * counts.shape[-1])
    return -np.log2(p)


def sqnr_db(signal_energy: float, error_energy: float) -> float:
    return float(10 * np.log10(signal_energy / error_energy)) if error_energy > 0 else float("inf")


# ----------------------------------------------------------------------------- quantizers

def round_codes(x: np.ndarray, step: float) -> np.ndarray:
    """Plain rounding to the nearest multiple of step (what an encoder without RDO does)."""
    return np.rint(x / step).astype(np.int32)


def _price(table: np.ndarray, lo: int, q: np.ndarray, escape: float) -> np.ndarray:
    """Look up bits of codes q in a table indexed from lo; codes outside it cost `escape` bits."""
    i = q - lo
    inside = (i >= 0) & (i < table.shape[-1])
    return np.where(inside, table[np.clip(i, 0, table.shape[-1] - 1)], escape)


def rdoq(x: np.ndarray, step: float, c: float, passes: int = 3, alpha: float = 0.5) -> np.ndarray:
    """Codes minimising (x - q step)^2 + lambda bits(q), lambda = c step^2, q in {floor, ceil} of x/step.

    With f = floor(x/step) and u = x/step - f, ceil wins iff 2u - 1 > c (bits(f+1) - bits(f)): a
    threshold per level, so one table lookup per weight. Zero is not a third candidate: it would beat
    the nearer of two levels >= 1 only if it saved more than 2/c bits. bits() comes from an order-0
    model of this tensor's codes, re-estimated after each pass (the first prices plain rounding).
    c = 0 is plain rounding."""
    q = round_codes(x, step)
    if c <= 0:
        return q
    t = x / np.float32(step)
    f = np.floor(t)
    u = t - f
    f = f.astype(np.int32)
    for _ in range(passes):
        lo, hi = int(q.min()), int(q.max())
        table = model_bits(np.bincount(q.ravel() - lo, minlength=hi - lo + 1).astype(np.float64), alpha)
        escape = float(table.max()) + 1.0
        bits = np.concatenate([[escape], table, [escape]])  # levels lo-1 .. hi+1
        thr = (0.5 + 0.5 * c * (bits[1:] - bits[:-1])).astype(np.float32)  # for f = lo-1 .. hi
        q_new = f + (u > thr[np.clip(f - (lo - 1), 0, len(thr) - 1)])
        if np.array_equal(q_new, q):
            break
        q = q_new
    return q


# ----------------------------------------------------------------------------- dependent quantization

# 4-state machine of VVC / NNC: states 0,1 use quantizer Q0 (even multiples of step), states 2,3
# use Q1 (odd multiples and zero); the next state is NEXT[state, parity of the code].
NEXT = np.array([[0, 2], [2, 0], [1, 3], [3, 1]])
QUANTIZER = np.array([0, 0, 1, 1])


def dq_recon(k: np.ndarray, quantizer: np.ndarray) -> np.ndarray:
    """Reconstruction in units of step: Q0 gives 2k, Q1 gives 2k - sign(k)."""
    return 2 * k - quantizer * np.sign(k)


def dq_states(k: np.ndarray) -> np.ndarray:
    """The state each code of each row was coded in (every row starts in state 0)."""
    states = np.zeros(k.shape, np.int8)
    s = np.zeros(k.shape[0], np.int64)
    for j in range(k.shape[1]):
        states[:, j] = s
        s = NEXT[s, k[:, j] & 1]
    return states


def trellis_dq(x: np.ndarray, step: float, lam: float, tables: tuple[np.ndarray, int] | None = None,
               chunk: int = 8192) -> np.ndarray:
    """Codes k [rows, cols] of 2-D x under dependent quantization, minimising squared error +
    lam * bits along each row with a Viterbi search over the 4 states (vectorised over rows).

    tables = (bits [2, K], lo): price of code k under quantizer 0/1, indexed from lo; None prices
    every code equally (pure distortion, the first pass)."""
    out = np.empty(x.shape, np.int32)
    for r0 in range(0, x.shape[0], chunk):
        out[r0:r0 + chunk] = _viterbi(x[r0:r0 + chunk] / step, lam / (step * step), tables)
    return out


def _viterbi(t: np.ndarray, lam: float, tables: tuple[np.ndarray, int] | None) -> np.ndarray:
    rows, cols = t.shape
    inf = np.float64(np.inf)
    cost = np.full((rows, 4), inf)
    cost[:, 0] = 0.0
    back_state = np.empty((cols, rows, 4), np.int8)
    back_code = np.empty((cols, rows, 4), np.int32)
    ar = np.arange(rows)
    # per quantizer, 3 candidate codes: the two around t and zero
    for j in range(cols):
        tj = t[:, j]
        new = np.full((rows, 4), inf)
        new_s = np.zeros((rows, 4), np.int8)
        new_k = np.zeros((rows, 4), np.int32)
        for qz in (0, 1):
            if qz == 0:
                k0 = np.floor(tj / 2).astype(np.int32)  # recon 2k
                cands = np.stack([k0, k0 + 1, np.zeros_like(k0)])
            else:
                m = np.floor((tj - 1) / 2).astype(np.int32)  # odd levels 2m+1 around t
                lo_l, hi_l = 2 * m + 1, 2 * m + 3
                # odd level L maps to k = (L + sign(L)) / 2
                cands = np.stack([(lo_l + np.sign(lo_l)) // 2, (hi_l + np.sign(hi_l)) // 2, np.zeros_like(m)])
            rec = dq_recon(cands, qz)
            c = (tj[None] - rec) ** 2
            if tables is not None:
                bits, lo = tables
                c = c + lam * _price(bits[qz], lo, cands, float(bits.max()) + 1.0)
            for s in np.flatnonzero(QUANTIZER == qz):
                for p in (0, 1):
                    cp = np.where((cands & 1) == p, c, inf)
                    best = cp.argmin(0)
                    total = cost[:, s] + cp[best, ar]
                    ns = NEXT[s, p]
                    better = total < new[:, ns]
                    new[:, ns] = np.where(better, total, new[:, ns])
                    new_s[:, ns] = np.where(better, s, new_s[:, ns])
                    new_k[:, ns] = np.where(better, cands[best, ar], new_k[:, ns])
        cost = new
        back_state[j], back_code[j] = new_s, new_k
    k = np.empty((rows, cols), np.int32)
    s = cost.argmin(1)
    for j in range(cols - 1, -1, -1):
        k[:, j] = back_code[j, ar, s]
        s = back_state[j, ar, s]
    return k


def dq_quantize(x: np.ndarray, step: float, c: float, passes: int = 3,
                alpha: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Dependent quantization of 2-D x with lambda = c step^2: the first pass minimises distortion,
    later ones re-price codes with order-0 models (one per quantizer) of the previous pass.
    Returns (codes, reconstruction in units of step)."""
    k = trellis_dq(x, step, 0.0)
    for _ in range(passes - 1 if c > 0 else 0):
        qz = QUANTIZER[dq_states(k)]
        counts = context_counts(k, qz, 2)
        k = trellis_dq(x, step, c * step * step, (model_bits(counts, alpha), int(k.min())))
    return k, dq_recon(k, QUANTIZER[dq_states(k)])
