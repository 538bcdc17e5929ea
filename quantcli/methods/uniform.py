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
from ..errors import ArchiveError, ConfigError, NonFiniteError
from ..packing import pack_bits, packed_nbytes, unpack_bits
from ..spec import GRANULARITIES, SCHEMES, Spec
from .base import (ArrayLayout, Encoding, Method, block_grid, block_min_max, from_blocks, matrix_shape, param, to_float32,
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
    """Codes, scales and the error in two passes over cache-sized chunks of rows.

    `x` may be float32, bfloat16, float16 or float64: each chunk is widened to float32 where it
    is used, so no full-size float32 copy is made. Pass 1 finds every block's min and max (a NaN or
    Inf anywhere shows up there, and is refused); the scales follow. Pass 2 divides, rounds, clips,
    stores the codes, reconstructs and compares with x while the chunk is still in cache. On a
    machine whose memory bandwidth one core can saturate, the bytes moved are the cost: this reads
    each value twice in its own width and writes one code.
    """
    qmin, qmax = qrange(bits, scheme)
    shape = tuple(np.shape(x))
    rows, cols = matrix_shape(shape)
    sshape = scale_shape(shape, granularity, group_size)
    if rows * cols == 0:
        stored, used = store_scales(np.zeros(sshape, np.float32).reshape(-1), scale_dtype, granularity)
        zeros = np.zeros(sshape, np.uint8) if scheme == "asymmetric" else None
        return UniformResult(np.zeros(0, np.uint8), stored.reshape(sshape), zeros, used,
                             np.zeros(shape, np.float32) if reconstruct else None, 0.0, 0.0, 0.0)
    m = np.asarray(x).reshape(rows, cols)
    grouped = granularity == "group"
    groups = -(-cols // group_size) if grouped else 1
    per_row = groups  # blocks per row in pass 2: groups, or the row itself
    step = max(1, _CHUNK // cols)

    def chunk_blocks(i: int) -> tuple[np.ndarray, np.ndarray]:
        """(the rows as float32, their blocks: [r * groups, group_size] or the rows themselves)."""
        f = to_float32(m[i:i + step])
        return f, (to_blocks(f, "group", group_size) if grouped else f)

    # pass 1: per-block (per-row for tensor and channel) min and max
    lo = np.empty(rows * per_row, np.float32)
    hi = np.empty(rows * per_row, np.float32)
    for i in range(0, rows, step):
        _, b = chunk_blocks(i)
        lo[i * per_row:(i + len(b) // per_row) * per_row], hi[i * per_row:(i + len(b) // per_row) * per_row] = \
            block_min_max(b)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise NonFiniteError(int(np.count_nonzero(~np.isfinite(to_float32(m)))))
    if granularity == "tensor":
        lo, hi = lo.min(keepdims=True), hi.max(keepdims=True)
    # float32 sums of squares of a chunk stay finite while |x| < 1e15 (1e30 x 2^19 values < 3.4e38)
    wide = max(float(hi.max()), -float(lo.min())) >= 1e15
    if scale_search:  # shrink the range [lo, hi] by the per-block ratio with the least squared error
        ratio = search_clip_ratios(to_blocks(to_float32(m), granularity, group_size), uniform_qdq(bits, scheme))
        hi, lo = hi * ratio, lo * ratio
    if scheme == "symmetric":
        scale = np.maximum(hi, -lo) / np.float32(qmax)
    else:
        lo = np.minimum(lo, 0)
        scale = (np.maximum(hi, 0) - lo) / np.float32(qmax)
    stored, used = store_scales(scale.astype(np.float32), scale_dtype, granularity)
    s = stored.astype(np.float32)
    safe = np.where(s > 0, s, np.float32(1))  # all-zero blocks divide by 1 and stay zero
    zero = np.clip(np.rint(-lo / safe), 0, qmax).astype(np.float32) if scheme == "asymmetric" else None
    if granularity == "tensor":  # pass 2 works per row: every row carries the tensor's scale
        s, safe = np.repeat(s, rows), np.repeat(safe, rows)
        zero = None if zero is None else np.repeat(zero, rows)

    # pass 2: quantize, store codes, measure
    codes = np.empty((rows, cols), np.uint8)
    recon = np.empty((rows, cols), np.float32) if reconstruct else None
    width = group_size if grouped else cols
    work = np.empty((min(step, rows) * per_row, width), np.float32)  # reused: no page faults per chunk
    square = np.empty((min(step, rows), cols), np.float32)
    error_sq, error_max, signal_sq = 0.0, 0.0, 0.0
    for i in range(0, rows, step):  # a loop over chunks of ~512k values, not over values
        f, b = chunk_blocks(i)
        r = len(f)
        k = slice(i * per_row, (i + r) * per_row)
        w = np.divide(b, safe[k, None], out=work[:len(b)])
        np.rint(w, out=w)
        if zero is not None:
            w += zero[k, None]
        np.clip(w, qmin, qmax, out=w)
        c = w.astype(np.int8 if zero is None else np.uint8).view(np.uint8)
        if zero is None:
            c += np.uint8(qmax)  # wraps modulo 256 onto q + qmax exactly
        else:
            w -= zero[k, None]
        w *= s[k, None]
        codes[i:i + r] = c.reshape(r, -1)[:, :cols]
        if recon is not None:
            recon[i:i + r] = w.reshape(r, -1)[:, :cols]
        np.subtract(b, w, out=w)  # padding is zero in both: no error there
        # float32 pairwise sums per chunk (relative error ~1e-6, no BLAS: the same bits for any
        # thread count), added up in float64 across chunks
        error_max = max(error_max, float(w.max()), float(-w.min()))
        if wide:  # squares would overflow float32: accumulate in float64 instead
            error_sq += float(np.einsum("ij,ij->", w, w, dtype=np.float64))
            signal_sq += float(np.einsum("ij,ij->", f, f, dtype=np.float64))
        else:
            error_sq += float(np.multiply(w, w, out=w).sum())
            signal_sq += float(np.multiply(f, f, out=square[:r]).sum())
    zeros = None
    if scheme == "asymmetric":
        zeros = (zero[:1] if granularity == "tensor" else zero).astype(np.uint8).reshape(sshape)
    return UniformResult(codes.reshape(-1), stored.reshape(sshape), zeros, used,
                         None if recon is None else recon.reshape(shape), error_sq, error_max, signal_sq)


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
    reads_narrow_floats = True  # widens bfloat16/float16 chunk by chunk, and refuses NaN/Inf itself
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
