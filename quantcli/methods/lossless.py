"""Lossless: a float tensor stored bit for bit in its own dtype, entropy-coded in the archive.

The method itself changes nothing: its one logical array `values` is the tensor as it is (float64,
float32, float16 or bfloat16), and its params record that dtype. The size comes from storage: the
method is `entropy_coded`, so the archive stores `values` through the lossless codec (for float32 and
bfloat16 the exponent and two top mantissa bits rANS-coded as one symbol, the rest bit-packed or in
byte planes; quantcli/codecs/lossless.py) whenever that is smaller than the raw bytes.

NaN and Inf values are accepted and kept, payloads included: nothing is rounded, so the reason the
other methods refuse them (a scale or codebook cannot represent them) does not apply here. The
recorded error is zero; the signal (sum of squares) counts finite values only, so a run's total
SQNR stays a number.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ArchiveError, InputError
from ..metrics import ErrorStats, sum_squares
from ..io.safetensors import DTYPES, FLOAT_CODES, dtype_code
from ..spec import Spec
from .base import ANY, ArrayLayout, Encoding, Method, param, to_float32
from . import register

FLOATS = tuple(sorted(FLOAT_CODES))
CHUNK = 1 << 20  # elements per step of the signal sum: bounds the float32 copy of a narrow chunk


def float_code(x: np.ndarray) -> str:
    """The safetensors code of `x`'s dtype; InputError for anything but F64/F32/F16/BF16."""
    try:
        code = dtype_code(x.dtype)
    except InputError:
        code = ""
    if code not in FLOAT_CODES:
        raise InputError(f"method lossless stores float tensors ({', '.join(FLOATS)}), not {x.dtype}")
    return code


def finite_sum_squares(x: np.ndarray) -> float:
    """Sum of squares in float64 over the finite values, chunk by chunk (no full-size copy)."""
    flat = x.reshape(-1)
    total = 0.0
    for i in range(0, flat.size, CHUNK):  # a loop over 1M-element chunks, not over values
        c = flat[i:i + CHUNK]
        c = c if c.dtype == np.float64 else to_float32(c)
        s = sum_squares(c)
        if not np.isfinite(s):  # a NaN/Inf value, or (float64) squares beyond float64's range
            s = sum_squares(np.where(np.isfinite(c), c, 0))
        total += s
    return total


@register
class Lossless(Method):
    name = "lossless"
    entropy_coded = True
    reads_narrow_floats = True  # takes any float dtype as it is; never refuses NaN/Inf
    value_rules = {"values": ANY}  # the data itself, NaN and Inf included, bit for bit
    exact = True  # the whole input file comes back byte for byte (archive/original.py)

    def _encode(self, x: np.ndarray, spec: Spec) -> tuple[Encoding, np.ndarray | None]:
        values = np.require(x, requirements="C")  # ascontiguousarray would make a 0-d array 1-d
        return Encoding(self.name, {"dtype": float_code(values)}, {"values": values}), values

    def encode_measured(self, x: np.ndarray, spec: Spec) -> tuple[Encoding, ErrorStats]:
        """Exact by construction: error zero, measured without decoding."""
        self.check_spec(spec)
        enc, _ = self._encode(x, spec)
        return enc, ErrorStats(int(np.size(x)), finite_sum_squares(enc.arrays["values"]), 0.0, 0.0)

    def decode(self, enc: Encoding, shape: tuple[int, ...]) -> np.ndarray:
        """The stored values in their own dtype (not float32): bit for bit the original tensor."""
        values = enc.arrays["values"]
        want = DTYPES[param(enc.params, "dtype", str, choices=FLOATS)]
        if values.dtype != want:
            raise ArchiveError(f"lossless values are {values.dtype}, params say {want}")
        return values.reshape(shape)

    def params_for(self, shape: tuple[int, ...], spec: Spec, x: np.ndarray | None = None) -> dict[str, Any]:
        """The tensor's dtype; from the shape alone (a dry run) float32 is assumed."""
        return {"dtype": float_code(np.asarray(x)) if x is not None else "F32"}

    def layout(self, shape: tuple[int, ...], params: dict[str, Any]) -> dict[str, ArrayLayout]:
        code = param(params, "dtype", str, choices=FLOATS)
        return {"values": ArrayLayout(DTYPES[code], tuple(shape))}

    def describe(self, params: dict[str, Any]) -> str:
        return f"lossless {str(params.get('dtype', '')).lower()}".rstrip()
