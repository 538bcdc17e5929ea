"""Numpy twin of quantcli/kernels/lut.py: each row's sum in subspace order from 0.0, in float32,
vectorised over rows (the order the kernels add in, so the floats are the same)."""

from __future__ import annotations

import numpy as np

KERNELS = ("gather_one", "gather_many", "pair_tables")


def gather_one(codes, lut, out):
    n, m_sub = codes.shape
    k = lut.shape[0] // m_sub
    acc = np.zeros(n, np.float32)
    for m in range(m_sub):
        acc += lut[m * k + codes[:, m].astype(np.int64)]
    out[:] = acc


def gather_many(codes, lut, out):
    n, m_sub = codes.shape
    acc = np.zeros((n, lut.shape[2]), np.float32)
    for m in range(m_sub):
        acc += lut[m, codes[:, m].astype(np.int64)]
    out[...] = acc


def pair_tables(lut, out):
    b, m_sub, k = lut.shape
    half = out.shape[1]
    wide = np.zeros((b, 2 * half, 16), np.float32)
    wide[:, :m_sub, :k] = lut
    out[...] = (wide[:, 0::2, None, :] + wide[:, 1::2, :, None]).reshape(b, half, 256)  # [.., hi, lo]
