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
from ..calibration.importance import TensorImportance
from ..spec import GRANULARITIES, Spec
from .base import (NONNEGATIVE, ArrayLayout, Encoding, Method, block_grid, code_layout, from_blocks, group_width,
                   matrix_shape, param, scale_shape)
from .compensate import compensate
from .scales import STORAGE, fits, resolve_scale_dtype
from .search import RATIOS


class BlockScaled(Method):
    options = frozenset({"bits", "granularity", "group_size", "scale_dtype", "scale_search"})
    value_rules = {"scale": NONNEGATIVE}
    weighs_importance = True

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

    @abstractmethod
    def _encode_weighted(self, x: np.ndarray, spec: Spec, weights: np.ndarray) -> Encoding:
        """`_encode` with the clipping search's error weighted by `weights` (x's [rows, cols] view)."""

    @abstractmethod
    def nearest_codes(self, y: np.ndarray, offset: np.ndarray | None, params: dict[str, Any]) -> np.ndarray:
        """The codes of the grid points nearest to y = x / scale, one per row (`offset` per row, as
        `dequant` returns it): what `_encode` computes, for one column at a time."""

    # -- importance ---------------------------------------------------------------------------

    def _encode_importance(self, x: np.ndarray, spec: Spec, imp: TensorImportance) -> Encoding:
        """Clipping scales searched for the weighted error; with a Gram, each column's rounding
        error is also compensated on the columns after it (compensate.py), every group's scales
        being fitted when the group starts, on its compensated values."""
        shape = tuple(np.shape(x))
        searched = self.importance_spec(spec)
        weights = imp.element_weights(shape)
        if imp.gram is None or np.size(x) == 0:
            return self._encode_weighted(x, searched, weights)
        enc = self._compensated(x, searched, imp.gram, weights)
        if enc is None:  # a group's scales needed float32 after all: every group must share a dtype
            enc = self._compensated(x, searched.with_options(scale_dtype="float32"), imp.gram, weights)
            assert enc is not None
        return enc

    def importance_spec(self, spec: Spec) -> Spec:
        """Importance acts through the clipping search, so it is on."""
        return spec.with_options(scale_search=True)

    def _compensated(self, x: np.ndarray, spec: Spec, gram: np.ndarray, weights: np.ndarray) -> Encoding | None:
        shape = tuple(np.shape(x))
        grid = _ColumnGrid(self, spec, weights)
        compensate(x, gram, grid, spec.group_size if spec.granularity == "group" else shape[1])
        used = {p.params["scale_dtype"] for p in grid.parts}
        if len(used) > 1:
            return None
        arrays = {"codes": grid.codes}
        for role in grid.parts[0].arrays:
            if role != "codes":
                pieces = [p.arrays[role] for p in grid.parts]
                arrays[role] = np.stack(pieces, axis=1) if spec.granularity == "group" else pieces[0]
        return Encoding(self.name, {**self.params_for(shape, spec), "scale_dtype": used.pop()}, arrays)

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


class _ColumnGrid:
    """compensate.ColumnGrid of a block-scaled method: `fit` encodes the group's columns as a
    [rows, width] matrix per channel (the group's scales, weighted clipping search included),
    `snap` rounds one column with those scales and records its codes."""

    def __init__(self, method: BlockScaled, spec: Spec, weights: np.ndarray):
        self.method = method
        # a group's scales, fitted as one matrix's per-channel scales, in the group scales' dtype
        self.sub = (spec.with_options(granularity="channel",
                                      scale_dtype=resolve_scale_dtype(spec.scale_dtype, spec.granularity))
                    if spec.granularity == "group" else spec)
        self.weights = weights
        self.codes = np.zeros(weights.shape, np.uint8)
        self.parts: list[Encoding] = []
        self.scale = self.safe = np.ones(0)
        self.offset: np.ndarray | None = None

    def fit(self, columns: np.ndarray, start: int) -> None:
        rows, width = columns.shape
        enc = self.method._encode_weighted(columns.astype(np.float32), self.sub,
                                           self.weights[:, start:start + width])
        self.parts.append(enc)
        scale = enc.arrays["scale"].astype(np.float32).reshape(-1)
        _, offset = self.method.dequant(np.zeros(0, np.uint8), enc, scale.size)
        self.scale = np.broadcast_to(scale, (rows,)).astype(np.float64)
        self.safe = np.where(self.scale > 0, self.scale, 1.0)
        self.offset = None if offset is None else np.broadcast_to(offset, (rows,)).astype(np.float64)

    def snap(self, column: np.ndarray, j: int) -> np.ndarray:
        enc = self.parts[-1]
        k = self.method.nearest_codes(column / self.safe, self.offset, enc.params)
        self.codes[:, j] = k
        values = self.method.dequant(k, enc, k.size)[0].astype(np.float64)
        return (values - (0.0 if self.offset is None else self.offset)) * self.scale
