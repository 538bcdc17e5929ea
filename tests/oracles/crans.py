"""Numpy twin of quantcli/kernels/crans.py: contexts from codecs/context.py's definition (`bucket`,
an integer log2, where the kernels compare against thresholds), the coder vectorised over lanes."""

from __future__ import annotations

import numpy as np

from quantcli.codecs.context import MAX_P, MIN_P, SUM_CAP, UNUSED, bucket, contexts

KERNELS = ("walk", "encode", "decode", "tables")
NEXT = np.array([[0, 2], [2, 0], [1, 3], [3, 1]], dtype=np.int64)
LOW = 1 << 32


def walk(kt, offset, split, rho, buckets, base, ctx, counts):
    kk = kt.T.astype(np.int64) + offset
    ctx[:] = np.ascontiguousarray(contexts(kk, (split, rho, buckets, base)).T).reshape(-1)
    counts += np.bincount(ctx.astype(np.int64) * counts.shape[1] + kt.reshape(-1),
                          minlength=counts.size).reshape(counts.shape)


def encode(sym, ctx, freq, cum, prec, lanes, words, states):
    n = sym.size
    x = np.full(lanes, LOW, dtype=np.uint64)
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
    w = np.concatenate(out) if out else np.zeros(0, np.uint32)
    words[:w.size] = w
    states[:] = x
    return w.size


def decode(words, init, fc, fbase, prec, slot2idx, start, offset, split, rho, buckets, base, out):
    """Vectorised over the L lanes: the L codes of one step lie in distinct rows (L <= rows) whose
    earlier columns are already decoded."""
    rows, cols = out.shape
    n = rows * cols
    lanes = init.size
    x = init.copy()
    st = np.zeros(rows, np.int64)
    srow = np.zeros(rows, np.int64)
    freq = (fc & 0xFFFF).astype(np.uint64)  # flat: symbol s of context c at fbase[c] + s
    cum = (fc >> 16).astype(np.uint64)
    w64 = words[:-1].astype(np.uint64)
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
            return 3
        p64 = p.astype(np.uint64)
        xa = x[:a]
        slot = xa & ((np.uint64(1) << p64) - np.uint64(1))
        e = slot2idx[start[c] + slot.astype(np.int64)].astype(np.int64)
        s = e - fbase[c]
        xa = freq[e] * (xa >> p64) + slot - cum[e]
        need = xa < np.uint64(LOW)
        m = int(np.count_nonzero(need))
        if m:
            if pos + m > w64.size:
                return 1
            xa[need] = (xa[need] << np.uint64(32)) | w64[pos:pos + m]
            pos += m
        x[:a] = xa
        out[r, j] = s
        v = s.astype(np.int64) + offset
        st[r] = NEXT[st[r], v & 1]
        srow[r] = np.minimum(srow[r] + np.minimum(np.abs(v), SUM_CAP), SUM_CAP)
    if pos != w64.size or np.any(x != np.uint64(LOW)):
        return 2
    return 0


def _read_gamma(bits, pos, nb):
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


def tables(bits, nctx, alphabet, prec, lo, span, freq):
    pos = 0
    nb = bits.size
    nf = 0
    for c in range(nctx):
        if pos + 4 > nb:
            return 1, nf
        pc = int(bits[pos]) | int(bits[pos + 1]) << 1 | int(bits[pos + 2]) << 2 | int(bits[pos + 3]) << 3
        pos += 4
        if pc == UNUSED:
            prec[c] = 0
            continue
        p = pc + MIN_P
        if p > MAX_P:
            return 2, nf
        prec[c] = p
        lo1, pos = _read_gamma(bits, pos, nb)
        m, pos = _read_gamma(bits, pos, nb)
        if lo1 < 0 or m < 0:
            return 1, nf
        lo[c], span[c] = lo1 - 1, m
        if m < 1 or lo1 - 1 + m > alphabet:
            return 3, nf
        prev = total = 0
        cap = (1 << p) - (1 << (p - 6))
        first = nf
        for _ in range(m):
            z, pos = _read_gamma(bits, pos, nb)
            if z < 0:
                return 1, nf
            z -= 1
            f = prev + (z >> 1 if z & 1 == 0 else -((z + 1) >> 1))
            if f < 0 or f > cap:
                return 4, nf
            freq[nf] = f
            nf += 1
            total += f
            prev = f
        if freq[first] == 0 or freq[nf - 1] == 0 or total != 1 << p:
            return 4, nf
    if pos + 8 <= nb or np.any(bits[pos:]):  # only zero padding up to the byte boundary
        return 5, nf
    return 0, nf
