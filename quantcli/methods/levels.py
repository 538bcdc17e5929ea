"""Fixed non-uniform levels times an absmax scale: `log` (powers of two) and `nf` (normal float).

Both methods store, per block (tensor, channel or group, as for uniform), an absmax scale s, and
per value the index of the nearest entry of a fixed, sorted level table L in [-1, 1]:
x_hat = L[code] * s. Codes index the sorted table (code 0 is the most negative level) and are
bit-packed. The scale is stored rounded up (scales.py) so |x| / s <= 1 and nothing is clipped;
the error is at most s * (largest gap between adjacent levels) / 2. With `--scale-search` the
scale is absmax times a searched clipping ratio (search.py) and values beyond it are clipped.

log, b bits (2-8): zero and +-2^0, +-2^-1, ..., +-2^-(m-1) with m = 2^(b-1) - 1 magnitudes, i.e.
2^b - 1 levels (the top code is unused, as in symmetric uniform). Tables:
  2 bits: 0, +-1
  3 bits: 0, +-1, +-1/2, +-1/4
  4 bits: 0, +-1, +-1/2, ..., +-1/64          (7 magnitudes)
  5 bits: 0, +-1, ..., +-2^-14                (15 magnitudes)
  b bits: 0, +-1, ..., +-2^-(2^(b-1)-2)
More precision near zero than a uniform grid; the price is a coarse top octave (gap 1/2).

nf, b bits (2-8): the QLoRA NF4 construction generalised. 2^(b-1) positive levels are the
standard-normal quantiles Phi^-1(p) at p evenly spaced from `offset` down to 1/2 (the last,
p = 1/2, dropped), 2^(b-1) - 1 negative levels likewise, plus an exact zero; each side is divided
by Phi^-1(offset) so the table spans [-1, 1]. offset = 1 - (1/(2(2^b - 1)) + 1/(2^(b+1))) / 2,
the mean of the two half-step positions for 2^b - 1 and 2^b bins (0.9677 for 4 bits), keeps the
extreme quantile finite. The asymmetry (one more positive level) buys an exact zero with 2^b codes.
The 4-bit table (equal to NF4 to 4 decimals):
  -1.0000 -0.6962 -0.5251 -0.3949 -0.2844 -0.1848 -0.0910  0.0000
   0.0796  0.1609  0.2461  0.3379  0.4407  0.5626  0.7230  1.0000
Gaussian-shaped weights put equal probability mass in each cell, which is what minimises the
error when the scale is a block absmax.
"""

from __future__ import annotations

from abc import abstractmethod
from functools import lru_cache
from statistics import NormalDist
from typing import Any

import numpy as np

from ..errors import ArchiveError, ConfigError
from ..packing import pack_bits, packed_nbytes, unpack_bits
from ..spec import GRANULARITIES, Spec
from .base import (ArrayLayout, Encoding, Method, block_grid, from_blocks, matrix_shape, param,
                   scale_shape, to_blocks)
from .scales import STORAGE, resolve_scale_dtype, round_up, store_scales
from .search import search_clip_ratios
from . import register


@lru_cache(maxsize=None)
def log_levels(bits: int) -> np.ndarray:
    """Sorted log table for `bits` (2-8): zero and +-2^-k, k = 0 .. 2^(b-1) - 2 (float32)."""
    mags = np.ldexp(np.float32(1), -np.arange(2 ** (bits - 1) - 1)).astype(np.float32)
    table = np.concatenate([-mags, [np.float32(0)], mags[::-1]]).astype(np.float32)
    table.setflags(write=False)
    return table


@lru_cache(maxsize=None)
def nf_levels(bits: int) -> np.ndarray:
    """Sorted normal-float table for `bits` (2-8), 2^b entries in [-1, 1] with an exact zero."""
    half = 2 ** (bits - 1)
    offset = 1 - (1 / (2 * (2**bits - 1)) + 1 / (2 ** (bits + 1))) / 2
    inv = NormalDist().inv_cdf
    top = inv(offset)
    pos = [inv(p) / top for p in np.linspace(offset, 0.5, half + 1)[:-1]]
    neg = [-inv(p) / top for p in np.linspace(offset, 0.5, half)[:-1]]
    table = np.sort(np.array(pos + [0.0] + neg, dtype=np.float64)).astype(np.float32)
    table[0], table[-1] = -1.0, 1.0
    table.setflags(write=False)
    return table


