"""Float formats as methods: a plain cast to float16 or bfloat16 (round to nearest even)."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

from ..errors import InputError
from ..spec import Spec
from .base import ArrayLayout, Encoding, Method
from . import register


class _Cast(Method):
    dtype: np.dtype

    def _encode(self, x: np.ndarray, spec: Spec) -> tuple[Encoding, np.ndarray | None]:
        limit = float(ml_dtypes.finfo(self.dtype).max)
        if x.size and float(np.max(np.abs(x))) > limit:
            raise InputError(f"has values beyond the {self.name} range (+-{limit:g}); use another method")
        values = x.astype(self.dtype)
        return Encoding(self.name, {}, {"values": values}), values.astype(np.float32)

    def params_for(self, shape: tuple[int, ...], spec: Spec, x: np.ndarray | None = None) -> dict[str, Any]:
        return {}

    def decode(self, enc: Encoding, shape: tuple[int, ...]) -> np.ndarray:
        return enc.arrays["values"].astype(np.float32).reshape(shape)

    def layout(self, shape: tuple[int, ...], params: dict[str, Any]) -> dict[str, ArrayLayout]:
        return {"values": ArrayLayout(np.dtype(self.dtype), tuple(shape))}

    def candidate_family(self, spec: Spec) -> str:
        return self.name


@register
class Float16(_Cast):
    name = "fp16"
    dtype = np.dtype(np.float16)

    def planner_candidates(self, level: str) -> list[Spec]:
        return [Spec(method=self.name, bits=16)]  # for high budgets and floors

    def planner_spec(self, spec: Spec, shape: tuple[int, ...], x: np.ndarray) -> Spec:
        """bfloat16 where the tensor exceeds float16's range."""
        if x.size and float(max(-x.min(), x.max())) > float(ml_dtypes.finfo(self.dtype).max):
            return spec.with_options(method=BFloat16.name)
        return spec


@register
class BFloat16(_Cast):
    name = "bf16"
    dtype = np.dtype(ml_dtypes.bfloat16)
