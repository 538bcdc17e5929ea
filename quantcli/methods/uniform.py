"""Uniform (integer-grid) quantization: symmetric or asymmetric, per tensor, channel or group.

symmetric:  q in -(2^(b-1)-1) .. 2^(b-1)-1,  x_hat = q * scale,           scale = absmax / qmax
asymmetric: q in 0 .. 2^b-1,                 x_hat = (q - zero) * scale,  scale = (hi - lo) / (2^b - 1)
where lo = min(min(x), 0) and hi = max(max(x), 0), so zero is exactly representable and the zero
point is an integer in 0 .. 2^b-1 (stored as uint8). Stored codes are unsigned: a symmetric code
is stored as q + qmax. Blocks whose values are all zero get scale 0 and decode to exact zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..metrics import ErrorStats
from ..errors import ArchiveError, NonFiniteError
from ..spec import SCHEMES, Spec
from .base import (ArrayLayout, Encoding, block_min_max, group_width, matrix_shape, param, scale_shape, to_blocks,
                   to_float32)
from .blocks import BlockScaled
from .scales import store_scales
from .search import search_clip_ratios, uniform_qdq
from . import register


def qrange(bits: int, scheme: str) -> tuple[int, int]:
    """Smallest and largest integer level."""
    if scheme == "symmetric":
        qmax = 2 ** (bits - 1) - 1
        return -qmax, qmax
    return 0, 2**bits - 1


_CHUNK = 1 << 19  # values per chunk: the work buffer stays in cache across the passes over it


def block_range(m: np.ndarray, granularity: str, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pass 1 over the [rows, cols] view `m` (any float dtype, widened chunk by chunk): per-block
    float32 (min, max); per row for channel, one pair for tensor. A NaN or Inf anywhere shows up
    here and is refused."""
    rows, cols = m.shape
    grouped = granularity == "group"
    per_row = -(-cols // group_size) if grouped else 1
    step = max(1, _CHUNK // cols)
    lo = np.empty(rows * per_row, np.float32)
    hi = np.empty(rows * per_row, np.float32)
    for i in range(0, rows, step):
        f = to_float32(m[i:i + step])
        b = to_blocks(f, "group", group_size) if grouped else f
        lo[i * per_row:(i + len(b) // per_row) * per_row], hi[i * per_row:(i + len(b) // per_row) * per_row] = \
            block_min_max(b)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise NonFiniteError(int(np.count_nonzero(~np.isfinite(to_float32(m)))))
    if granularity == "tensor":
        lo, hi = lo.min(keepdims=True), hi.max(keepdims=True)
    return lo, hi


def scales_from_range(lo: np.ndarray, hi: np.ndarray, bits: int, scheme: str) -> tuple[np.ndarray, np.ndarray]:
    """(float32 scales, the low end used): the formulas of the module docstring, per block. A range
    wider than float32 gives an inf scale, which storing refuses (scales.py)."""
    qmax = qrange(bits, scheme)[1]
    if scheme != "symmetric":
        lo = np.minimum(lo, 0)
    with np.errstate(over="ignore"):
        s = (np.maximum(hi, -lo) if scheme == "symmetric" else np.maximum(hi, 0) - lo) / np.float32(qmax)
        # a range ending at float32's largest value: the rounded-up scale times qmax would be inf
        over = np.isinf(s * np.float32(qmax)) & np.isfinite(s)
    return (np.where(over, np.nextafter(s, np.float32(0)), s) if over.any() else s), lo


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
                 scale_search: bool = False, reconstruct: bool = True,
                 weights: np.ndarray | None = None) -> UniformResult:
    """Codes, scales and the error in two passes over cache-sized chunks of rows.

    `x` may be float32, bfloat16, float16 or float64: each chunk is widened to float32 where it
    is used, so no full-size float32 copy is made. Pass 1 finds every block's min and max (a NaN or
    Inf anywhere shows up there, and is refused); the scales follow. Pass 2 divides, rounds, clips,
    stores the codes, reconstructs and compares with x while the chunk is still in cache. `weights`
    (float32, the [rows, cols] view; --importance) weight the clipping search's error. On a
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
    per_row = -(-cols // group_size) if grouped else 1  # blocks per row in pass 2: groups, or the row itself
    step = max(1, _CHUNK // cols)

    def chunk_blocks(i: int) -> tuple[np.ndarray, np.ndarray]:
        """(the rows as float32, their blocks: [r * groups, group_size] or the rows themselves)."""
        f = to_float32(m[i:i + step])
        return f, (to_blocks(f, "group", group_size) if grouped else f)

    lo, hi = block_range(m, granularity, group_size)  # pass 1
    # float32 sums of squares of a chunk stay finite while |x| < 1e15 (1e30 x 2^19 values < 3.4e38)
    wide = max(float(hi.max()), -float(lo.min())) >= 1e15
    if scale_search:
        ratio = search_clip_ratios(to_blocks(to_float32(m), granularity, group_size), uniform_qdq(bits, scheme),
                                   weights=None if weights is None else to_blocks(weights, granularity, group_size))
        hi, lo = hi * ratio, lo * ratio
    scale, lo = scales_from_range(lo, hi, bits, scheme)
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
    width = group_width(group_size, cols) if grouped else cols
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
        assert zero is not None
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


@register
class Uniform(BlockScaled):
    name = "uniform"
    reads_narrow_floats = True  # widens bfloat16/float16 chunk by chunk, and refuses NaN/Inf itself
    options = BlockScaled.options | {"scheme"}

    def extra_params(self, spec: Spec) -> dict[str, Any]:
        return {"scheme": spec.scheme}

    def planner_candidates(self, level: str) -> list[Spec]:
        """Asymmetric 2-8 bits at g32/g64/g128 and per channel (cheap; covers every rate; "fast"
        leaves out g32). Symmetric is left out: with groups, asymmetric is as small and better."""
        groups = (64, 128) if level == "fast" else (32, 64, 128)
        out = []
        for bits in range(2, 9):
            out += [Spec(method=self.name, bits=bits, scheme="asymmetric", granularity="group", group_size=g)
                    for g in groups]
            out.append(Spec(method=self.name, bits=bits, scheme="asymmetric", granularity="channel"))
        return out

    def candidate_family(self, spec: Spec) -> str:
        scheme = " asym" if spec.scheme == "asymmetric" else ""
        grouping = f"g{spec.group_size}" if spec.granularity == "group" else spec.granularity
        return f"{self.name}{scheme} {grouping}"

    def extra_layout(self, params: dict[str, Any], sshape: tuple[int, ...]) -> dict[str, ArrayLayout]:
        scheme = param(params, "scheme", str, choices=SCHEMES)
        return {"zero": ArrayLayout(np.dtype(np.uint8), sshape)} if scheme == "asymmetric" else {}

    def block_scales(self, x: np.ndarray, spec: Spec, ratio: float | None = None) -> np.ndarray:
        m = np.asarray(x).reshape(matrix_shape(np.shape(x)))
        lo, hi = block_range(m, spec.granularity, spec.group_size)
        if ratio is None and spec.scale_search:
            r = search_clip_ratios(to_blocks(to_float32(m), spec.granularity, spec.group_size),
                                   uniform_qdq(spec.bits, spec.scheme))
            hi, lo = hi * r, lo * r
        elif ratio is not None and ratio != 1:
            hi, lo = hi * np.float32(ratio), lo * np.float32(ratio)
        return scales_from_range(lo, hi, spec.bits, spec.scheme)[0].astype(np.float32)

    def _core(self, x: np.ndarray, spec: Spec, weights: np.ndarray | None = None) -> tuple[Encoding, ErrorStats]:
        r = uniform_core(x, spec.bits, spec.scheme, spec.granularity, spec.group_size, spec.scale_dtype,
                         spec.scale_search, reconstruct=False, weights=weights)
        arrays = {"codes": r.codes.reshape(np.shape(x)), "scale": r.scales}
        if r.zeros is not None:
            arrays["zero"] = r.zeros
        params = {**self.params_for(np.shape(x), spec), "scale_dtype": r.scale_dtype}
        return Encoding(self.name, params, arrays), ErrorStats(int(np.size(x)), r.signal_sq, r.error_sq, r.error_max)

    def _encode(self, x: np.ndarray, spec: Spec) -> tuple[Encoding, np.ndarray | None]:
        return self._core(x, spec)[0], None

    def _encode_weighted(self, x: np.ndarray, spec: Spec, weights: np.ndarray) -> Encoding:
        return self._core(x, spec, weights)[0]

    def nearest_codes(self, y: np.ndarray, offset: np.ndarray | None, params: dict[str, Any]) -> np.ndarray:
        qmax = qrange(params["bits"], params["scheme"])[1]
        top = 2 * qmax if params["scheme"] == "symmetric" else qmax
        assert offset is not None  # uniform always has one: qmax (symmetric) or the zero point
        return np.clip(np.rint(y) + offset, 0, top).astype(np.uint8)

    def encode_measured(self, x: np.ndarray, spec: Spec) -> tuple[Encoding, ErrorStats]:
        """The error is measured while encoding, chunk by chunk: no reconstruction, no decode."""
        self.check_writable(tuple(np.shape(x)), spec)
        return self._core(x, spec)

    def dequant(self, codes: np.ndarray, enc: Encoding, nblocks: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Refuse what the encoder never writes: codes outside the level range (symmetric codes stop
        at 2*qmax), zero points beyond 2^bits - 1."""
        bits, scheme = enc.params["bits"], enc.params["scheme"]
        qmax = qrange(bits, scheme)[1]
        top = 2 * qmax if scheme == "symmetric" else qmax
        if codes.size and int(codes.max()) > top:
            raise ArchiveError(f"code {int(codes.max())} is outside the {scheme} {bits}-bit range 0..{top}")
        if scheme == "symmetric":
            return codes.astype(np.float32), np.full(nblocks, qmax, dtype=np.float32)
        zeros = enc.arrays["zero"]
        if zeros.size and int(zeros.max()) > qmax:
            raise ArchiveError(f"zero point {int(zeros.max())} is outside the {bits}-bit range 0..{qmax}")
        return codes.astype(np.float32), zeros.astype(np.float32).reshape(-1)

    def describe(self, params: dict[str, Any]) -> str:
        kind = "sym" if params["scheme"] == "symmetric" else "asym"
        return f"int{params['bits']} {kind} {self.where(params)}"
