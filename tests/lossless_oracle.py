"""Plain-numpy twins of quantcli/kernels/lossless.py: the oracles the numba kernels must
match bit for bit (tests/codecs/test_lossless_codec.py). Vectorised and slow on purpose: each is written
from the layout in docs/FORMAT.md 6.4, not from the kernel."""

from __future__ import annotations

import numpy as np

from quantcli.codecs.bitpack import pack_bits, unpack_bits

UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def rotl1(u: np.ndarray) -> np.ndarray:
    k = u.dtype.itemsize
    return (u << UINT[k](1)) | (u >> UINT[k](8 * k - 1))


def rotr1(u: np.ndarray) -> np.ndarray:
    k = u.dtype.itemsize
    return (u >> UINT[k](1)) | (u << UINT[k](8 * k - 1))


def split_planes(u: np.ndarray, rot: bool) -> tuple[np.ndarray, np.ndarray]:
    """([k, n] byte planes, [k, 256] histograms) of the words u."""
    k = u.dtype.itemsize
    planes = np.ascontiguousarray((rotl1(u) if rot else u).view(np.uint8).reshape(-1, k).T)
    return planes, np.array([np.bincount(p, minlength=256) for p in planes]).reshape(k, 256)


def merge_planes(planes: list[np.ndarray], rot: bool, dtype: np.dtype) -> np.ndarray:
    k = len(planes)
    u = np.stack(planes, axis=1).reshape(-1).view(UINT[k]) if planes[0].size else np.zeros(0, UINT[k])
    return (rotr1(u) if rot else u).astype(UINT[k])


def split_head(u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(low planes [k - 2, n], residuals, heads, and their histograms) of 2 or 4-byte words u."""
    k = u.dtype.itemsize
    U = UINT[k]
    r = rotl1(u)
    head = (r >> U(8 * k - 10)).astype(np.uint16)
    res = ((r >> U(8 * k - 16)) & U(63)).astype(np.uint8)
    low = np.ascontiguousarray(r.view(np.uint8).reshape(-1, k)[:, : k - 2].T)
    c_low = np.array([np.bincount(p, minlength=256) for p in low]).reshape(k - 2, 256)
    return low, res, head, c_low, np.bincount(res, minlength=64), np.bincount(head, minlength=1024)


def merge_head(low: list[np.ndarray], res: np.ndarray, head: np.ndarray, dtype: np.dtype) -> np.ndarray:
    k = np.dtype(dtype).itemsize
    U = UINT[k]
    r = (head.astype(U) << U(8 * k - 10)) | (res.astype(U) << U(8 * k - 16))
    for i, p in enumerate(low):
        r |= p.astype(U) << U(8 * i)
    return rotr1(r)


def pack6(res: np.ndarray) -> np.ndarray:
    return pack_bits(res, 6)


def unpack6(packed: np.ndarray, n: int) -> np.ndarray:
    return unpack_bits(packed, 6, n).astype(np.uint8)
