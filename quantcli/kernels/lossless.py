"""The lossless codec's numba kernels: byte-plane split/merge, the `rotl1h10` split/merge and the
6-bit residual packing, each one pass over the data.

Module-level `@jit` functions, so the on-disk cache serves every run after
the first (one compiled version per argument types: uint16/uint32/uint64 words). This module imports
numba; lossless.py imports it only inside the functions that encode or decode. The plain-numpy
twins these kernels must match bit for bit live in tests/lossless_oracle.py.

Word layout (docs/FORMAT.md 6.4): a float's k-byte word u, rotated left by one bit (sign to bit 0)
when `rot`, is r. Byte plane i holds byte i of r (little-endian). In `rotl1h10`, head = the top 10
bits of r, residual = the next 6, and the k - 2 low bytes of r are byte planes. The residuals pack
four to three bytes, least significant bits first (packing.pack_bits with 6 bits).
"""

from __future__ import annotations

import numpy as np
from ._jit import jit

# DEPENDS (a digest of _jit.py, checked by tests/test_structure.py) makes this file change with them.
DEPENDS = "2dbfa5bb8d804b2f"

HEAD_BITS, RES_BITS = 10, 6  # lossless.HEAD_BITS / RES_BITS (that module imports this one, not back)
HEAD_MASK, RES_MASK = (1 << HEAD_BITS) - 1, (1 << RES_BITS) - 1
_ONE = np.uint64(1)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_B8 = np.uint64(0xFF)


@jit
def _rotl(x, k):
    """x (a k-byte word in a uint64) rotated left by one within its 8k bits."""
    top = np.uint64(8 * k - 1)
    return ((x << _ONE) & (_ALL >> np.uint64(64 - 8 * k))) | (x >> top)


@jit
def _rotr(r, k):
    return (r >> _ONE) | ((r & _ONE) << np.uint64(8 * k - 1))


@jit
def split_planes(u, rot, planes, counts):
    """planes[i][e] = byte i of word e of `u` (rotated left by one when `rot`); counts[i] is
    plane i's histogram (int64, 256 per plane, added to). `planes` is a tuple of k uint8 arrays:
    its length is known when compiling, so the byte loop unrolls (a 2-D array is 3-5x slower)."""
    k = u.itemsize
    for e in range(u.size):
        x = np.uint64(u[e])
        if rot:
            x = _rotl(x, k)
        for i in range(len(planes)):
            b = np.uint8((x >> np.uint64(8 * i)) & _B8)
            planes[i][e] = b
            counts[i, b] += 1


@jit
def merge_planes(planes, rot, u):
    """The inverse of split_planes: u[e] from a tuple of k byte planes (views of the archive's
    bytes, or decoded), rotated right by one when `rot`."""
    k = u.itemsize
    for e in range(u.size):
        x = np.uint64(0)
        for i in range(len(planes)):
            x |= np.uint64(planes[i][e]) << np.uint64(8 * i)
        if rot:
            x = _rotr(x, k)
        u[e] = x


@jit
def split_head(u, planes, res, head, counts_low, counts_res, counts_head):
    """`rotl1h10` streams of the 2 or 4-byte words `u`: low byte planes [k - 2, n], 6-bit
    residuals (uint8) and 10-bit heads (uint16), with their histograms (int64, added to):
    counts_low [k - 2, 256], counts_res [64], counts_head [1024]. 32-bit arithmetic."""
    k = u.itemsize
    hs, rs, top = 8 * k - HEAD_BITS, 8 * k - HEAD_BITS - RES_BITS, 8 * k - 1
    for e in range(u.size):
        x = np.uint32(u[e])
        x = (x << 1) | (x >> top)  # bits above 8k are never read below
        h = (x >> hs) & HEAD_MASK
        r = (x >> rs) & RES_MASK
        head[e] = h
        res[e] = r
        counts_head[h] += 1
        counts_res[r] += 1
        if k == 4:
            b0, b1 = x & 255, (x >> 8) & 255
            planes[0, e] = b0
            planes[1, e] = b1
            counts_low[0, b0] += 1
            counts_low[1, b1] += 1


@jit
def merge_head(p0, p1, res, head, u):
    """The inverse of split_head for 2 or 4-byte words, with the residuals one per byte (a
    rANS-coded residual stream); p0, p1 are the low byte planes (unread, may be empty, for k = 2).
    32-bit arithmetic; no helper that takes arrays (it would count references per element)."""
    k = u.itemsize
    hs, rs, top = 8 * k - HEAD_BITS, 8 * k - HEAD_BITS - RES_BITS, 8 * k - 1
    for e in range(u.size):
        x = (np.uint32(head[e]) << hs) | (np.uint32(res[e]) << rs)
        if k == 4:
            x |= np.uint32(p0[e]) | (np.uint32(p1[e]) << 8)
        u[e] = (x >> 1) | ((x & 1) << top)


@jit
def merge_head_packed(p0, p1, packed, head, u):
    """merge_head reading the residuals bit-packed (a raw residual stream): four values per three
    bytes, so the unpacking costs no pass of its own."""
    k = u.itemsize
    hs, rs, top = 8 * k - HEAD_BITS, 8 * k - HEAD_BITS - RES_BITS, 8 * k - 1
    n = u.size
    g = n // 4
    for q in range(g):
        w = np.uint32(packed[3 * q]) | (np.uint32(packed[3 * q + 1]) << 8) | (np.uint32(packed[3 * q + 2]) << 16)
        for j in range(4):
            e = 4 * q + j
            x = (np.uint32(head[e]) << hs) | (((w >> (RES_BITS * j)) & RES_MASK) << rs)
            if k == 4:
                x |= np.uint32(p0[e]) | (np.uint32(p1[e]) << 8)
            u[e] = (x >> 1) | ((x & 1) << top)
    w = np.uint32(0)  # the tail: fewer than four values in the last 0-3 bytes
    for b in range(packed.size - 3 * g):
        w |= np.uint32(packed[3 * g + b]) << (8 * b)
    for e in range(4 * g, n):
        x = (np.uint32(head[e]) << hs) | (((w >> (RES_BITS * (e - 4 * g))) & RES_MASK) << rs)
        if k == 4:
            x |= np.uint32(p0[e]) | (np.uint32(p1[e]) << 8)
        u[e] = (x >> 1) | ((x & 1) << top)


@jit
def pack6(res, packed):
    """pack_bits(res, 6) into `packed`: one 24-bit word per four values, then the tail."""
    n = res.size
    g = n // 4
    for q in range(g):
        w = (np.uint32(res[4 * q]) | (np.uint32(res[4 * q + 1]) << 6) | (np.uint32(res[4 * q + 2]) << 12)
             | (np.uint32(res[4 * q + 3]) << 18))
        packed[3 * q] = w & 0xFF
        packed[3 * q + 1] = (w >> 8) & 0xFF
        packed[3 * q + 2] = w >> 16
    w = np.uint32(0)
    for j in range(n - 4 * g):
        w |= np.uint32(res[4 * g + j]) << (6 * j)
    for b in range(packed.size - 3 * g):
        packed[3 * g + b] = (w >> (8 * b)) & 0xFF
