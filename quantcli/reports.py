"""What the library returns: plain dataclasses, rendered by render.py and plan_render.py.

Bits per weight has one definition for a whole archive (`archive_bits_per_weight`): every byte of
the file (headers, manifest, scales, codebooks) except the arrays of tensors kept as they are,
x 8 / quantized weights. Per tensor it is that tensor's stored array bytes x 8 / its elements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .methods import KEEP
from .metrics import ZERO, ErrorStats, archive_bits_per_weight, bits_per_weight

if TYPE_CHECKING:  # an annotation only: importing selection would import every method
    from .pipeline.selection import PlanItem


@dataclass
class TensorReport:
    """One tensor's outcome: what was done and what it cost, all overhead counted."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    method: str
    label: str
    params: dict[str, Any]
    elements: int
    original_bytes: int
    stored_bytes: int
    mse: float
    sqnr_db: float
    max_abs_err: float
    note: str = ""
    output_sqnr_db: float | None = None  # with --importance statistics for this tensor

    @property
    def quantized(self) -> bool:
        return self.method != KEEP

    @property
    def bits_per_weight(self) -> float:
        return bits_per_weight(self.stored_bytes, self.elements)


@dataclass
class ImportanceUse:
    """The statistics a run used (--importance) and which quantized 2-D tensors they covered."""

    path: str
    sha256: str
    tokens: int | None
    weighted: list[str]
    without: list[str]  # quantized 2-D tensors the file has no statistics for


@dataclass
class QuantizeReport:
    output: str
    inputs: list[str]
    tensors: list[TensorReport]
    input_bytes: int
    archive_bytes: int
    seconds: float
    quantized: ErrorStats = ZERO
    importance: ImportanceUse | None = None
    # when `dequantize -o FILE` gives the input file back byte for byte: {"format": "safetensors" or "npy", "sha256"}
    restores_file: dict[str, str] | None = None

    @property
    def quantized_elements(self) -> int:
        return sum(t.elements for t in self.tensors if t.quantized)

    @property
    def quantized_stored_bytes(self) -> int:
        return sum(t.stored_bytes for t in self.tensors if t.quantized)

    @property
    def kept_stored_bytes(self) -> int:
        return sum(t.stored_bytes for t in self.tensors if not t.quantized)

    @property
    def bits_per_weight(self) -> float:
        """Bits per quantized weight, all overhead counted (see `archive_bits_per_weight`)."""
        return archive_bits_per_weight(self.archive_bytes, self.kept_stored_bytes, self.quantized_elements)

    @property
    def ratio(self) -> float:
        """Archive bytes (headers and kept tensors included) over input file bytes."""
        return self.archive_bytes / self.input_bytes if self.input_bytes else 0.0

    @property
    def overall_sqnr_db(self) -> float:
        return self.quantized.sqnr_db


@dataclass
class DequantizeReport:
    output: str
    archive: str
    tensors: list[tuple[str, str, tuple[int, ...]]]  # name, dtype code written, shape
    output_bytes: int
    seconds: float
    copied: list[str] | None = None  # with --like: the model folder's other files copied beside the weights
    restored: str | None = None  # sha256 of the original file, written back byte for byte and checked


@dataclass
class PlanReport:
    """`--dry-run`: what would be written, with sizes computed from shapes and params alone."""

    inputs: list[str]
    items: list[PlanItem]
    labels: list[str]
    stored_bytes: list[int]
    input_bytes: int
    header_bytes_estimate: int

    @property
    def predicted_archive_bytes(self) -> int:
        return sum(self.stored_bytes) + self.header_bytes_estimate


@dataclass
class TensorStats:
    """What `inspect` shows of a plain weight tensor."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    elements: int
    nbytes: int
    min: float
    max: float
    mean: float
    std: float
    absmax: float
    zeros: int
    nonfinite: int


@dataclass
class Inspection:
    """`inspect` of one path: an archive's contents or a weight file's tensors."""

    path: str
    file_bytes: int
    archive: list[TensorReport] | None = None
    tensors: list[TensorStats] | None = None


@dataclass
class VerifyReport:
    """`verify` of one archive: the structure and the manifest checksum held (or opening would have
    raised), and `corrupt` names the tensors whose stored bytes do not match their checksum."""

    path: str
    file_bytes: int
    tensors: int
    stored_bytes: int
    corrupt: list[str]

    error: str = ""  # why the archive could not be checked at all (refused on open)
    error_line: str = ""  # the same with the file (and tensor) named, as stderr shows it

    @property
    def ok(self) -> bool:
        return not self.corrupt and not self.error


@dataclass
class PQDotReport:
    """`pq-dot`: queries times the PQ-encoded weight rows, computed with lookup tables."""

    archive: str
    tensor: str
    result: np.ndarray  # [b, n], or [n] for a single [d] query
    backend: str  # always "numba" (the only engine since numba is a dependency); kept as a JSON key
    output: str | None = None
    reference: str | None = None
    relative_error: float | None = None
    lut_ms: float | None = None
    dense_ms: float | None = None

    @property
    def speedup(self) -> float | None:
        return self.dense_ms / self.lut_ms if self.lut_ms and self.dense_ms is not None else None
