"""Narrow storage of side arrays (block scales and codebooks), one rule for every method.

A scale or codebook may be stored as float16 or bfloat16 to save bytes. `store_narrow` is the
only place that decides whether the requested narrow dtype can hold a tensor's values:

* values that would overflow (inf) in the narrow dtype, and, unless `subnormal="keep"`, nonzero
  values below its normal range (float16: 6.1e-5, where precision is lost) make the WHOLE array
  fall back to float32, and the dtype actually used is what the method records in its params
  (`scale_dtype` / `codebook_dtype`). This holds whether the narrow dtype was asked for explicitly
  (`--scale-dtype float16`) or chosen by `auto`: a request for fewer bytes never makes a tensor
  fail, and the archive always says what it holds.
* nothing non-finite is ever stored: if even float32 cannot hold a value (e.g. an asymmetric
  range wider than 3.4e38), the tensor is refused with an InputError.

Scales are rounded *up* (`rounding="up"`) and the codes are computed with the stored scale, so no
value is ever clipped by the rounding and |x - x_hat| <= scale / 2 holds for the scale actually
stored. Codebook levels are rounded to nearest and codes are assigned against the stored levels.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from ..errors import InputError

STORAGE = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16),
           "bfloat16": np.dtype(ml_dtypes.bfloat16)}


def resolve_scale_dtype(requested: str, granularity: str) -> str:
    """`auto` means float16 for group scales and float32 for tensor and channel scales.

    Group scales are numerous (one per 32-128 weights) so 16 bits saved per scale is worth
    0.125-0.5 bits per weight; a tensor or channel scale costs at most 32 / row-length bits per
    weight, so keeping it exact costs nothing measurable.
    """
    if requested != "auto":
        return requested
    return "float16" if granularity == "group" else "float32"


def _narrow(values: np.ndarray, name: str, up: bool, subnormal: str) -> np.ndarray | None:
    """`values` as the narrow dtype `name` (rounded up or to nearest), or None when it cannot hold them."""
    target = STORAGE[name]
    with np.errstate(over="ignore"):
        stored = values.astype(np.float32).astype(target)
    back = stored.astype(np.float32)
    if up:
        low = back < values
        if low.any():
            stored[low] = np.nextafter(stored[low], np.array(np.inf, dtype=target))
            back = stored.astype(np.float32)
    if not np.isfinite(back).all():
        return None
    if subnormal == "refuse":
        small = float(ml_dtypes.finfo(target).smallest_normal)
        if (np.abs(back[values != 0]) < small).any():
            return None
    return stored


def store_narrow(values: np.ndarray, name: str, *, rounding: str = "nearest",
                 subnormal: str = "refuse") -> tuple[np.ndarray, str]:
    """Values (float32 or float64, finite) for storage as dtype `name`: (stored array, dtype used).

    `rounding`: "up" (scales) or "nearest" (codebooks). `subnormal`: "refuse" falls back to float32
    when a nonzero value would be subnormal in the narrow dtype; "keep" only refuses overflow
    (pq codebooks, whose centroid components near zero are common and harmless in absolute terms).
    """
    if name != "float32":
        stored = _narrow(values, name, rounding == "up", subnormal)
        if stored is not None:
            return stored, name
    wide = values.astype(np.float32)
    if not np.isfinite(wide).all():
        raise InputError("has values whose scale or codebook does not fit float32; use another method")
    return wide, "float32"


def fits(values: np.ndarray, name: str, *, rounding: str = "nearest", subnormal: str = "refuse") -> bool:
    """Whether `store_narrow` keeps dtype `name` for `values` (without raising for float32)."""
    return name == "float32" or _narrow(values, name, rounding == "up", subnormal) is not None


def round_up(scale: np.ndarray, dtype_name: str) -> np.ndarray | None:
    """`scale` (float32, >= 0) as `dtype_name`, each rounded up; None if a value does not fit."""
    if dtype_name == "float32":
        return scale.astype(np.float32)
    return _narrow(scale, dtype_name, True, "refuse")


def store_scales(scale: np.ndarray, requested: str, granularity: str) -> tuple[np.ndarray, str]:
    """Round block scales (float32, >= 0) for storage: (stored array, dtype name actually used)."""
    return store_narrow(scale, resolve_scale_dtype(requested, granularity), rounding="up")
