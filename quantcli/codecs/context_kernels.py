"""Kernels of the `crans` codec (context.py): the contexts both sides compute, and the numba
kernels with numpy paths that give the same bytes and codes (tested), as entropy.py's.

The contexts of code (r, j), k = code + offset, in a matrix's column-major coding order:
  - quantizer: the DQ state's quantizer (state >> 1), each row starting in state 0 and moving by
    NEXT[state, k & 1] (methods/dq.py's machine);
  - bucket: 0 in column 0 or with one bucket, else 1 + clip(level(S, j) - base, 0, buckets - 2),
    S = sum of |k| of the row's earlier codes (saturating at 2**40), level = an integer log2 of
    the mean |k| so far with 2**rho steps an octave (`_level`).
The numba kernels compute the bucket without a division, as 1 + #{t : 16 S >= (V - 16) j} over
the least values V of each level (the same integers, checked against `bucket` in the tests).
"""

from __future__ import annotations

import os

from typing import Callable

import numpy as np

from .. import accel
from . import entropy
from .errors import CodecError

MIN_P, MAX_P = 6, 16
UNUSED = 15  # P code of a context no code uses
SUM_CAP = 1 << 40  # row sums of |k| saturate here (no overflow for any shape)
ENV_VAR = entropy.ENV_VAR
NEXT = np.array([[0, 2], [2, 0], [1, 3], [3, 1]], dtype=np.int64)  # methods/dq.py's machine
_kernels: dict | None = None

# ----------------------------------------------------------------------------- contexts

def _level(s: np.ndarray, j: int | np.ndarray, rho: int) -> np.ndarray:
    """Integer log2 of the mean |k| so far, 2**rho steps an octave: with v = 16 S // j + 16,
    e = floor(log2 v), level = (e - 4) 2**rho + the rho bits of v after its leading one."""
    v = (16 * np.asarray(s, np.int64)) // np.maximum(j, 1) + 16
    e = np.frexp(v.astype(np.float64))[1].astype(np.int64) - 1  # exact: v < 2**45
    return (e - 4) * (1 << rho) + ((v >> (e - rho)) & ((1 << rho) - 1))


def bucket(s: np.ndarray, j: int | np.ndarray, rho: int, buckets: int, base: int) -> np.ndarray:
    """Row-scale bucket of a code in column j with row sum s of |k| before it: 0 in column 0 or
    with one bucket, else 1 + clip(level - base, 0, buckets - 2)."""
    if buckets == 1:
        return np.zeros(np.shape(s), np.int64)
    b = 1 + np.clip(_level(s, j, rho) - base, 0, buckets - 2)
    return np.where(np.asarray(j) == 0, 0, b)


