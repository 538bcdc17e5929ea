"""Uniform (integer-grid) quantization: symmetric or asymmetric, per tensor, channel or group.

symmetric:  q in -(2^(b-1)-1) .. 2^(b-1)-1,  x_hat = q * scale,           scale = absmax / qmax
asymmetric: q in 0 .. 2^b-1,                 x_hat = (q - zero) * scale,  scale = (hi - lo) / (2^b - 1)
where lo = min(min(x), 0) and hi = max(max(x), 0), so zero is exactly representable and the zero
point is an integer in 0 .. 2^b-1 (stored as uint8). Stored codes are unsigned: a symmetric code
is stored as q + qmax. Blocks whose values are all zero get scale 0 and decode to exact zeros.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..metrics import ErrorStats
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


_CHUNK = 1 << 19  # values per chunk: the work buffer stays in cache across the passes over it


@dataclass
class UniformResult:
    codes: np.ndarray  # uint8, the tensor's element order; symmetric level = code - qmax
    scales: np.ndarray  # as stored
    zeros: np.ndarray | None  # uint8 zero points (asymmetric)
    scale_dtype: str
    reconstruction: np.ndarray | None  # float32, the tensor's shape (when asked for)
    error_sq: float  # sum of (x - x_hat)^2, float64 accumulation
    error_max: float  # max |x - x_hat|
    signal_sq: float  # sum of x^2


def uniform_core(x: np.ndarray, bits: int, scheme: str, granularity: str, group_size: int, scale_dtype: str,
                 scale_search: bool = False, reconstruct: bool = True) -> UniformResult:
    """Codes, scales and the error, computed in cache-sized chunks of blocks with one reused work
    buffer: each chunk is divided, rounded, clipped, stored as codes, reconstructed and compared
    with x while it is still in cache. Without `reconstruct` no full-size float array is made at
    all, which is what makes int8 encoding run at memory speed."""
    qmin, qmax = qrange(bits, scheme)
    shape = tuple(np.shape(x))
    blocks = to_blocks(np.asarray(x, dtype=np.float32), granularity, group_size)
    lo, hi = block_min_max(blocks)
    # float32 sums of squares of a chunk stay finite while |x| < 1e15 (1e30 x 2^17 values < 3.4e38)
    wide = bool(lo.size) and max(float(np.max(hi)), -float(np.min(lo))) >= 1e15
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
    zero = None
    if scheme == "asymmetric":
        zero = np.clip(np.rint(-lo / safe[:, 0]), 0, qmax).astype(np.float32)[:, None]
    nblocks, width = blocks.shape
    codes = np.empty((nblocks, width), np.uint8)
    recon = np.empty((nblocks, width), np.float32) if reconstruct else None
    step = max(1, _CHUNK // max(width, 1))
    work = np.empty((min(step, nblocks), width), np.float32)
    square = np.empty_like(work)
    error_sq, error_max, signal_sq = 0.0, 0.0, 0.0
    for i in range(0, nblocks, step):  # a loop over chunks of ~64k values, not over values
        b = blocks[i:i + step]
        w = work[:len(b)]
        np.divide(b, safe[i:i + step], out=w)
        np.rint(w, out=w)
        if zero is not None:
            w += zero[i:i + step]
        np.clip(w, qmin, qmax, out=w)
        c = codes[i:i + step]
        if zero is None:
            c.view(np.int8)[...] = w  # exact: w holds integers in -qmax..qmax
            c += np.uint8(qmax)  # wraps modulo 256 onto q + qmax exactly
        else:
            c[...] = w
            w -= zero[i:i + step]
        w *= s[i:i + step]
        if recon is not None:
            recon[i:i + step] = w
        np.subtract(b, w, out=w)
        if w.size:
            # float32 pairwise sums per chunk (relative error ~1e-6, no BLAS: the same bits for any
            # thread count), added up in float64 across chunks
            error_max = max(error_max, float(w.max()), float(-w.min()))
            if wide:  # squares would overflow float32: accumulate in float64 instead
                error_sq += float(np.einsum("ij,ij->", w, w, dtype=np.float64))
                signal_sq += float(np.einsum("ij,ij->", b, b, dtype=np.float64))
            else:
                sq = square[:len(b)]
                error_sq += float(np.multiply(w, w, out=sq).sum())
                signal_sq += float(np.multiply(b, b, out=sq).sum())
    zeros = None if zero is None else zero[:, 0].astype(np.uint8).reshape(scale_shape(shape, granularity, group_size))
    return UniformResult(from_blocks(codes, shape).reshape(-1), stored.reshape(scale_shape(shape, granularity, group_size)),
                         zeros, used, None if recon is None else from_blocks(recon, shape), error_sq, error_max,
                         signal_sq)


def uniform_quantize(x: np.ndarray, bits: int, scheme: str = "symmetric", granularity: str = "tensor",
                     group_size: int = 128, scale_dtype: str = "float32", scale_search: bool = False):
    """The math alone: (codes, stored scales, zero points or None, scale dtype used, reconstruction).

    Codes are as stored: uint8 in the tensor's element order, the signed level for symmetric being
    code - qmax. Example, the seed's 3x4 matrix at 8 bits per tensor: codes[:4] - 127 ==
    [5, -25, 0, 51] and scales == [0.01968504].
    """
    r = uniform_core(x, bits, scheme, granularity, group_size, scale_dtype, scale_search, reconstruct=True)
    return r.codes, r.scales, r.zeros, r.scale_dtype, r.reconstruction


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
        r = uniform_core(x, spec.bits, spec.scheme, spec.granularity, spec.group_size, spec.scale_dtype,
                         spec.scale_search, reconstruct=False)
        arrays = {"codes": pack_bits(r.codes, spec.bits), "scale": r.scales}
        if r.zeros is not None:
            arrays["zero"] = r.zeros
        error = ErrorStats(int(x.size), r.signal_sq, r.error_sq, r.error_max)
        return Encoding(self.name, self.params_for(x.shape, spec, r.scale_dtype), arrays, error=error)

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
