"""Fixed non-uniform levels times an absmax scale: `log` (powers of two) and `nf` (normal float).

Both methods store, per block (tensor, channel or group, as for uniform), an absmax scale s, and
per value the index of the nearest entry of a fixed, sorted level table L in [-1, 1]:
x_hat = L[code] * s. Codes index the sorted table (code 0 is the most negative level) and are
bit-packed by the archive. The scale is stored rounded up (scales.py) so |x| / s <= 1 and nothing is clipped;
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

from ..errors import ArchiveError
from ..spec import Spec
from .base import Encoding, from_blocks, scale_shape, to_blocks
from .blocks import BlockScaled
from .scales import resolve_scale_dtype, round_up, store_scales
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


def levels_scales(blocks: np.ndarray, table: np.ndarray, granularity: str, scale_dtype: str,
                  scale_search: bool = False, ratio: float | None = None,
                  weights: np.ndarray | None = None) -> np.ndarray:
    """Float32 block scales before storage: absmax, times the searched clipping ratio with
    `scale_search` (the search quantizes with the scale as stored in the requested dtype), or
    times a fixed `ratio` when given. `weights` (blocks' shape) weight the search's error."""
    absmax = np.abs(blocks).max(axis=1) if blocks.shape[1] else np.zeros(blocks.shape[0], np.float32)
    absmax = absmax.astype(np.float32)
    if ratio is not None:
        return absmax if ratio == 1 else (absmax * np.float32(ratio)).astype(np.float32)
    if scale_search:
        name = resolve_scale_dtype(scale_dtype, granularity)

        def qdq(b: np.ndarray, ratio: np.ndarray) -> np.ndarray:
            s = (np.abs(b).max(axis=1) * ratio).astype(np.float32)
            stored = round_up(s, name)
            return _snap(b, s if stored is None else stored.astype(np.float32), table)[1]

        absmax = (absmax * search_clip_ratios(blocks, qdq, weights=weights)).astype(np.float32)
    return absmax


def levels_quantize(x: np.ndarray, table: np.ndarray, granularity: str, group_size: int,
                    scale_dtype: str, scale_search: bool = False, weights: np.ndarray | None = None):
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
    scales = levels_scales(blocks, table, granularity, scale_dtype, scale_search,
                           weights=None if weights is None else to_blocks(weights, granularity, group_size))
    stored, used = store_scales(scales, scale_dtype, granularity)
    codes, recon = _snap(blocks, stored.astype(np.float32), table)
    return (from_blocks(codes, shape), stored.reshape(scale_shape(shape, granularity, group_size)), used,
            from_blocks(recon, shape))


class _Levels(BlockScaled):
    """A fixed level table times a block scale; subclasses give `table(bits)`."""

    @abstractmethod
    def table(self, bits: int) -> np.ndarray:
        """The sorted level table in [-1, 1] for `bits` bits."""

    def _encode(self, x: np.ndarray, spec: Spec) -> tuple[Encoding, np.ndarray | None]:
        return self._levels(x, spec, None)

    def _encode_weighted(self, x: np.ndarray, spec: Spec, weights: np.ndarray) -> Encoding:
        return self._levels(x, spec, weights)[0]

    def _levels(self, x: np.ndarray, spec: Spec, weights: np.ndarray | None) -> tuple[Encoding, np.ndarray]:
        codes, scales, used, recon = levels_quantize(
            x, self.table(spec.bits), spec.granularity, spec.group_size, spec.scale_dtype, spec.scale_search,
            weights)
        params = {**self.params_for(x.shape, spec), "scale_dtype": used}
        return Encoding(self.name, params, {"codes": codes, "scale": scales}), recon

    def nearest_codes(self, y: np.ndarray, offset: np.ndarray | None, params: dict[str, Any]) -> np.ndarray:
        return nearest_level(y.astype(np.float32), self.table(params["bits"]))

    def block_scales(self, x: np.ndarray, spec: Spec, ratio: float | None = None) -> np.ndarray:
        blocks = to_blocks(np.asarray(x, dtype=np.float32), spec.granularity, spec.group_size)
        return levels_scales(blocks, self.table(spec.bits), spec.granularity, spec.scale_dtype,
                             spec.scale_search, ratio)

    def dequant(self, codes: np.ndarray, enc: Encoding, nblocks: int) -> tuple[np.ndarray, np.ndarray | None]:
        table = self.table(enc.params["bits"])
        if int(codes.max(initial=0)) >= table.size:
            raise ArchiveError(f"code {int(codes.max())} is outside the {table.size}-entry {self.name} table")
        return table[codes], None

    def describe(self, params: dict[str, Any]) -> str:
        return f"{self.name}{params['bits']} {self.where(params)}"


@register
class Log(_Levels):
    name = "log"

    def table(self, bits: int) -> np.ndarray:
        return log_levels(bits)


@register
class NormalFloat(_Levels):
    name = "nf"

    def table(self, bits: int) -> np.ndarray:
        return nf_levels(bits)

    def planner_candidates(self, level: str) -> list[Spec]:
        """2-5 bits at g32/g64/g128 (fixed normal-float levels, +0.6-0.9 dB over uniform at 4
        bits for ~4x its time); only at level "all" (ecsq takes those rates by 1-3 dB)."""
        if level != "all":
            return []
        return [Spec(method=self.name, bits=bits, granularity="group", group_size=g)
                for bits in range(2, 6) for g in (32, 64, 128)]
