"""The shared base of the block-scaled methods: `uniform` and the level tables (`nf`, `log`).

All three store, per block (tensor, channel or group of a row, base.py), a scale, and per value
an integer code; decoding is x_hat = (value(code) - offset[block]) * scale[block], where
value(code) is the code itself (uniform) or a table entry (nf, log) and offset is uniform's zero
point (nf and log have none). This class owns what they share: the options and their check, the
params (including the data-dependent fallback of 16-bit scales to float32), the layout, the
decode with its partial last group, and the label. Subclasses give the math of `_encode`,
`block_scales` and `dequant`.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..spec import GRANULARITIES, Spec
from .base import (NONNEGATIVE, ArrayLayout, Encoding, Method, block_grid, code_layout, from_blocks, group_width,
                   matrix_shape, param, scale_shape)
from .scales import STORAGE, fits, resolve_scale_dtype
from .search import RATIOS


class BlockScaled(Method):
    options = frozenset({"bits", "granularity", "group_size", "scale_dtype", "scale_search"})
    value_rules = {"scale": NONNEGATIVE}

    def check_spec(self, spec: Spec) -> None:
        if not 2 <= spec.bits <= 8:
            raise ConfigError(f"{self.name} quantization takes --bits 2 to 8, got {spec.bits}")

    def reads(self, spec: Spec) -> frozenset[str]:
        return self.options if spec.granularity == "group" else self.options - {"group_size"}

    # -- what subclasses provide -------------------------------------------------------------

    def extra_params(self, spec: Spec) -> dict[str, Any]:
        """Params beyond the shared ones (uniform: its scheme)."""
        return {}

    def extra_layout(self, params: dict[str, Any], sshape: tuple[int, ...]) -> dict[str, ArrayLayout]:
        """Validate the extra params; per-block arrays beyond codes and scale (uniform: zero points)."""
        return {}

    @abstractmethod
    def block_scales(self, x: np.ndarray, spec: Spec, ratio: float | None = None) -> np.ndarray:
        """The float32 block scales `encode(x, spec)` computes before storing them (scale_search
        included); with `ratio`, the scales at that fixed clipping ratio instead of a search."""

    @abstractmethod
    def dequant(self, codes: np.ndarray, enc: Encoding, nblocks: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(float32 values of the flat codes, per-block offset to subtract or None); refuses codes
        outside the method's alphabet with ArchiveError."""

    # -- shared plumbing ----------------------------------------------------------------------

    def params_for(self, shape: tuple[int, ...], spec: Spec, x: np.ndarray | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"bits": spec.bits, **self.extra_params(spec), "granularity": spec.granularity,
                                  "scale_dtype": resolve_scale_dtype(spec.scale_dtype, spec.granularity)}
        if spec.granularity == "group":
            params["group_size"] = spec.group_size
        if spec.scale_search:
            params["scale_search"] = True
        if x is not None and np.size(x) and not self._scales_fit(x, spec, params["scale_dtype"]):
            params["scale_dtype"] = "float32"
        return params

    def _scales_fit(self, x: np.ndarray, spec: Spec, name: str) -> bool:
        """Whether encode keeps 16-bit scales for `x`. A searched scale is ratio x the plain one,
        ratio in [min(RATIOS), 1] and monotone, so when both ends fit, every searched scale fits
        and the (costly) search need not run."""
        if name == "float32":
            return True
        if spec.scale_search and all(fits(self.block_scales(x, spec, r), name, rounding="up")
                                     for r in (1.0, float(RATIOS.min()))):
            return True
        return fits(self.block_scales(x, spec), name, rounding="up")

    def layout(self, shape: tuple[int, ...], params: dict[str, Any]) -> dict[str, ArrayLayout]:
        bits = param(params, "bits", int, lo=2, hi=8)
        granularity = param(params, "granularity", str, choices=GRANULARITIES)
        group_size = param(params, "group_size", int, lo=1) if granularity == "group" else 1
        scale_dtype = param(params, "scale_dtype", str, choices=tuple(STORAGE))
        if "scale_search" in params:
            param(params, "scale_search", bool)
        sshape = scale_shape(shape, granularity, group_size)
        return {"codes": code_layout(shape, bits), "scale": ArrayLayout(STORAGE[scale_dtype], sshape),
                **self.extra_layout(params, sshape)}

    def decode(self, enc: Encoding, shape: tuple[int, ...]) -> np.ndarray:
        p = enc.params
        granularity = p["granularity"]
        if math.prod(shape) == 0:
            return np.zeros(shape, np.float32)
        rows, cols = matrix_shape(shape)
        group_size = group_width(p.get("group_size", 1), cols)
        nblocks, _ = block_grid(shape, granularity, group_size)
        s = enc.arrays["scale"].astype(np.float32).reshape(-1)  # finite, >= 0: checked by the reader
        values, offset = self.dequant(enc.arrays["codes"].reshape(-1), enc, nblocks)
        if granularity == "group" and cols % group_size:
            blocks = np.zeros((rows, nblocks // max(rows, 1) * group_size), dtype=np.float32)
            blocks[:, :cols] = values.reshape(rows, cols)
            blocks = blocks.reshape(nblocks, group_size)
        else:
            blocks = values.reshape(nblocks, -1)
        if offset is not None:
            blocks -= offset[:, None]
        blocks *= s[:, None]
        return from_blocks(blocks, shape)

    def where(self, params: dict[str, Any]) -> str:
        """'tensor', 'channel' or 'g<group size>', and ' search' when the scales were searched."""
        where = {"tensor": "tensor", "channel": "channel"}.get(params["granularity"], f"g{params.get('group_size')}")
        return where + (" search" if params.get("scale_search") else "")
