"""Kernels of the context-modelled coder `crans` (codecs/context.py; stream layout in docs/FORMAT.md
section 6.6): the contexts both sides compute, the table reader, the coder. The rANS updates are
rans.py's and the DQ state machine is dq.py's, so each exists once.

The context of code (r, j) in column-major order, k = code + offset: the quantizer of the row's DQ
state (state >> 1) when split, and a bucket of the row's mean |k| so far, computed without a
division as 1 + #{t : 16 S >= (V_t - 16) j} over the least values V_t of each level (see
codecs/context.py `bucket`, which the tests hold these to).
"""

from __future__ import annotations

import numpy as np

from ._jit import jit
from .dq import next_state
from .rans import decode_status, decode_step, encode_lanes

# numba keys a kernel's on-disk cache by this file's content only, not by the files it calls into:
# DEPENDS (a digest of _jit.py, dq.py, rans.py, checked by tests/test_structure.py) makes this file change with them.
DEPENDS = "2e13fcc478d18c7c"

SUM_CAP = 1 << 40  # row sums of |k| saturate here (|k| < 2**25 by the offset and alphabet bounds)


@jit
def _thresholds(j, rho, buckets, base, cmul):
    """cmul[t] = (V_{base+1+t} - 16) j for the bucket bounds of column j; returns how many."""
    nt = 0
    never = np.int64(1) << 62
    for t in range(1, buckets - 1):
        lv = base + t
        e = 4 + (lv >> rho)
        v = (np.int64(1) << e) + (lv & ((1 << rho) - 1)) * (np.int64(1) << (e - rho)) - 16 if e < 46 else never
        cmul[nt] = never if v >= never // max(j, 1) else v * j  # beyond any 16 S (S <= 2**40)
        nt += 1
    return nt


@jit
def _column_contexts(j, srow, st, split, rho, buckets, base, cmul, ctx_row):
    """Contexts of column j's codes, all rows at once (a loop LLVM vectorises)."""
    nt = _thresholds(j, rho, buckets, base, cmul)
    for r in range(srow.size):
        b = 0
        if j > 0 and buckets > 1:
            s16 = 16 * srow[r]
            b = 1
            for t in range(nt):
                b += s16 >= cmul[t]
        ctx_row[r] = 2 * b + (st[r] >> 1) if split else b


@jit
def walk(kt, offset, split, rho, buckets, base, ctx, counts):
    """ctx[i] = context of the i-th code of kt [cols, rows] (column-major, codes without offset),
    and counts[context, code] += 1."""
    cols, rows = kt.shape
    st = np.zeros(rows, np.int64)
    srow = np.zeros(rows, np.int64)
    cmul = np.zeros(max(buckets, 2), np.int64)
    ctx_row = np.zeros(rows, np.int64)
    i = 0
    for j in range(cols):
        _column_contexts(j, srow, st, split, rho, buckets, base, cmul, ctx_row)
        for r in range(rows):
            c = np.int64(kt[j, r])
            cx = ctx_row[r]
            ctx[i] = cx
            counts[cx, c] += 1
            v = c + offset
            st[r] = next_state(st[r], v & 1)
            srow[r] = min(srow[r] + abs(v), SUM_CAP)
            i += 1


@jit
def encode(sym, ctx, freq, cum, prec, lanes, words, states):
    """Encodes sym (symbol i in lane i % lanes, context ctx[i] at precision prec[ctx]) backwards:
    rans.encode_lanes' context case. Returns the number of words written."""
    return encode_lanes(sym, ctx, freq, cum, prec, lanes, words, states)


@jit
def decode(words, init, fc, fbase, prec, slot2idx, start, offset, split, rho, buckets, base, out):
    """Codes out [rows, cols], decoded column by column. The tables are sparse, one span of symbols
    per used context, back to back: a slot of context c is entry i = slot2idx[start[c] + slot],
    fc[i] = freq | cum << 16, and the symbol is i - fbase[c] (the subtraction is off the state's
    chain of dependent loads, which the dense [context, symbol] table had one add longer).
    0 ok, 1 words run out, 2 words left / a lane not back at LOW, 3 a code in an unused context."""
    rows, cols = out.shape
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
        _column_contexts(j, srow, st, split, rho, buckets, base, cmul, ctx_row)
        for r in range(rows):
            c = ctx_row[r]
            p = prec[c]
            if p == 0:
                return 3
            xj = x[ln]
            slot = xj & ((np.uint64(1) << np.uint64(p)) - np.uint64(1))
            i = np.int64(slot2idx[start[c] + np.int64(slot)])
            e = np.uint64(fc[i])
            s = i - fbase[c]
            out[r, j] = s
            x[ln], more = decode_step(xj, e & np.uint64(0xFFFF), slot - (e >> np.uint64(16)), np.uint64(p),
                                      words[min(pos, nwords)])
            pos += more
            ln = 0 if ln + 1 == lanes else ln + 1
            v = np.int64(s) + offset
            st[r] = next_state(st[r], v & 1)
            srow[r] = min(srow[r] + abs(v), SUM_CAP)
    return decode_status(x, pos, nwords)


@jit
def _gamma(bits, pos, nb):
    """(the Elias-gamma value at bit pos, the position after it), or (-1, pos) when the bits end
    first or it is longer than 40 bits."""
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


@jit
def tables(bits, nctx, alphabet, prec, lo, span, freq):
    """Reads the table bits into prec [nctx] (0: context unused), lo and span [nctx] (the symbols
    lo[c] .. lo[c] + span[c] - 1 of context c) and the flat `freq`, which gets each used context's
    span of frequencies in turn: no [nctx, alphabet] array, whatever the header declares. Every
    frequency costs at least one bit, so bits.size entries of `freq` always suffice.
    Returns (0 or an error code: 1 truncated, 2 bad precision, 3 span, 4 not a distribution,
    5 bits left over; frequencies written)."""
    pos = 0
    nb = bits.size
    nf = 0
    for c in range(nctx):
        if pos + 4 > nb:
            return 1, nf
        pc = (np.int64(bits[pos]) | (np.int64(bits[pos + 1]) << 1) | (np.int64(bits[pos + 2]) << 2)
              | (np.int64(bits[pos + 3]) << 3))
        pos += 4
        if pc == 15:  # context unused
            prec[c] = 0
            continue
        p = pc + 6
        if p > 16:
            return 2, nf
        prec[c] = p
        lo1, pos = _gamma(bits, pos, nb)
        m, pos = _gamma(bits, pos, nb)
        if lo1 < 0 or m < 0:
            return 1, nf
        lo[c] = lo1 - 1
        span[c] = m
        if m < 1 or lo1 - 1 + m > alphabet:
            return 3, nf
        prev = 0
        total = 0
        cap = (1 << p) - (1 << (p - 6))
        first = nf
        for _ in range(m):
            v, pos = _gamma(bits, pos, nb)
            if v < 0:
                return 1, nf
            v -= 1
            d = v >> 1 if v & 1 == 0 else -((v + 1) >> 1)
            f = prev + d
            if f < 0 or f > cap:
                return 4, nf
            freq[nf] = f
            nf += 1
            total += f
            prev = f
        if freq[first] == 0 or freq[nf - 1] == 0 or total != (1 << p):
            return 4, nf
    if pos + 8 <= nb:
        return 5, nf
    for i in range(pos, nb):
        if bits[i]:
            return 5, nf
    return 0, nf
