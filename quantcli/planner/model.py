"""The planner's records: measured points, per-tensor plans, the plan and its reports."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from ..calibration.importance import TensorImportance
from ..metrics import ErrorStats, archive_bits_per_weight
from ..reports import QuantizeReport
from ..archive.sizing import Sized
from ..io.sources import TensorRef
from ..spec import Spec
from .budget import Budget


@dataclass
class Point:
    """One candidate setting measured on one tensor: exact stored bytes, estimated relative error.
    `candidate` is the setting as offered (the key); `spec` what is encoded for this tensor (a
    float16 cast becomes bf16 beyond float16's range, float16 scales become float32 where they
    would overflow)."""

    candidate: Spec
    spec: Spec
    label: str
    sized: Sized
    rel: float           # sum err^2 / sum x^2 on the sample (0 = exact)
    header: int = 0      # upper bound of the header bytes this tensor's entries take with this setting

    @property
    def params(self) -> dict[str, Any]:
        return self.sized.params

    @property
    def nbytes(self) -> int:
        return self.sized.nbytes

    @property
    def cost(self) -> int:
        return self.nbytes + self.header

    @property
    def sqnr_db(self) -> float:
        return -10 * math.log10(self.rel) if self.rel > 0 else math.inf


@dataclass
class TensorPlan:
    """What the planner knows and chose for one tensor. role: planned, pinned (a recipe rule) or kept."""

    ref: TensorRef
    role: str
    note: str
    points: list[Point] = field(default_factory=list)
    choice: Point | None = None
    signal: float = 0.0          # sum x^2 over the whole tensor
    sample_rows: int = 0
    rows: int = 0
    exact: bool = False          # measured on the whole tensor
    kept: Sized | None = None
    kept_header: int = 0
    # the sample rows (float32, at most --sample values) kept for a continuous re-solve (solve.py)
    sample: np.ndarray | None = field(default=None, repr=False)
    tables: dict[str, float] = field(default_factory=dict, repr=False)  # coded arrays' fixed bytes, by role
    actual: ErrorStats | None = None  # measured on the whole tensor (--min-sqnr check, or the write)
    stats: TensorImportance | None = field(default=None, repr=False)  # --importance statistics for it
    record: str = ""             # what its params record of those statistics (importance.PARAM)

    @property
    def elements(self) -> int:
        return self.ref.size

    @property
    def quantized(self) -> bool:
        return self.role != "kept"

    @property
    def kept_bytes(self) -> int:
        return self.kept.nbytes if self.kept is not None else 0

    @property
    def stored_bytes(self) -> int:
        return self.choice.nbytes if self.choice is not None else self.kept_bytes

    def sized(self, choice: Point | None = None) -> Sized:
        """How this tensor is stored with `choice` (default: its current choice)."""
        point = choice or self.choice
        if point is None:
            assert self.kept is not None
            return self.kept
        return point.sized


@dataclass
class Baseline:
    """The best single setting applied to every planned tensor that fits the same budget."""

    label: str
    archive_bytes: int
    bits_per_weight: float
    weighted_sqnr_db: float
    overall_sqnr_db: float
    objective_sqnr_db: float | None = None  # under the plan's own objective weights: the like-for-like figure


@dataclass
class Refined:
    """What the re-solve did, for the report: the trellis or not, the objective before and after
    (lower is better), the passes over the samples, and the write's correction passes."""

    tensors: int
    trellis: bool
    before: float
    after: float
    passes: int
    corrections: int = 0


@dataclass
class Plan:
    """The planner's result: per-tensor choices, the exact archive size, estimated quality."""

    inputs: list[str]
    budget: Budget
    tensors: list[TensorPlan]
    input_bytes: int
    header_bytes: int
    limit_bytes: int | None      # the archive may not exceed this (None for --min-sqnr)
    planning_seconds: float
    sample: int
    candidates: list[str]
    objective: str = "auto"
    baseline_uniform: Baseline | None = None
    baseline_any: Baseline | None = None
    refined: Refined | None = None   # the ecsq steps' re-solve (planner/solve.py)
    # -10 log10(sum w_t rel_t / sum w_t) over the planned tensors with the objective's weights w_t:
    # what the plan maximises, and what its baselines are chosen and compared by (None for --min-sqnr)
    objective_sqnr_db: float | None = None

    @property
    def quantized(self) -> list[TensorPlan]:
        return [t for t in self.tensors if t.quantized]

    @property
    def predicted_archive_bytes(self) -> int:
        return self.header_bytes + sum(t.stored_bytes for t in self.tensors)

    @property
    def kept_array_bytes(self) -> int:
        return sum(t.kept_bytes for t in self.tensors if not t.quantized)

    @property
    def quantized_elements(self) -> int:
        return sum(t.elements for t in self.quantized)

    @property
    def bits_per_weight(self) -> float:
        return archive_bits_per_weight(self.predicted_archive_bytes, self.kept_array_bytes, self.quantized_elements)

    @property
    def weighted_sqnr_db(self) -> float:
        return weighted_sqnr([(t.elements, t.choice.rel) for t in self.quantized if t.choice])

    @property
    def overall_sqnr_db(self) -> float:
        return overall_sqnr([(t.signal, t.choice.rel) for t in self.quantized if t.choice])


def objective_sqnr(items: Iterable[tuple[float, float]]) -> float:
    """-10 log10(sum w_t rel_t / sum w_t) over (objective weight, relative error) pairs."""
    pairs = list(items)
    w = sum(a for a, _ in pairs)
    err = sum(a * r for a, r in pairs)
    if w <= 0 or err <= 0:
        return math.inf
    return -10 * math.log10(err / w)


def weighted_sqnr(items: Iterable[tuple[int, float]]) -> float:
    """-10 log10(sum n_t rel_t / sum n_t) over (elements, relative error) pairs; inf when exact."""
    pairs = list(items)
    n = sum(c for c, _ in pairs)
    err = sum(c * r for c, r in pairs)
    if n == 0 or err <= 0:
        return math.inf
    return -10 * math.log10(err / n)


def overall_sqnr(items: Iterable[tuple[float, float]]) -> float:
    """10 log10(sum signal / sum error) over (signal, relative error) pairs."""
    pairs = list(items)
    signal = sum(s for s, _ in pairs)
    err = sum(s * r for s, r in pairs)
    if err <= 0:
        return math.inf
    return 10 * math.log10(signal / err) if signal > 0 else -math.inf


@dataclass
class PlannedQuantizeReport:
    """A planned run: the plan (predictions) and the written archive's report (measurements)."""

    plan: Plan
    report: QuantizeReport

    @property
    def weighted_sqnr_db(self) -> float:
        """Measured on the whole tensors, as written."""
        return weighted_sqnr((t.elements, 10 ** (-t.sqnr_db / 10) if math.isfinite(t.sqnr_db) else 0.0)
                             for t in self.report.tensors if t.quantized)


@dataclass
class CurvePoint:
    """One candidate setting applied to every selected tensor: bits per weight (stored arrays) and
    SQNR over all of them (overall) and element-weighted relative (weighted)."""

    label: str
    method: str
    bits: int
    bits_per_weight: float
    overall_sqnr_db: float
    weighted_sqnr_db: float
    family: str = ""
    pareto: bool = False


@dataclass
class Curve:
    inputs: list[str]
    points: list[CurvePoint]
    tensors: int
    elements: int
    sample: int
    seconds: float
