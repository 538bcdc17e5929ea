"""Numpy twin of quantcli/kernels/rans.py: the rANS updates vectorised over the lanes of one step."""

from __future__ import annotations

import numpy as np

KERNELS = ("histogram", "encode", "decode")
LOW = 1 << 32


def histogram(sym, counts):
    counts += np.bincount(sym, minlength=counts.size)


def encode(sym, freq, cum, lanes, words, states):
    n = sym.size
    x = np.full(lanes, LOW, dtype=np.uint64)
    out = []
    for t in range(-(-n // lanes) - 1, -1, -1):
        s = sym[t * lanes:(t + 1) * lanes]
        a = s.size
        f = freq[s]
        xa = x[:a]
        need = xa >= (f << np.uint64(48))
        if need.any():
            out.append((xa[need] & np.uint64(0xFFFFFFFF)).astype(np.uint32)[::-1])
            xa[need] >>= np.uint64(32)
        x[:a] = ((xa // f) << np.uint64(16)) + (xa % f) + cum[s]
    w = np.concatenate(out) if out else np.zeros(0, np.uint32)  # reverse decoding order, as the kernel
    words[:w.size] = w
    states[:] = x
    return w.size


def decode(words, init, freq, cum, slot2sym, out):
    n = out.size
    lanes = init.size
    x = init.copy()
    pos = 0
    w64 = words[:-1].astype(np.uint64)  # the kernel's spare word is not part of the stream
    for t in range(-(-n // lanes)):
        a = min(lanes, n - t * lanes)
        xa = x[:a]
        slot = xa & np.uint64(0xFFFF)
        s = slot2sym[slot]
        xa = freq[s] * (xa >> np.uint64(16)) + slot - cum[s]
        need = xa < np.uint64(LOW)
        k = int(np.count_nonzero(need))
        if k:
            if pos + k > w64.size:
                return 1
            xa[need] = (xa[need] << np.uint64(32)) | w64[pos:pos + k]
            pos += k
        x[:a] = xa
        out[t * lanes:t * lanes + a] = s
    if pos != w64.size or np.any(x != np.uint64(LOW)):
        return 2
    return 0
