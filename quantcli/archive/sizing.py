"""Archive sizes from shapes and params alone: the ONE header sizer, used by `--dry-run` and by
the planner, and the manifest's per-tensor metrics that the writer records.

The header (safetensors entries + manifest) holds metric floats whose JSON length varies, so it is
sized with every metric at the longest repr a float can have; the planner then pads the real
header to exactly that size, and a dry run's prediction is the file's size.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import storage
from .container import ArchiveTensor, manifest_metadata, stored_name
from ..calibration.importance import PARAM as IMPORTANCE_PARAM
from ..methods import KEEP
from ..metrics import ErrorStats
from ..io.output import predict_header
from ..io.safetensors import dtype_code
from ..io.sources import TensorRef

# Layout of stored arrays: role -> (numpy dtype, shape), as the file holds them.
Layout = dict[str, tuple[np.dtype, tuple[int, ...]]]
# a metric whose recorded form (archive.METRIC_DIGITS significant digits) is the longest: Python
# writes floats below 1e16 without an exponent, so -1234567890000000.0 (19 characters)
WORST_FLOAT = -1.2345678912345678e15


def metrics_doc(err: ErrorStats | None) -> dict[str, Any]:
    """The error metrics the manifest records for one quantized tensor ({} for a kept one); bits per
    weight is not among them: it follows exactly from the stored arrays' shapes."""
    if err is None:
        return {}
    doc = {"mse": err.mse, "sqnr_db": err.sqnr_db, "max_abs_err": err.max_abs}
    if err.output_sqnr_db is not None:
        doc["output_sqnr_db"] = err.output_sqnr_db
    return doc


def stored_layout(method: str, ref: TensorRef, params: dict[str, Any]) -> Layout:
    """What the file will hold for one tensor stored with `method` and `params`; a kept tensor is
    stored in its own dtype, which is its layout's one param."""
    return storage.stored_layout(method, tuple(ref.shape), {"dtype": ref.dtype} if method == KEEP else params)


def layout_nbytes(layout: Layout) -> int:
    return sum(math.prod(shape) * np.dtype(dt).itemsize for dt, shape in layout.values())


@dataclass(frozen=True)
class Sized:
    """One tensor of an archive-to-be: how it is stored, without its data."""

    ref: TensorRef
    method: str
    params: dict[str, Any]
    layout: Layout
    note: str = ""
    # entropy-coded: the codec entries the manifest will hold, with the stored length an upper
    # bound (`exact` False): the file's arrays and header can then only be smaller
    codecs: dict[str, dict[str, Any]] | None = None
    exact: bool = True

    @classmethod
    def kept(cls, ref: TensorRef, note: str) -> "Sized":
        return cls(ref, KEEP, {}, stored_layout(KEEP, ref, {}), note)

    @classmethod
    def stored(cls, ref: TensorRef, method: str, params: dict[str, Any], note: str = "") -> "Sized":
        return cls(ref, method, params, stored_layout(method, ref, params), note)

    @property
    def nbytes(self) -> int:
        return layout_nbytes(self.layout)

    def entry(self) -> ArchiveTensor:
        """The manifest entry the writer will make, every metric float at its longest."""
        arrays = {role: stored_name(self.ref.name, role, self.method) for role in sorted(self.layout)}
        metrics: dict[str, Any] = {}
        if self.method != KEEP:
            weighted = 1.0 if IMPORTANCE_PARAM in self.params else 0.0
            doc = metrics_doc(ErrorStats(self.ref.size, 1.0, 1.0, 1.0, weighted, weighted))
            metrics = {k: WORST_FLOAT for k in doc}
        return ArchiveTensor(self.ref.name, self.ref.dtype, tuple(self.ref.shape), self.method, self.params,
                             arrays, "0" * 64, metrics, self.note, dict(self.codecs or {}))


def header_bytes(tensors: list[Sized]) -> int:
    """The header size (length prefix included) of an archive holding `tensors`, built exactly as
    the writer builds it, metrics at their longest."""
    entries: list[ArchiveTensor] = []
    arrays: list[tuple[str, np.dtype, tuple[int, ...]]] = []
    for s in tensors:
        at = s.entry()
        entries.append(at)
        arrays.extend((at.arrays[role], s.layout[role][0], s.layout[role][1]) for role in sorted(s.layout))
    return len(predict_header(arrays, manifest_metadata(entries)))


def entry_bound(s: Sized, digits: int) -> int:
    """Header bytes one tensor adds at most: its manifest entry as escaped inside the header plus a
    comma, and one safetensors entry per array with offsets of `digits` digits. Summed with
    `fixed_header_bound()` this bounds the header of any combination of choices."""
    at = s.entry()
    entry = json.dumps(at.to_json(), sort_keys=True, separators=(",", ":"), allow_nan=False)
    total = len(json.dumps(entry)) - 2 + 1
    big = 10**digits - 1
    for role, (dtype, shape) in s.layout.items():
        doc = {at.arrays[role]: {"dtype": dtype_code(dtype), "shape": list(shape), "data_offsets": [big, big]}}
        total += len(json.dumps(doc, separators=(",", ":"))) - 2 + 1
    return total


def fixed_header_bound() -> int:
    """Header bytes of an archive with no tensors, plus 7 for the alignment padding."""
    return len(predict_header([], manifest_metadata([]))) + 7