def nearest_level(y: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Index of the nearest entry of sorted `table` for each value of `y` (ties go to the lower).

    Binary search on the midpoints, so values beyond the ends map to the end levels (clipping).
    """
    mids = (table[1:] + table[:-1]) / np.float32(2)
    return np.searchsorted(mids, y, side="left").astype(np.uint16 if table.size > 256 else np.uint8)


def _snap(blocks: np.ndarray, scale: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes, reconstruction) of blocks [n, w] with per-block scales [n] (zero scale -> zeros)."""
    safe = np.where(scale > 0, scale, np.float32(1))[:, None]
    codes = nearest_level(blocks / safe, table)
    recon = table[codes] * np.where(scale > 0, scale, np.float32(0))[:, None]
    return codes, recon


def levels_quantize(x: np.ndarray, table: np.ndarray, granularity: str, group_size: int,
                    scale_dtype: str, scale_search: bool = False):
    """The math alone: (codes uint8 in x's shape, stored scales, scale dtype used, reconstruction).

    Example, nf 4 bits per tensor on the seed's 3x4 matrix: scale 2.5, and 1.0 (0.4 of the
    scale) maps to the level 0.4407, so it reconstructs as 1.1017.
    """
    x = np.asarray(x, dtype=np.float32)
    shape = tuple(x.shape)
    if x.size == 0:  # nothing to quantize: empty codes, zero scales of the declared shape
        stored, used = store_scales(np.zeros(scale_shape(shape, granularity, group_size), np.float32),
                                    scale_dtype, granularity)
        return np.zeros(shape, np.uint8), stored, used, x.copy()
    blocks = to_blocks(x, granularity, group_size)
    absmax = np.abs(blocks).max(axis=1) if blocks.shape[1] else np.zeros(blocks.shape[0], np.float32)
    absmax = absmax.astype(np.float32)
    if scale_search:
        name = resolve_scale_dtype(scale_dtype, granularity)

        def qdq(b: np.ndarray, ratio: np.ndarray) -> np.ndarray:
            s = (np.abs(b).max(axis=1) * ratio).astype(np.float32)
            stored = round_up(s, name)
            return _snap(b, s if stored is None else stored.astype(np.float32), table)[1]

        absmax = (absmax * search_clip_ratios(blocks, qdq)).astype(np.float32)
    stored, used = store_scales(absmax, scale_dtype, granularity)
    codes, recon = _snap(blocks, stored.astype(np.float32), table)
    return (from_blocks(codes, shape), stored.reshape(scale_shape(shape, granularity, group_size)), used,
            from_blocks(recon, shape))


class _Levels(Method):
    """Shared encode/decode/layout for the fixed-table methods; subclasses give `table(bits)`."""

    @abstractmethod
    def table(self, bits: int) -> np.ndarray:
        """The sorted level table in [-1, 1] for `bits` bits."""

    def check_spec(self, spec: Spec) -> None:
        if not 2 <= spec.bits <= 8:
            raise ConfigError(f"{self.name} quantization takes --bits 2 to 8, got {spec.bits}")

    def encode(self, x: np.ndarray, spec: Spec) -> Encoding:
        self.check_spec(spec)
        codes, scales, used, recon = levels_quantize(
            x, self.table(spec.bits), spec.granularity, spec.group_size, spec.scale_dtype, spec.scale_search)
        params = {**self.params_for(x.shape, spec), "scale_dtype": used}
        arrays = {"codes": pack_bits(codes.reshape(-1), spec.bits), "scale": scales}
        return Encoding(self.name, params, arrays, reconstruction=recon)

    def params_for(self, shape: tuple[int, ...], spec: Spec) -> dict[str, Any]:
        params: dict[str, Any] = {"bits": spec.bits, "granularity": spec.granularity,
                                  "scale_dtype": resolve_scale_dtype(spec.scale_dtype, spec.granularity)}
        if spec.granularity == "group":
            params["group_size"] = spec.group_size
        if spec.scale_search:
            params["scale_search"] = True
        return params

    def layout(self, shape: tuple[int, ...], params: dict[str, Any]) -> dict[str, ArrayLayout]:
        bits = param(params, "bits", int, lo=2, hi=8)
        granularity = param(params, "granularity", str, choices=GRANULARITIES)
        group_size = param(params, "group_size", int, lo=1) if granularity == "group" else 1
        scale_dtype = param(params, "scale_dtype", str, choices=tuple(STORAGE))
        if "scale_search" in params:
            param(params, "scale_search", bool)
        n = int(np.prod(shape, dtype=np.int64))
        return {"codes": (np.dtype(np.uint8), (packed_nbytes(n, bits),)),
                "scale": (STORAGE[scale_dtype], scale_shape(shape, granularity, group_size))}

    def decode(self, enc: Encoding, shape: tuple[int, ...]) -> np.ndarray:
        p = enc.params
        bits, granularity, group_size = p["bits"], p["granularity"], p.get("group_size", 1)
        table = self.table(bits)
        n = int(np.prod(shape, dtype=np.int64))
        codes = unpack_bits(enc.arrays["codes"], bits, n)
        if n == 0:
            return np.zeros(shape, np.float32)
        if int(codes.max(initial=0)) >= table.size:
            raise ArchiveError(f"code {int(codes.max())} is outside the {table.size}-entry {self.name} table")
        rows, cols = matrix_shape(shape)
        nblocks, _ = block_grid(shape, granularity, group_size)
        values = table[codes]
        if granularity == "group" and cols % group_size:
            padded = np.zeros((rows, nblocks // max(rows, 1) * group_size), dtype=np.float32)
            padded[:, :cols] = values.reshape(rows, cols)
            blocks = padded.reshape(nblocks, group_size)
        else:
            blocks = values.reshape(nblocks, -1)
        blocks = blocks * enc.arrays["scale"].astype(np.float32).reshape(-1)[:, None]
        return from_blocks(blocks, shape)

    def describe(self, params: dict[str, Any]) -> str:
        where = {"tensor": "tensor", "channel": "channel"}.get(params["granularity"], f"g{params.get('group_size')}")
        return f"{self.name}{params['bits']} {where}" + (" search" if params.get("scale_search") else "")


@register
class Log(_Levels):
    name = "log"
    summary = "signed powers of two times an absmax scale, 2-8 bits; per tensor, channel or group"

    def table(self, bits: int) -> np.ndarray:
        return log_levels(bits)


@register
class NormalFloat(_Levels):
    name = "nf"
    summary = "normal-float levels (NF4-style quantiles) times an absmax scale, 2-8 bits"

    def table(self, bits: int) -> np.ndarray:
        return nf_levels(bits)
