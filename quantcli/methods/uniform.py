"""Uniform (integer-grid) quantization: symmetric or asymmetric, per tensor, channel or group.

symmetric:  q in -(2^(b-1)-1) .. 2^(b-1)-1,  x_hat = q * scale,           scale = absmax / qmax
asymmetric: q in 0 .. 2^b-1,                 x_hat = (q - zero) * scale,  scale = (hi - lo) / (2^b - 1)
where lo = min(min(x), 0) and hi = max(max(x), 0), so zero is exactly representable and the zero
point is an integer in 0 .. 2^b-1 (stored as uint8). Stored codes are unsigned: a symmetric code
is stored as q + qmax. Blocks whose values are all zero get scale 0 and decode to exact zeros.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ArchiveError, ConfigError
from ..packing import pack_bits, packed_nbytes, unpack_bits
from ..spec import GRANULARITIES, SCHEMES, Spec
from .base import (ArrayLayout, Encoding, Method, block_grid, block_min_max, from_blocks, matrix_shape, param,
                   scale_shape, to_blocks)
from .scales import STORAGE, resolve_scale_dtype, store_scales
from .search import search_clip_ratios, uniform_qdq
from . import register


def qrange(bits: int, scheme: str) -> tuple[int, int]:
    """Smallest and largest integer level."""
    if scheme == "symmetric":
        qmax = 2 ** (bits - 1) - 1
        return -qmax, qmax
    return 0, 2**bits - 1


def uniform_quantize(x: np.ndarray, bits: int, scheme: str = "symmetric", granularity: str = "tensor",
                     group_size: int = 128, scale_dtype: str = "float32", scale_search: bool = False):
    """The math alone: integer levels (signed for symmetric), scales, zero points, reconstruction.

    Returns (codes as stored: uint8 in the tensor's element order, the signed level for symmetric
    being code - qmax; stored scales; zero points or None; scale dtype used; reconstruction as
    float32 in the tensor's shape). Example, the seed's 3x4 matrix at 8 bits per tensor: codes[:4]
    - 127 == [5, -25, 0, 51] and scales == [0.01968504].

    One float32 work buffer is reused for levels and then the reconstruction: allocating fresh
    arrays (page faults) costs more than the arithmetic here.
    """
    qmin, qmax = qrange(bits, scheme)
    shape = tuple(np.shape(x))
    blocks = to_blocks(np.asarray(x, dtype=np.float32), granularity, group_size)
    lo, hi = block_min_max(blocks)
    if scale_search:  # shrink the range [lo, hi] by the per-block ratio with the least squared error
        ratio = search_clip_ratios(blocks, uniform_qdq(bits, scheme))
        hi, lo = hi * ratio, lo * ratio
    if scheme == "symmetric":
        scale = np.maximum(hi, -lo) / np.float32(qmax)
    else:
        lo = np.minimum(lo, 0)
        scale = (np.maximum(hi, 0) - lo) / np.float32(qmax)
    stored, used = store_scales(scale.astype(np.float32), scale_dtype, granularity)
    s = stored.astype(np.float32)[:, None]
    safe = np.where(s > 0, s, np.float32(1))  # all-zero blocks divide by 1 and stay zero
    work = np.divide(blocks, safe)
    np.rint(work, out=work)
    zero = None
    if scheme == "asymmetric":
        zero = np.clip(np.rint(-lo / safe[:, 0]), 0, qmax).astype(np.float32)[:, None]
        work += zero
    np.clip(work, qmin, qmax, out=work)
    kept = from_blocks(work, shape).reshape(-1)
    if scheme == "symmetric":
        codes = kept.astype(np.int8).view(np.uint8)
        codes += np.uint8(qmax)  # wraps modulo 256 onto q + qmax exactly
    else:
        codes = kept.astype(np.uint8)
        work -= zero
    work *= s
    zeros = None if zero is None else zero[:, 0].astype(np.uint8).reshape(scale_shape(shape, granularity, group_size))
    stored = stored.reshape(scale_shape(shape, granularity, group_size))
    return codes, stored, zeros, used, from_blocks(work, shape)


def _check_values(codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray | None, bits: int, scheme: str) -> None:
    """Refuse stored values the encoder never writes: codes outside the level range (symmetric codes
    stop at 2*qmax), zero points beyond 2^bits - 1, negative or non-finite scales."""
    top = 2 * (2 ** (bits - 1) - 1) if scheme == "symmetric" else 2**bits - 1
    if codes.size and int(codes.max()) > top:
        raise ArchiveError(f"code {int(codes.max())} is outside the {scheme} {bits}-bit range 0..{top}")
    if zeros is not None and zeros.size and int(zeros.max()) > 2**bits - 1:
        raise ArchiveError(f"zero point {int(zeros.max())} is outside the {bits}-bit range 0..{2**bits - 1}")
    if scales.size and not (np.isfinite(scales).all() and (scales >= 0).all()):
        raise ArchiveError("holds a negative or non-finite scale")


@register
class Uniform(Method):
    name = "uniform"
    summary = "integer grid, 2-8 bits; symmetric or asymmetric; per tensor, channel or group"

    def check_spec(self, spec: Spec) -> None:
        if not 2 <= spec.bits <= 8:
            raise ConfigError(f"uniform quantization takes --bits 2 to 8, got {spec.bits}")

    def params_for(self, shape: tuple[int, ...], spec: Spec, scale_dtype: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"bits": spec.bits, "scheme": spec.scheme, "granularity": spec.granularity,
                                  "scale_dtype": scale_dtype or resolve_scale_dtype(spec.scale_dtype, spec.granularity)}
        if spec.granularity == "group":
            params["group_size"] = spec.group_size
        if spec.scale_search:
            params["scale_search"] = True
        return params

    def encode(self, x: np.ndarray, spec: Spec) -> Encoding:
        self.check_spec(spec)
        codes, scales, zeros, used, recon = uniform_quantize(
            x, spec.bits, spec.scheme, spec.granularity, spec.group_size, spec.scale_dtype, spec.scale_search)
        arrays = {"codes": pack_bits(codes, spec.bits), "scale": scales}
        if zeros is not None:
            arrays["zero"] = zeros
        return Encoding(self.name, self.params_for(x.shape, spec, used), arrays, reconstruction=recon)

    def layout(self, shape: tuple[int, ...], params: dict[str, Any]) -> dict[str, ArrayLayout]:
        bits = param(params, "bits", int, lo=2, hi=8)
        scheme = param(params, "scheme", str, choices=SCHEMES)
        granularity = param(params, "granularity", str, choices=GRANULARITIES)
        group_size = param(params, "group_size", int, lo=1) if granularity == "group" else 1
        scale_dtype = param(params, "scale_dtype", str, choices=tuple(STORAGE))
        if "scale_search" in params:
            param(params, "scale_search", bool)
        n = math.prod(shape)
        sshape = scale_shape(shape, granularity, group_size)
        out = {"codes": (np.dtype(np.uint8), (packed_nbytes(n, bits),)),
               "scale": (STORAGE[scale_dtype], sshape)}
        if scheme == "asymmetric":
            out["zero"] = (np.dtype(np.uint8), sshape)
        return out

    def decode(self, enc: Encoding, shape: tuple[int, ...]) -> np.ndarray:
        p = enc.params
        bits, scheme, granularity = p["bits"], p["scheme"], p["granularity"]
        n = math.prod(shape)
        if n == 0:
            return np.zeros(shape, np.float32)
        rows, cols = matrix_shape(shape)
        # A group wider than the row is one block per row: never pad beyond the row itself.
        group_size = min(p.get("group_size", 1), max(cols, 1))
        codes = unpack_bits(enc.arrays["codes"], bits, n)
        nblocks, _ = block_grid(shape, granularity, group_size)
        s = enc.arrays["scale"].astype(np.float32).reshape(-1)
        _check_values(codes, s, enc.arrays.get("zero"), bits, scheme)
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
        return f"int{params['bits']} {kind} {where}" + (" search" if params.get("scale_search") else "")
