"""Keep a tensor as it is: stored verbatim under its own name, in its own dtype."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..spec import Spec
from ..io.safetensors import DTYPES
from .base import ANY, ArrayLayout, Encoding, Method, param
from . import KEEP, register


@register
class Keep(Method):
    name = KEEP
    kept = True
    value_rules = {"values": ANY}  # data: a kept tensor may hold NaN (--keep-nonfinite)
    exact = True

    def _encode(self, x: np.ndarray, spec: Spec) -> tuple[Encoding, np.ndarray | None]:
        return Encoding(self.name, {}, {"values": np.require(x, requirements="C")}), x  # 0-d stays 0-d

    def check_writable(self, shape: tuple[int, ...], spec: Spec) -> None:
        """Anything can be kept: its layout is the tensor's own dtype and shape (from the manifest)."""
        return None

    def decode(self, enc: Encoding, shape: tuple[int, ...]) -> np.ndarray:
        return enc.arrays["values"].reshape(shape)

    def params_for(self, shape: tuple[int, ...], spec: Spec, x: np.ndarray | None = None) -> dict[str, Any]:
        return {}

    def layout(self, shape: tuple[int, ...], params: dict[str, Any]) -> dict[str, ArrayLayout]:
        """`params` carries the tensor's own dtype (the manifest's `dtype`): kept means stored as it was."""
        code = param(params, "dtype", str, choices=tuple(DTYPES))
        return {"values": ArrayLayout(DTYPES[code], tuple(shape))}
