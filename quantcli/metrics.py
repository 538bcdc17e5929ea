"""Error metrics. SQNR dB = 10 log10(sum x^2 / sum (x - x_hat)^2), `inf` when exact.

`sqnr_db` is total: an infinite error (a reconstruction holding inf) gives -inf, an undefined
ratio (NaN anywhere, or inf / inf) gives NaN; it never raises.

Sums are accumulated in float64 with numpy's pairwise summation (not BLAS), so they do not
depend on the thread count and an archive's recorded metrics are reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def sqnr_db(signal: float, error: float) -> float:
    if math.isnan(signal) or math.isnan(error) or math.isinf(signal) and math.isinf(error):
        return math.nan
    if error == 0:
        return math.inf
    ratio = signal / error
    if ratio == 0:  # no signal, an infinite error, or a ratio below the smallest float
        return -math.inf
    return 10.0 * math.log10(ratio)


def sum_squares(x: np.ndarray) -> float:
    flat = x.reshape(-1)
    return float(np.einsum("i,i->", flat, flat, dtype=np.float64, optimize=False)) if flat.size else 0.0


@dataclass(frozen=True)
class ErrorStats:
    """Sums that combine across tensors: the totals' SQNR is not a mean of per-tensor dBs."""

    count: int
    signal: float  # sum of x^2
    error: float  # sum of (x - x_hat)^2
    max_abs: float
    # importance-weighted sums (importance.py: the layer's output), 0 for tensors without statistics
    output_signal: float = 0.0
    output_error: float = 0.0

    @property
    def mse(self) -> float:
        return self.error / self.count if self.count else 0.0

    @property
    def sqnr_db(self) -> float:
        return sqnr_db(self.signal, self.error)

    @property
    def output_sqnr_db(self) -> float | None:
        """SQNR of the importance-weighted sums (the output's), None without statistics."""
        return sqnr_db(self.output_signal, self.output_error) if self.output_signal > 0 else None

    def __add__(self, other: "ErrorStats") -> "ErrorStats":
        return ErrorStats(self.count + other.count, self.signal + other.signal, self.error + other.error,
                          max(self.max_abs, other.max_abs), self.output_signal + other.output_signal,
                          self.output_error + other.output_error)


ZERO = ErrorStats(0, 0.0, 0.0, 0.0)


def measure(x: np.ndarray, x_hat: np.ndarray, *, consume: bool = False) -> ErrorStats:
    """Compare float32 `x` with its reconstruction; `consume=True` lets it overwrite `x_hat`."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    x_hat = np.asarray(x_hat, dtype=np.float32).reshape(-1)
    if consume and x_hat.flags.writeable and x_hat.flags.c_contiguous and not np.shares_memory(x, x_hat):
        err = np.subtract(x, x_hat, out=x_hat)
    else:
        err = np.subtract(x, x_hat)
    max_abs = float(max(err.max(), -err.min())) if err.size else 0.0
    return ErrorStats(int(x.size), sum_squares(x), sum_squares(err), max_abs)


def bits_per_weight(stored_bytes: int, count: int) -> float:
    return stored_bytes * 8.0 / count if count else 0.0


def archive_bits_per_weight(archive_bytes: int, kept_bytes: int, quantized: int) -> float:
    """Bits per quantized weight of a whole archive: every byte of the file (headers, manifest,
    scales, zero points, codebooks) except the arrays of tensors kept as they are, x 8 / weights.
    The one definition used by reports, the planner and budgets."""
    return 8.0 * (archive_bytes - kept_bytes) / quantized if quantized else 0.0
