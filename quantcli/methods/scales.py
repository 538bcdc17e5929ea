"""Storing per-block scales compactly without breaking the error bound.

A scale stored in float16 or bfloat16 is rounded *up* to the next representable value, and the
codes are computed with that stored scale, so no value is ever clipped by the rounding and the
bound |x - x_hat| <= scale / 2 holds for the scale that is actually stored.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

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


def round_up(scale: np.ndarray, dtype_name: str) -> np.ndarray | None:
    """`scale` (float32, >= 0) as `dtype_name`, each rounded up; None if a value does not fit.

    float16 cannot hold scales above 65504 nor keep precision below its normal range (6.1e-5);
    the caller falls back to float32 for the tensor then.
    """
    target = STORAGE[dtype_name]
    if target == np.float32:
        return scale.astype(np.float32)
    with np.errstate(over="ignore"):
        stored = scale.astype(target)
    back = stored.astype(np.float32)
    low = back < scale
    if low.any():
        stored[low] = np.nextafter(stored[low], np.array(np.inf, dtype=target))
        back = stored.astype(np.float32)
    finfo = ml_dtypes.finfo(target)
    nonzero = scale > 0
    if not np.isfinite(back).all() or (back[nonzero] < float(finfo.smallest_normal)).any():
        return None
    return stored


def store_scales(scale: np.ndarray, requested: str, granularity: str) -> tuple[np.ndarray, str]:
    """Round scales for storage; returns (stored array, dtype name actually used)."""
    name = resolve_scale_dtype(requested, granularity)
    stored = round_up(scale, name)
    if stored is None:
        name, stored = "float32", scale.astype(np.float32)
    return stored, name
