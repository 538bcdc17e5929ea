"""Uniform (integer-grid) quantization: symmetric or asymmetric, per tensor, channel or group.

symmetric:  q in -(2^(b-1)-1) .. 2^(b-1)-1,  x_hat = q * scale,           scale = absmax / qmax
asymmetric: q in 0 .. 2^b-1,                 x_hat = (q - zero) * scale,  scale = (hi - lo) / (2^b - 1)
where lo = min(min(x), 0) and hi = max(max(x), 0), so zero is exactly representable and the zero
point is an integer in 0 .. 2^b-1 (stored as uint8). Stored codes are unsigned: a symmetric code
is stored as q + qmax. Blocks whose values are all zero get scale 0 and decode to exact zeros.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError
from ..packing import pack_bits, packed_nbytes, unpack_bits
from ..spec import GRANULARITIES, SCHEMES, Spec
from .base import (ArrayLayout, Encoding, Method, block_grid, from_blocks, matrix_shape, param,
                   scale_shape, to_blocks)
from .scales import STORAGE, store_scales
from . import register


def qrange(bits: int, scheme: str) -> tuple[int, int]:
    """Smallest and largest integer level."""
    if scheme == "symmetric":
        qmax = 2 ** (bits - 1) - 1
        return -qmax, qmax
    return 0, 2**bits - 1


def uniform_quantize(x: np.ndarray, bits: int, scheme: str = "symmetric", granularity: str = "tensor",
                     group_size: int = 128, scale_dtype: str = "float32"):
    """The math alone: integer levels (signed for symmetric), scales, zero points, reconstruction.

    Returns (q as int16 in the tensor's shape, stored scales, zero points or None, scale dtype,
    reconstruction float32). Example, the seed's 3x4 matrix at 8 bits per tensor:
    q[0] == [5, -25, 0, 51] and scales == [0.01968504].
    """
    qmin, qmax = qrange(bits, scheme)
    blocks = to_blocks(np.asarray(x, dtype=np.float32), granularity, group_size)
    hi = blocks.max(axis=1) if blocks.shape[1] else np.zeros(blocks.shape[0], np.float32)
    lo = blocks.min(axis=1) if blocks.shape[1] else np.zeros(blocks.shape[0], np.float32)
    if scheme == "symmetric":
        scale = np.maximum(hi, -lo) / np.float32(qmax)
    else:
        scale = (np.maximum(hi, 0) - np.minimum(lo, 0)) / np.float32(qmax)
    stored, used = store_scales(scale.astype(np.float32), scale_dtype, granularity)
    s = stored.astype(np.float32)
    safe = np.where(s > 0, s, np.float32(1))[:, None]
    q = blocks / safe  # all-zero blocks divide by 1 and stay zero
    zero = None
    if scheme == "asymmetric":
        zero = np.clip(np.rint(-np.minimum(lo, 0) / safe[:, 0]), 0, qmax).astype(np.float32)
        np.rint(q, out=q)
        q += zero[:, None]
    else:
        np.rint(q, out=q)
    np.clip(q, qmin, qmax, out=q)
    if zero is not None:
        recon = (q - zero[:, None]) * s[:, None]
    else:
        recon = q * s[:, None]
    shape = tuple(np.shape(x))
    zeros = None if zero is None else zero.astype(np.uint8).reshape(scale_shape(shape, granularity, group_size))
    stored = stored.reshape(scale_shape(shape, granularity, group_size))
    return (from_blocks(q, shape).astype(np.int16), stored, zeros, used, from_blocks(recon, shape))


@register
class Uniform(Method):
    name = "uniform"
    summary = "integer grid, 2-8 bits; symmetric or asymmetric; per tensor, channel or group"

    def check_spec(self, spec: Spec) -> None:
        if not 2 <= spec.bits <= 8:
            raise ConfigError(f"uniform quantization takes --bits 2 to 8, got {spec.bits}")

    def encode(self, x: np.ndarray, spec: Spec) -> Encoding:
        self.check_spec(spec)
        q, scales, zeros, used, recon = uniform_quantize(
            x, spec.bits, spec.scheme, spec.granularity, spec.group_size, spec.scale_dtype)
        offset = -qrange(spec.bits, spec.scheme)[0]
        codes = (q.reshape(-1) + offset).astype(np.uint8)
        arrays = {"codes": pack_bits(codes, spec.bits), "scale": scales}
        if zeros is not None:
            arrays["zero"] = zeros
        params: dict[str, Any] = {"bits": spec.bits, "scheme": spec.scheme, "granularity": spec.granularity,
                                  "scale_dtype": used}
        if spec.granularity == "group":
            params["group_size"] = spec.group_size
        return Encoding(self.name, params, arrays, reconstruction=recon)

    def layout(self, shape: tuple[int, ...], params: dict[str, Any]) -> dict[str, ArrayLayout]:
        bits = param(params, "bits", int, lo=2, hi=8)
        scheme = param(params, "scheme", str, choices=SCHEMES)
        granularity = param(params, "granularity", str, choices=GRANULARITIES)
        group_size = param(params, "group_size", int, lo=1) if granularity == "group" else 1
        scale_dtype = param(params, "scale_dtype", str, choices=tuple(STORAGE))
        n = int(np.prod(shape, dtype=np.int64))
        sshape = scale_shape(shape, granularity, group_size)
        out = {"codes": (np.dtype(np.uint8), (packed_nbytes(n, bits),)),
               "scale": (STORAGE[scale_dtype], sshape)}
        if scheme == "asymmetric":
            out["zero"] = (np.dtype(np.uint8), sshape)
        return out

    def decode(self, enc: Encoding, shape: tuple[int, ...]) -> np.ndarray:
        p = enc.params
        bits, scheme, granularity = p["bits"], p["scheme"], p["granularity"]
        group_size = p.get("group_size", 1)
        n = int(np.prod(shape, dtype=np.int64))
        codes = unpack_bits(enc.arrays["codes"], bits, n)
        rows, cols = matrix_shape(shape)
        nblocks, _ = block_grid(shape, granularity, group_size)
        s = enc.arrays["scale"].astype(np.float32).reshape(-1)
        if scheme == "symmetric":
            offset = np.full(nblocks, 2 ** (bits - 1) - 1, dtype=np.float32)
        else:
            offset = enc.arrays["zero"].astype(np.float32).reshape(-1)
        if granularity == "group" and cols % group_size:
            padded = np.zeros((rows, nblocks // max(rows, 1) * group_size), dtype=np.float32)
            padded[:, :cols] = codes.reshape(rows, cols)
            blocks = padded.reshape(nblocks, group_size)
        else:
            blocks = codes.reshape(nblocks, -1).astype(np.float32)
        blocks -= offset[:, None]
        blocks *= s[:, None]
        return from_blocks(blocks, shape)

    def describe(self, params: dict[str, Any]) -> str:
        where = {"tensor": "tensor", "channel": "channel"}.get(params["granularity"], f"g{params.get('group_size')}")
        kind = "sym" if params["scheme"] == "symmetric" else "asym"
        return f"int{params['bits']} {kind} {where}"