def row_state(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row sums of |k| before each code, saturating at SUM_CAP; the quantizer of each code's DQ
    state) for codes k [rows, cols] with the offset applied."""
    a = np.minimum(np.abs(k), SUM_CAP)
    s = np.minimum(np.cumsum(a, axis=1, dtype=np.int64) - a, SUM_CAP)
    return s, _quantizers(k)


def contexts(k: np.ndarray, cfg: tuple[int, int, int, int],
             state: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """int64 [rows, cols]: the context of each code k (with offset applied) under
    cfg = (split, rho, buckets, base): bucket * 2 + quantizer when split, else bucket."""
    split, rho, buckets, base = cfg
    s, q = state if state is not None else row_state(k)
    ctx = bucket(s, np.arange(k.shape[1])[None, :], rho, buckets, base)
    return 2 * ctx + q if split else ctx


def _quantizers(k: np.ndarray) -> np.ndarray:
    """The quantizer (state >> 1) each code of each row was coded under, rows starting in state 0
    (methods/dq.py's machine and kernel)."""
    from ..methods import dq  # the one DQ state machine; imported late (methods import codecs)
    return (dq.states(k) >> 1).astype(np.int64)


def n_contexts(split: int, buckets: int) -> int:
    return buckets * (2 if split else 1)


def _read_gamma(bits: np.ndarray, pos: int, nb: int) -> tuple[int, int]:
    """(the Elias-gamma value at bit `pos`, the position after it), or (-1, pos) when the bits end
    first or it is longer than 40 bits. Plain Python that numba also compiles (the kernel's reader)."""
    z = 0
    while pos < nb and bits[pos] == 0:
        z += 1
        pos += 1
    if pos + z >= nb or z > 40:
        return -1, pos
    v = 0
    for _ in range(z + 1):
        v = (v << 1) | (1 if bits[pos] else 0)
        pos += 1
    return v, pos


def _parse_tables_py(bits: np.ndarray, nctx: int, alphabet: int, freq: np.ndarray, prec: np.ndarray) -> int:
    """Fills freq [nctx, alphabet] and prec [nctx] from the table bits; returns 0, or an error code
    (1 truncated, 2 bad P, 3 span, 4 not a distribution). Same logic as the numba kernel."""
    pos = 0
    nb = bits.size

    def gamma() -> int:
        nonlocal pos
        v, pos = _read_gamma(bits, pos, nb)
        return v

    for c in range(nctx):
        if pos + 4 > nb:
            return 1
        pc = int(bits[pos]) | int(bits[pos + 1]) << 1 | int(bits[pos + 2]) << 2 | int(bits[pos + 3]) << 3
        pos += 4
        if pc == UNUSED:
            prec[c] = 0
            continue
        p = pc + MIN_P
        if p > MAX_P:
            return 2
        prec[c] = p
        lo1 = gamma()
        m = gamma()
        if lo1 < 0 or m < 0:
            return 1
        lo = lo1 - 1
        if m < 1 or lo + m > alphabet:
            return 3
        prev = 0
        total = 0
        cap = (1 << p) - (1 << (p - 6))
        for i in range(m):
            z = gamma()
            if z < 0:
                return 1
            z -= 1
            d = z >> 1 if z & 1 == 0 else -((z + 1) >> 1)
            f = prev + d
            if f < 0 or f > cap:
                return 4
            freq[c, lo + i] = f
            total += f
            prev = f
        if freq[c, lo] == 0 or freq[c, lo + m - 1] == 0 or total != 1 << p:
            return 4
    if pos + 8 <= nb or np.any(bits[pos:]):  # only zero padding up to the byte boundary
        return 5
    return 0


# ----------------------------------------------------------------------------- kernels

def _backend() -> str:
    return accel.choose(os.environ.get(ENV_VAR, "auto"), _load_numba, ENV_VAR)


def _load_numba() -> dict:
    """Compile the kernels once; {} when numba is unavailable (numpy paths, same bytes)."""
    global _kernels
    if _kernels is None:
        _kernels = accel.compile_kernels(_build)
    return _kernels


def _build(jit: Callable[[Callable], Callable]) -> dict:
    """The kernels, compiled by `jit` (accel.compile_kernels)."""
    low = np.uint64(1 << 32)
    nxt = NEXT.reshape(-1).copy()  # nxt[2 s + parity]: a table lookup, no branch on the state
    mask32 = np.uint64(0xFFFFFFFF)
    s32 = np.uint64(32)


    @jit
    def column_contexts(j, srow, st, split, rho, buckets, base, cmul, ctx_row):
        # contexts of column j's codes, all rows at once (a loop LLVM vectorises): bucket =
        # 1 + #{t : level(S, j) >= base + t}, and level(S, j) >= L  <=>  16 S >= (V_L - 16) j, where
        # V_L = 2**e + (L mod 2**rho) 2**(e - rho), e = 4 + L >> rho, is the least v of level L
        nt = 0
        never = np.int64(1) << 62
        for t in range(1, buckets - 1):
            lv = base + t
            e = 4 + (lv >> rho)
            v = (np.int64(1) << e) + (lv & ((1 << rho) - 1)) * (np.int64(1) << (e - rho)) - 16 if e < 46 else never
            cmul[nt] = never if v >= never // max(j, 1) else v * j  # beyond any 16 S (S <= 2**40)
            nt += 1
        rows = srow.size
        for r in range(rows):
            b = 0
            if j > 0 and buckets > 1:
                s16 = 16 * srow[r]
                b = 1
                for t in range(nt):
                    b += s16 >= cmul[t]
            ctx_row[r] = 2 * b + (st[r] >> 1) if split else b

    @jit
    def walk(kt, offset, split, rho, buckets, base, ctx, counts):
        # contexts (column-major) of codes kt [cols, rows] (codes without offset), and their counts
        cols, rows = kt.shape
        st = np.zeros(rows, np.int64)
        srow = np.zeros(rows, np.int64)
        cmul = np.zeros(max(buckets, 2), np.int64)
        ctx_row = np.zeros(rows, np.int64)
        i = 0
        for j in range(cols):
            column_contexts(j, srow, st, split, rho, buckets, base, cmul, ctx_row)
            for r in range(rows):
                c = np.int64(kt[j, r])
                cx = ctx_row[r]
                ctx[i] = cx
                counts[cx, c] += 1
                v = c + offset
                st[r] = nxt[2 * st[r] + (v & 1)]
                srow[r] = min(srow[r] + abs(v), 1 << 40)  # |v| < 2**25: offset and alphabet bounds
                i += 1

    @jit
    def enc(sym, ctx, freq, cum, prec, lanes, words, states):
        n = sym.size
        for j in range(lanes):
            states[j] = low
        nw = 0
        steps = (n + lanes - 1) // lanes
        for t in range(steps - 1, -1, -1):
            base = t * lanes
            for j in range(min(lanes, n - base) - 1, -1, -1):
                c = ctx[base + j]
                s = sym[base + j]
                f = freq[c, s]
                p = np.uint64(prec[c])
                x = states[j]
                if x >= (f << (np.uint64(64) - p)):
                    words[nw] = np.uint32(x & mask32)
                    nw += 1
                    x = x >> s32
                states[j] = ((x // f) << p) + (x % f) + cum[c, s]
        return nw

    @jit
    def dec(words, init, freq, cum, prec, slot2sym, start, offset, split, rho, buckets, base, out_t):
        # out_t [cols, rows]: the codes column-major. 0 ok, 1 words run out, 2 words left /
        # state not 2**32, 3 a code in an unused context
        cols, rows = out_t.shape
        lanes = init.size
        x = init.copy()
        st = np.zeros(rows, np.int64)
        srow = np.zeros(rows, np.int64)
        cmul = np.zeros(max(buckets, 2), np.int64)
        ctx_row = np.zeros(rows, np.int64)
        nwords = words.size - 1
        pos = 0
        ln = 0
        for j in range(cols):
            column_contexts(j, srow, st, split, rho, buckets, base, cmul, ctx_row)
            for r in range(rows):
                c = ctx_row[r]
                p = prec[c]
                if p == 0:
                    return 3
                xj = x[ln]
                slot = xj & ((np.uint64(1) << np.uint64(p)) - np.uint64(1))
                s = slot2sym[start[c] + np.int64(slot)]
                out_t[j, r] = s
                xj = freq[c, s] * (xj >> np.uint64(p)) + slot - cum[c, s]
                more = xj < low
                w = np.uint64(words[min(pos, nwords)])
                xj = ((xj << s32) | w) if more else xj
                pos += more
                x[ln] = xj
                ln += 1
                if ln == lanes:
                    ln = 0
                v = np.int64(s) + offset
                st[r] = nxt[2 * st[r] + (v & 1)]
                srow[r] = min(srow[r] + abs(v), 1 << 40)  # |v| < 2**25: offset and alphabet bounds
        if pos > nwords:
            return 1
        if pos != nwords:
            return 2
        for j in range(lanes):
            if x[j] != low:
                return 2
        return 0

    gamma = jit(_read_gamma)

    @jit
    def tables(bits, nctx, alphabet, freq, prec):
        pos = 0
        nb = bits.size
        for c in range(nctx):
            if pos + 4 > nb:
                return 1
            pc = (np.int64(bits[pos]) | (np.int64(bits[pos + 1]) << 1) | (np.int64(bits[pos + 2]) << 2)
                  | (np.int64(bits[pos + 3]) << 3))
            pos += 4
            if pc == 15:
                prec[c] = 0
                continue
            p = pc + 6
            if p > 16:
                return 2
            prec[c] = p
            lo1, pos = gamma(bits, pos, nb)
            m, pos = gamma(bits, pos, nb)
            if lo1 < 0 or m < 0:
                return 1
            lo = lo1 - 1
            if m < 1 or lo + m > alphabet:
                return 3
            prev = 0
            total = 0
            cap = (1 << p) - (1 << (p - 6))
            for i in range(m):
                v, pos = gamma(bits, pos, nb)
                if v < 0:
                    return 1
                v -= 1
                d = v >> 1 if v & 1 == 0 else -((v + 1) >> 1)
                f = prev + d
                if f < 0 or f > cap:
                    return 4
                freq[c, lo + i] = f
                total += f
                prev = f
            if freq[c, lo] == 0 or freq[c, lo + m - 1] == 0 or total != (1 << p):
                return 4
        if pos + 8 <= nb:
            return 5
        for i in range(pos, nb):
            if bits[i]:
                return 5
        return 0

    return {"walk": walk, "enc": enc, "dec": dec, "tables": tables}


# ----------------------------------------------------------------------------- numpy paths

def _walk_numpy(kt, offset, cfg, counts):
    """The walk kernel: contexts in column-major order of codes kt [cols, rows], counts filled."""
    kk = kt.T.astype(np.int64) + offset
    ctx = np.ascontiguousarray(contexts(kk, cfg).T).reshape(-1).astype(np.uint8)
    counts += np.bincount(ctx.astype(np.int64) * counts.shape[1] + kt.reshape(-1),
                          minlength=counts.size).reshape(counts.shape)
    return ctx


def _encode_numpy(sym, ctx, freq, cum, prec, lanes):
    n = sym.size
    x = np.full(lanes, 1 << 32, dtype=np.uint64)
    out = []
    for t in range(-(-n // lanes) - 1, -1, -1):
        s = sym[t * lanes:(t + 1) * lanes]
        c = ctx[t * lanes:(t + 1) * lanes]
        a = s.size
        f = freq[c, s]
        p = prec[c].astype(np.uint64)
        xa = x[:a]
        need = xa >= (f << (np.uint64(64) - p))
        if need.any():
            out.append((xa[need] & np.uint64(0xFFFFFFFF)).astype(np.uint32)[::-1])
            xa[need] >>= np.uint64(32)
        x[:a] = ((xa // f) << p) + (xa % f) + cum[c, s]
    words = np.concatenate(out)[::-1] if out else np.zeros(0, np.uint32)
    return x, words


def _decode_numpy(words, init, freq, cum, prec, slot2sym, start, offset, cfg, out_t):
    """Vectorised over the L lanes: the L codes of one step lie in distinct rows (L <= rows)
    whose earlier columns are already decoded."""
    split, rho, buckets, base = cfg
    cols, rows = out_t.shape
    n = rows * cols
    lanes = init.size
    x = init.copy()
    st = np.zeros(rows, np.int64)
    srow = np.zeros(rows, np.int64)
    flat = out_t.reshape(-1)
    w64 = words.astype(np.uint64)
    pos = 0
    for t in range(-(-n // lanes)):
        i = np.arange(t * lanes, min(n, (t + 1) * lanes))
        a = i.size
        j, r = i // rows, i % rows
        c = bucket(srow[r], j, rho, buckets, base)
        if split:
            c = 2 * c + (st[r] >> 1)
        p = prec[c]
        if np.any(p == 0):
            raise CodecError("a code falls in a context with no table")
        p64 = p.astype(np.uint64)
        xa = x[:a]
        slot = xa & ((np.uint64(1) << p64) - np.uint64(1))
        s = slot2sym[start[c] + slot.astype(np.int64)]
        xa = freq[c, s] * (xa >> p64) + slot - cum[c, s]
        need = xa < np.uint64(1 << 32)
        m = int(np.count_nonzero(need))
        if m:
            if pos + m > w64.size:
                raise CodecError("entropy stream ends early")
            xa[need] = (xa[need] << np.uint64(32)) | w64[pos:pos + m]
            pos += m
        x[:a] = xa
        flat[i] = s
        v = s.astype(np.int64) + offset
        st[r] = NEXT[st[r], v & 1]
        srow[r] = np.minimum(srow[r] + np.minimum(np.abs(v), SUM_CAP), SUM_CAP)
    if pos != w64.size or np.any(x != np.uint64(1 << 32)):
        raise CodecError("entropy stream does not end where the declared count says")
