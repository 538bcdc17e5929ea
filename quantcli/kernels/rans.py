"""The rANS core shared by `rans` and `crans` (the state update each way, the one lane loop of both
encoders, the decoders' final check) and the kernels of the order-0 coder `rans` (codecs/entropy.py;
stream layout in docs/FORMAT.md section 6.3).

A lane's state x lives in [2**32, 2**64) and is renormalised in 32-bit words. A symbol of frequency
f and cumulative frequency c, at precision p (frequencies sum to 2**p), is encoded as
x -> (x // f) << p + x % f + c, after pushing the low word out if x >= f << (64 - p); decoding
reads slot = x mod 2**p, finds the symbol whose [c, c + f) holds it, and inverts the update.
All arithmetic is uint64 (numba would turn a mix with int64 into float64).
"""

from __future__ import annotations

import numpy as np

from ._jit import jit

# numba keys a kernel's on-disk cache by this file's content only, not by the files it calls into:
# DEPENDS (a digest of _jit.py, checked by tests/test_structure.py) makes this file change with them.
DEPENDS = "2dbfa5bb8d804b2f"


LOW = np.uint64(1 << 32)  # lane states live in [LOW, 2**64)
_MASK32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


@jit
def encode_pushes(x, f, p):
    """Whether encoding a symbol of frequency f at precision p onto state x first pushes the
    state's low 32-bit word out (and shifts it right by 32): x >= f << (64 - p)."""
    return x >= (f << (np.uint64(64) - p))


@jit
def encode_step(x, f, c, p):
    """The state after encoding a symbol (frequency f, cumulative c, precision p) onto state x
    (after the push, if any). Scalars in and out: numba inlines it without reference counting,
    and the push stays a branch in the caller (faster than a select here: it is rarely taken).
    A 64-bit division: a float reciprocal with an exact correction (ryg_rans' idea) measured no
    faster on this CPU (docs/BENCHMARKS.md section 11b)."""
    return ((x // f) << p) + (x % f) + c


@jit
def decode_step(x, f, bias, p, w):
    """(new state, whether it read w) after decoding a symbol of frequency f from state x, where
    bias = slot - c (the slot's offset inside the symbol's range) and w is the next word of the
    stream (the caller reads it unconditionally: a branch-free renormalisation)."""
    x = f * (x >> p) + bias
    more = x < LOW
    return (((x << _S32) | np.uint64(w)) if more else x), more


@jit
def decode_status(x, pos, nwords):
    """A decoder's verdict once every symbol is out: 0, 1 when it read past the words, 2 when
    words are left over or a lane's state is not back at LOW (where every encoder starts)."""
    if pos > nwords:
        return 1
    if pos != nwords:
        return 2
    for j in range(x.size):
        if x[j] != LOW:
            return 2
    return 0


@jit
def encode_lanes(sym, ctx, freq, cum, prec, lanes, words, states):
    """The one lane loop of both encoders: symbol i goes to lane i % lanes, encoded backwards (rANS
    is a stack); returns the number of words written to `words` (in reverse decoding order).
    `crans`: symbol i in context ctx[i], frequency freq[ctx, s], cumulative cum[ctx, s], precision
    prec[ctx]. `rans`: ctx is a 2-D placeholder, freq[s], cum[s], precision prec (an integer);
    numba folds `ctx.ndim` before typing, so each compiled case keeps only its own branch."""
    n = sym.size
    for j in range(lanes):
        states[j] = LOW
    nw = 0
    steps = (n + lanes - 1) // lanes
    for t in range(steps - 1, -1, -1):
        base = t * lanes
        for j in range(min(lanes, n - base) - 1, -1, -1):
            s = sym[base + j]
            if ctx.ndim == 2:
                f, c, p = freq[s], cum[s], np.uint64(prec)
            else:
                k = ctx[base + j]
                f, c, p = freq[k, s], cum[k, s], np.uint64(prec[k])
            x = states[j]
            if encode_pushes(x, f, p):
                words[nw] = np.uint32(x & _MASK32)
                nw += 1
                x = x >> _S32
            states[j] = encode_step(x, f, c, p)
    return nw


@jit
def histogram(sym, counts):
    """counts[s] += 1 for every symbol (np.bincount would widen uint8/uint16 to int64 first)."""
    for i in range(sym.size):
        counts[sym[i]] += 1


@jit
def encode(sym, freq, cum, lanes, words, states):
    """Encodes sym (16-bit precision) on `lanes` lanes: encode_lanes' order-0 case."""
    return encode_lanes(sym, np.zeros((1, 1), np.uint8), freq, cum, 16, lanes, words, states)


@jit
def decode(words, init, freq, cum, slot2sym, out):
    """Decodes out.size symbols; `words` has one spare 0 word at the end (so the next word can be
    read before knowing whether it is needed; pos > nwords means it was). 0 on success, 1 when
    the words run out, 2 when words are left over or a lane does not end at LOW."""
    n = out.size
    lanes = init.size
    x = init.copy()
    pos = 0
    nwords = words.size - 1
    p = np.uint64(16)
    mask = np.uint64((1 << 16) - 1)
    steps = (n + lanes - 1) // lanes
    for t in range(steps):
        base = t * lanes
        for j in range(min(lanes, n - base)):
            xj = x[j]
            slot = xj & mask
            s = slot2sym[slot]
            out[base + j] = s
            x[j], more = decode_step(xj, freq[s], slot - cum[s], p, words[min(pos, nwords)])
            pos += more
    return decode_status(x, pos, nwords)
