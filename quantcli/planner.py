"""Rate-distortion planning: per-tensor settings that give the best quality for a size budget,
or the smallest archive that keeps every tensor above a quality floor.

How it works (docs/PLANNER.md has the long version):

1. Measure. Each tensor to plan is loaded once; every candidate setting (method x bits x group
   size, `default_candidates`) is encoded on a sample of at most `sample` values (whole rows,
   evenly spaced; groups run along rows, so a row sample is quantized exactly as in the full
   tensor). The error estimate is the sample's relative error sum(err^2) / sum(x^2). Stored sizes
   are exact: `params_for` + `layout` from the shape, after checking on the full tensor whether
   float16 scales would overflow or underflow (the encoder then stores float32 scales; the
   planner asks for float32 outright so the prediction cannot differ).
2. Allocate. Distortion of a tensor = n_t * MSE_t / mean(x_t^2) (element-weighted relative error).
   Per tensor, the lower convex hull of its (bytes, distortion) points; then greedy marginal-gain
   allocation: start every tensor at its smallest point and repeatedly take the upgrade with the
   largest distortion drop per byte that still fits. On convex hulls this traces the Lagrangian
   optimum (each step is optimal for the bytes it uses); a last pass spends the leftover bytes on
   the best single move to any measured point, hull or not.
3. Size exactly. The manifest's metric floats have varying JSON length, so the header is sized
   with every metric at the longest repr a float can have (24 characters) and the writer pads the
   real header with spaces to exactly that size: the dry run's predicted archive bytes are the
   file's bytes, and the budget check uses the same number.
"""

from __future__ import annotations

import heapq
import json
import math
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np

from .api import (PlanItem, encode_and_measure, refuse_archives, QuantizeReport, Selection, TensorReport, check_output, metrics_doc, tensor_report,
                  default_jobs, parse_size, plan_tensors)
from .codecs import stored_layout, stored_nbytes
from .archive import ArchiveTensor, ArchiveWriter, manifest_metadata, stored_name
from .errors import ConfigError, InputError, QuantError, WorkError
from .methods import Encoding, get_method
from .methods.base import block_min_max, matrix_shape, to_blocks, to_float32
from .methods.scales import round_up
from .metrics import ZERO, ErrorStats, measure, sum_squares
from .output import predict_header
from .recipe import Recipe, load_recipe
from .safetensors_io import DTYPES, dtype_code
from .sources import Sources, TensorRef
from .spec import Spec

SAMPLE = 1 << 16         # values measured per tensor and candidate (whole rows); see docs/PLANNER.md
CACHE_BYTES = 1 << 28    # encodings of fully measured tensors kept for the final write, at most this much
_WORST_FLOAT = -1.2345678901234567e-100  # a float with the longest repr (24 characters)
_T = TypeVar("_T")
_R = TypeVar("_R")


# ---------------------------------------------------------------------------------------------
# candidates


def default_candidates(level: str = "default") -> list[Spec]:
    """The settings the planner measures per tensor.

    default: uniform asymmetric 2-8 bits at g32/g64/g128/channel (cheap, covers every rate),
    nf 2-5 bits at g32/g64/g128 (fixed non-uniform levels, +0.6-0.9 dB at 4 bits for ~4x the time
    of uniform), kmeans normalize=group 2-4 bits at g64/g128 (learned levels, the best measured
    4-bit setting; 5 bits doubles its cost for a rate the others cover), and fp16.
    fast: the same without kmeans (which is ~75% of the measuring time).
    """
    if level not in ("default", "fast"):
        raise ConfigError(f"--candidates must be default or fast, got {level!r}")
    out = []
    for bits in range(2, 9):
        for g in (32, 64, 128):
            out.append(Spec(method="uniform", bits=bits, scheme="asymmetric", granularity="group", group_size=g))
        out.append(Spec(method="uniform", bits=bits, scheme="asymmetric", granularity="channel"))
    for bits in range(2, 6):
        for g in (32, 64, 128):
            out.append(Spec(method="nf", bits=bits, granularity="group", group_size=g))
    if level == "default":
        for bits in range(2, 5):
            for g in (64, 128):
                out.append(Spec(method="kmeans", bits=bits, normalize="group", group_size=g))
    out.append(Spec(method="fp16", bits=16))
    return out


def candidate_label(spec: Spec) -> str:
    """The setting's name, independent of the tensor (e.g. 'int4 asym g64', 'nf3 g128')."""
    method = get_method(spec.method)
    return method.describe(method.params_for((1, 1), spec))


# ---------------------------------------------------------------------------------------------
# budgets


@dataclass(frozen=True)
class Budget:
    """What to plan for. kind: 'bpw' (bits per quantized weight), 'bytes' (whole archive file),
    or 'sqnr' (every planned tensor at least this many dB, smallest archive)."""

    kind: str
    value: float
    text: str = ""

    def describe(self) -> str:
        return {"bpw": f"--target-bpw {self.value:g}", "bytes": f"--max-size {self.text or int(self.value)}",
                "sqnr": f"--min-sqnr {self.value:g}"}[self.kind]


def budget_from_options(target_bpw: float | None, max_size: str | None, min_sqnr: float | None) -> Budget | None:
    """The one budget given on the command line, or None; ConfigError when more than one."""
    given = [n for n, v in (("--target-bpw", target_bpw), ("--max-size", max_size), ("--min-sqnr", min_sqnr))
             if v is not None]
    if len(given) > 1:
        raise ConfigError(f"give one of --target-bpw, --max-size, --min-sqnr, not {' and '.join(given)}")
    if target_bpw is not None:
        if not math.isfinite(target_bpw) or target_bpw <= 0:
            raise ConfigError(f"--target-bpw must be a positive number of bits, got {target_bpw}")
        return Budget("bpw", float(target_bpw))
    if max_size is not None:
        try:
            size = parse_size(max_size)
        except ConfigError:
            raise ConfigError(f"--max-size {max_size!r} is not a size like 30MB, 2GB or 1GiB") from None
        return Budget("bytes", float(size), max_size)
    if min_sqnr is not None:
        if not math.isfinite(min_sqnr):
            raise ConfigError(f"--min-sqnr must be a finite number of dB, got {min_sqnr}")
        return Budget("sqnr", float(min_sqnr))
    return None


# ---------------------------------------------------------------------------------------------
# measured points and per-tensor plans


@dataclass
class Point:
    """One setting measured on one tensor: exact stored bytes, estimated relative error."""

    label: str
    spec: Spec
    params: dict[str, Any]
    layout: dict[str, tuple[np.dtype, tuple[int, ...]]]
    nbytes: int          # stored array bytes, exact
    header: int          # upper bound of the header bytes this tensor's entries take with this setting
    rel: float           # sum err^2 / sum x^2 on the sample (0 = exact)

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
    kept_bytes: int = 0
    kept_header: int = 0
    cache: dict[str, tuple[Encoding, ErrorStats]] = field(default_factory=dict, repr=False)
    actual: ErrorStats | None = None  # measured on the whole tensor (--min-sqnr check, or the write)

    @property
    def elements(self) -> int:
        return self.ref.size

    @property
    def quantized(self) -> bool:
        return self.role != "kept"

    @property
    def stored_bytes(self) -> int:
        return self.choice.nbytes if self.choice is not None else self.kept_bytes


@dataclass
class Baseline:
    """The best single setting applied to every planned tensor that fits the same budget."""

    label: str
    archive_bytes: int
    bits_per_weight: float
    weighted_sqnr_db: float
    overall_sqnr_db: float


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
    baseline_uniform: Baseline | None = None
    baseline_any: Baseline | None = None

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
        """The --target-bpw measure: 8 x (archive bytes - bytes of kept tensors' arrays) / quantized weights."""
        n = self.quantized_elements
        return 8 * (self.predicted_archive_bytes - self.kept_array_bytes) / n if n else 0.0

    @property
    def weighted_sqnr_db(self) -> float:
        return weighted_sqnr([(t.elements, t.choice.rel) for t in self.quantized if t.choice])

    @property
    def overall_sqnr_db(self) -> float:
        return overall_sqnr([(t.signal, t.choice.rel) for t in self.quantized if t.choice])


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


# ---------------------------------------------------------------------------------------------
# header accounting


def _metrics_placeholder(nbytes: int, ref: TensorRef) -> dict[str, Any]:
    """The metrics the writer records, every float except bits_per_weight at its longest repr."""
    enc = Encoding("keep", {}, {"values": np.zeros(nbytes, np.uint8)})
    doc = metrics_doc(ErrorStats(ref.size, 1.0, 1.0, 1.0), enc, ref)
    return {k: (_WORST_FLOAT if isinstance(v, float) and k != "bits_per_weight" else v) for k, v in doc.items()}


def placeholder_entry(ref: TensorRef, method: str, params: dict[str, Any], roles: Iterable[str], nbytes: int,
                    note: str) -> ArchiveTensor:
    arrays = {role: stored_name(ref.name, role, method) for role in sorted(roles)}
    metrics = {} if method == "keep" else _metrics_placeholder(nbytes, ref)
    return ArchiveTensor(ref.name, ref.code, tuple(ref.shape), method, params, arrays, "0" * 64, metrics, note)


def _entry_bound(t: ArchiveTensor, layout: dict[str, tuple[np.dtype, tuple[int, ...]]], digits: int) -> int:
    """Header bytes one tensor adds at most: its manifest entry as escaped inside the header plus a
    comma, and one safetensors entry per array with offsets of `digits` digits."""
    entry = json.dumps(t.to_json(), sort_keys=True, separators=(",", ":"), allow_nan=False)
    total = len(json.dumps(entry)) - 2 + 1
    big = 10**digits - 1
    for role, (dtype, shape) in layout.items():
        doc = {t.arrays[role]: {"dtype": dtype_code(dtype), "shape": list(shape), "data_offsets": [big, big]}}
        total += len(json.dumps(doc, separators=(",", ":"))) - 2 + 1
    return total


def _nbytes(layout: dict[str, tuple[np.dtype, tuple[int, ...]]]) -> int:
    return sum(int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize for dt, shape in layout.values())


def _fixed_header_bound() -> int:
    """Header bytes of an archive with no tensors, plus 7 for the alignment padding."""
    return len(predict_header([], manifest_metadata([]))) + 7


def exact_header(tensors: list[TensorPlan], choices: list[Point | None] | None = None) -> int:
    """The header size (bytes, length prefix included) the archive gets with these choices: built
    exactly as the writer builds it, metrics at their longest; the writer pads to this size."""
    entries, arrays = [], []
    for i, t in enumerate(tensors):
        point = t.choice if choices is None else choices[i]
        if point is None:
            layout = {"values": (DTYPES[t.ref.code], tuple(t.ref.shape))}
            at = placeholder_entry(t.ref, "keep", {}, layout, t.kept_bytes, t.note)
        else:
            layout = point.layout
            at = placeholder_entry(t.ref, point.spec.method, point.params, layout, point.nbytes, "")
        entries.append(at)
        arrays.extend((at.arrays[role], layout[role][0], layout[role][1]) for role in sorted(layout))
    return len(predict_header(arrays, manifest_metadata(entries)))


# ---------------------------------------------------------------------------------------------
# measuring


def _ordered_map(fn: Callable[[_T], _R], items: list[_T], jobs: int) -> Iterator[_R]:
    """fn over items in threads, results in input order, at most `jobs` in flight."""
    if jobs <= 1 or len(items) <= 1:
        for item in items:
            yield fn(item)
        return
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="plan") as pool:
        pending: deque[Any] = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= jobs:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise


def sample_rows(rows: int, cols: int, sample: int) -> np.ndarray | None:
    """Indices of the evenly spaced rows to measure on, or None for the whole tensor."""
    if sample <= 0 or rows * cols <= sample or rows <= 1:
        return None
    r = max(1, min(rows, -(-sample // max(cols, 1))))
    if r >= rows:
        return None
    return ((2 * np.arange(r, dtype=np.int64) + 1) * rows) // (2 * r)


class _ScaleCheck:
    """Whether float16 scales fit a tensor (else the encoder silently stores float32 scales):
    per-block min/max of the whole tensor, computed once per group size."""

    def __init__(self, x: np.ndarray):
        self.x = x
        self._stats: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _minmax(self, group: int) -> tuple[np.ndarray, np.ndarray]:
        if group not in self._stats:
            self._stats[group] = block_min_max(to_blocks(self.x, "group", group))
        return self._stats[group]

    def resolve(self, spec: Spec) -> Spec:
        """The spec with scale_dtype float32 when float16 group scales would not fit this tensor."""
        if spec.scale_dtype != "auto" or spec.scale_search or self.x.size == 0:
            return spec
        group_scales = spec.method in ("uniform", "nf", "log") and spec.granularity == "group"
        if not (group_scales or (spec.method == "kmeans" and spec.normalize == "group")):
            return spec
        lo, hi = self._minmax(spec.group_size)
        if spec.method == "uniform":
            if spec.scheme == "symmetric":
                scale = np.maximum(hi, -lo) / np.float32(2 ** (spec.bits - 1) - 1)
            else:
                scale = (np.maximum(hi, 0) - np.minimum(lo, 0)) / np.float32(2**spec.bits - 1)
        else:
            scale = np.maximum(np.abs(lo), np.abs(hi))
        fits = round_up(scale.astype(np.float32), "float16") is not None
        return spec if fits else spec.with_options(scale_dtype="float32")


@dataclass
class _Context:
    candidates: list[Spec]
    labels: list[str]
    sample: int
    keep_nonfinite: bool
    cache_left: list[int]
    lock: threading.Lock


def _load(ref: TensorRef, keep_nonfinite: bool) -> tuple[np.ndarray | None, str]:
    x = ref.load()
    xf = to_float32(x)
    if xf.size and not (np.isfinite(xf.min()) and np.isfinite(xf.max())):
        bad = int(np.count_nonzero(~np.isfinite(xf)))
        if keep_nonfinite:
            return None, f"kept: {bad} NaN/Inf values (--keep-nonfinite)"
        raise InputError(f"holds {bad} NaN or Inf values; fix the weights or pass --keep-nonfinite to keep "
                         f"such tensors as they are", path=ref.path, tensor=ref.name)
    return xf, ""


def _point(ref: TensorRef, spec: Spec, label: str, params: dict[str, Any], rel: float) -> Point:
    """A measured point; its header bound is filled in once every tensor is measured (`_bound_headers`)."""
    layout = stored_layout(spec.method, tuple(ref.shape), params)
    return Point(label, spec, params, layout, _nbytes(layout), 0, rel)


def _bound_headers(tensors: list[TensorPlan]) -> None:
    """Header bounds of every point and kept tensor, with data offsets as long as the largest
    archive any choice could make."""
    largest = sum(max((p.nbytes for p in t.points), default=t.kept_bytes) for t in tensors)
    digits = len(str(largest))
    for t in tensors:
        if not t.quantized:
            layout = {"values": (DTYPES[t.ref.code], tuple(t.ref.shape))}
            at = placeholder_entry(t.ref, "keep", {}, layout, t.kept_bytes, t.note)
            t.kept_header = _entry_bound(at, layout, digits)
        for p in t.points:
            at = placeholder_entry(t.ref, p.spec.method, p.params, p.layout, p.nbytes, "")
            p.header = _entry_bound(at, p.layout, digits)


_encode = encode_and_measure


def _keep_plan(ref: TensorRef, note: str) -> TensorPlan:
    return TensorPlan(ref, "kept", note, kept_bytes=ref.nbytes)


def _measure(item: PlanItem, role: str, ctx: _Context) -> TensorPlan:
    """Load one tensor and measure its candidates (or its pinned setting) on a row sample."""
    ref = item.ref
    if role == "kept":
        return _keep_plan(ref, item.note)
    xf, note = _load(ref, ctx.keep_nonfinite)
    if xf is None:
        return _keep_plan(ref, note)
    shape = tuple(ref.shape)
    rows, cols = matrix_shape(shape)
    t = TensorPlan(ref, role, "", signal=sum_squares(xf), rows=rows)
    if role == "pinned":  # the recipe's setting, exactly as it will be written: encode it whole
        assert item.spec is not None
        enc, err = _encode(xf, item.spec, ref)
        rel = err.error / err.signal if err.signal > 0 else 0.0
        t.points = [_point(ref, item.spec, get_method(item.spec.method).describe(enc.params), enc.params, rel)]
        t.choice, t.exact, t.sample_rows, t.actual = t.points[0], True, rows, err
        _offer_cache(t, t.points[0], enc, err, ctx)
        return t
    idx = sample_rows(rows, cols, ctx.sample)
    xs = xf if idx is None else xf.reshape(rows, cols)[idx]
    t.exact, t.sample_rows = idx is None, rows if idx is None else len(idx)
    check = _ScaleCheck(xf)
    absmax = float(max(-xf.min(), xf.max())) if xf.size else 0.0
    encodings: list[tuple[Encoding, ErrorStats] | None] = []
    for spec, label in zip(ctx.candidates, ctx.labels):
        if spec.method in ("fp16", "bf16"):
            if spec.method == "fp16" and absmax > 65504.0:
                spec = spec.with_options(method="bf16")
                label = "bf16"
        else:
            spec = check.resolve(spec)
        method = get_method(spec.method)
        params = method.params_for(shape, spec)
        enc, err = _encode(xs, spec, ref)
        if t.exact:
            params = enc.params  # the truth, when measured on the whole tensor
        rel = err.error / err.signal if err.signal > 0 else 0.0
        t.points.append(_point(ref, spec, label, params, rel))
        encodings.append((enc, err) if t.exact else None)
    if t.exact:
        for i in pareto_front([p.nbytes for p in t.points], [p.rel for p in t.points]):
            enc_err = encodings[i]
            assert enc_err is not None
            _offer_cache(t, t.points[i], *enc_err, ctx)
    return t


def _offer_cache(t: TensorPlan, point: Point, enc: Encoding, err: ErrorStats, ctx: _Context) -> None:
    """Keep the encoding (and its whole-tensor error) of a fully measured tensor for the final
    write, within CACHE_BYTES in all."""
    with ctx.lock:
        if enc.nbytes <= ctx.cache_left[0]:
            ctx.cache_left[0] -= enc.nbytes
            t.cache[point.label] = (enc, err)


# ---------------------------------------------------------------------------------------------
# allocation


def pareto_front(cost: list[int], dist: list[float]) -> list[int]:
    """Indices of points no other point beats on both cost and distortion, by increasing cost."""
    order = sorted(range(len(cost)), key=lambda i: (cost[i], dist[i], i))
    out, best = [], math.inf
    for i in order:
        if dist[i] < best:
            out.append(i)
            best = dist[i]
    return out


def lower_hull(cost: list[int], dist: list[float]) -> list[int]:
    """Indices of the lower convex hull of (cost, distortion), by increasing cost: along it the
    distortion saved per byte only shrinks, which is what makes greedy allocation optimal."""
    hull: list[int] = []
    for i in pareto_front(cost, dist):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            if (dist[b] - dist[a]) * (cost[i] - cost[b]) >= (dist[i] - dist[b]) * (cost[b] - cost[a]):
                hull.pop()  # b lies on or above the chord a-i
            else:
                break
        hull.append(i)
    return hull


def _distortion(t: TensorPlan, p: Point, objective: str) -> float:
    return t.elements * p.rel if objective == "relative" else t.signal * p.rel


class _TooSmall(ConfigError):
    """Even the cheapest choice for every tensor exceeds the budget."""

    def __init__(self, need: int, limit: int):
        self.need = need
        super().__init__(f"the budget is too small: the smallest plan needs at least {need:,} bytes, the budget "
                         f"allows {limit:,}")


def allocate(tensors: list[TensorPlan], limit: int, fixed: int, objective: str = "relative") -> int:
    """Choose a point per planned tensor minimising total distortion with sum of costs + fixed <= limit.

    Greedy marginal-gain allocation over each tensor's lower convex hull, then a fill pass over all
    points. Returns the bound on the archive bytes used. ConfigError when even the cheapest
    choice does not fit.
    """
    planned = [t for t in tensors if t.role == "planned"]
    hulls, dists = [], []
    for t in planned:
        d = [_distortion(t, p, objective) for p in t.points]
        dists.append(d)
        hulls.append(lower_hull([p.cost for p in t.points], d))
    used = fixed + sum(t.points[h[0]].cost for t, h in zip(planned, hulls))
    if used > limit:
        raise _TooSmall(used, limit)
    pos = [0] * len(planned)
    heap: list[tuple[float, int]] = []

    def push(k: int) -> None:
        h = hulls[k]
        if pos[k] + 1 < len(h):
            a, b = planned[k].points[h[pos[k]]], planned[k].points[h[pos[k] + 1]]
            gain = (dists[k][h[pos[k]]] - dists[k][h[pos[k] + 1]]) / max(b.cost - a.cost, 1)
            heapq.heappush(heap, (-gain, k))

    for k in range(len(planned)):
        push(k)
    while heap:
        _, k = heapq.heappop(heap)
        h = planned[k].points
        step = h[hulls[k][pos[k] + 1]].cost - h[hulls[k][pos[k]]].cost
        if used + step <= limit:
            used += step
            pos[k] += 1
            push(k)
    cur = [hulls[k][pos[k]] for k in range(len(planned))]
    while True:  # spend what is left on the best single move, hull point or not
        best: tuple[float, int, int] | None = None
        for k, t in enumerate(planned):
            c0, d0 = t.points[cur[k]].cost, dists[k][cur[k]]
            for i, p in enumerate(t.points):
                if dists[k][i] < d0 and used - c0 + p.cost <= limit:
                    gain = d0 - dists[k][i]
                    if best is None or gain > best[0]:
                        best = (gain, k, i)
        if best is None:
            break
        _, k, i = best
        used += planned[k].points[i].cost - planned[k].points[cur[k]].cost
        cur[k] = i
    for k, t in enumerate(planned):
        t.choice = t.points[cur[k]]
    return used


def _limit_bytes(budget: Budget, tensors: list[TensorPlan]) -> int | None:
    if budget.kind == "bytes":
        return int(budget.value)
    if budget.kind == "bpw":
        n = sum(t.elements for t in tensors if t.quantized)
        kept = sum(t.kept_bytes for t in tensors if not t.quantized)
        return kept + int(math.floor(budget.value * n / 8))
    return None


def _fixed_bound(tensors: list[TensorPlan]) -> int:
    """Header bound of everything the planner does not choose, plus kept arrays and pinned arrays."""
    total = _fixed_header_bound()
    for t in tensors:
        if t.role == "kept":
            total += t.kept_bytes + t.kept_header
        elif t.role == "pinned" and t.choice is not None:
            total += t.choice.cost
    return total


def _choose_min_sqnr(t: TensorPlan, floor_db: float) -> list[Point]:
    """Points whose estimated SQNR meets the floor, cheapest first."""
    ok = [p for p in t.points if p.sqnr_db >= floor_db]
    return sorted(ok, key=lambda p: (p.cost, p.rel))


def _baselines(tensors: list[TensorPlan], budget: Budget, limit: int | None,
               labels: list[str]) -> tuple[Baseline | None, Baseline | None]:
    """The best single setting for every planned tensor that fits the budget: among the uniform
    candidates, and among all candidates. Sizes exact, quality estimated as for the plan."""
    best: dict[bool, Baseline | None] = {True: None, False: None}
    planned = [t for t in tensors if t.role == "planned"]
    if not planned:
        return None, None
    quant_n = sum(t.elements for t in tensors if t.quantized)
    kept = sum(t.kept_bytes for t in tensors if not t.quantized)
    for label in labels:
        picks: list[Point | None] = []
        ok = True
        for t in tensors:
            if t.role != "planned":
                picks.append(t.choice)
                continue
            match = [p for p in t.points if p.label == label]
            if not match:
                ok = False
                break
            picks.append(match[0])
        if not ok:
            continue
        size = exact_header(tensors, picks) + sum(
            p.nbytes if p is not None else t.kept_bytes for t, p in zip(tensors, picks))
        q = [(t, p) for t, p in zip(tensors, picks) if t.quantized and p is not None]
        if budget.kind == "sqnr":
            if any(p.sqnr_db < budget.value for t, p in q if t.role == "planned"):
                continue
        elif limit is not None and size > limit:
            continue
        b = Baseline(label, size, 8 * (size - kept) / quant_n if quant_n else 0.0,
                     weighted_sqnr((t.elements, p.rel) for t, p in q), overall_sqnr((t.signal, p.rel) for t, p in q))
        for uniform_only in (True, False):
            if uniform_only and not label.startswith("int"):
                continue
            cur = best[uniform_only]
            better = (cur is None or (b.archive_bytes < cur.archive_bytes if budget.kind == "sqnr"
                                      else b.weighted_sqnr_db > cur.weighted_sqnr_db))
            if better:
                best[uniform_only] = b
    return best[True], best[False]


# ---------------------------------------------------------------------------------------------
# the entry points


def _roles(sources: Sources, selection: Selection, recipe: Recipe | None, base: Spec) -> list[tuple[PlanItem, str]]:
    """(item, role) per tensor: kept by --only/--skip/default policy/recipe keep, pinned by a
    recipe rule (it keeps its setting), or planned."""
    items = plan_tensors(sources.refs, base, selection, recipe)
    out = []
    for item in items:
        if item.spec is None:
            out.append((item, "kept"))
        elif recipe is not None and any(r.pattern.search(item.ref.name) for r in recipe.rules):
            out.append((item, "pinned"))
        else:
            out.append((item, "planned"))
    return out


def _measure_all(sources: Sources, selection: Selection, recipe: Recipe | None, base: Spec,
                 candidates: list[Spec], sample: int, keep_nonfinite: bool, jobs: int) -> list[TensorPlan]:
    roles = _roles(sources, selection, recipe, base)
    ctx = _Context(candidates, [candidate_label(c) for c in candidates], sample, keep_nonfinite,
                   [CACHE_BYTES], threading.Lock())
    tensors = list(_ordered_map(lambda ir: _measure(ir[0], ir[1], ctx), roles, jobs))
    _bound_headers(tensors)
    return tensors


def _verify(t: TensorPlan, floor_db: float, keep_nonfinite: bool) -> Encoding:
    """--min-sqnr: encode the whole tensor with the cheapest setting estimated to meet the floor and
    move to the next one while the measured SQNR falls short. Returns the encoding."""
    options = _choose_min_sqnr(t, floor_db)
    xf = None
    for p in options:
        cached = t.cache.get(p.label)
        if cached is not None:
            enc, err = cached
        else:
            if xf is None:
                xf, _ = _load(t.ref, keep_nonfinite)
            enc, err = _encode(xf, p.spec, t.ref)  # type: ignore[arg-type]
        if err.sqnr_db >= floor_db:
            t.choice, t.actual = p, err
            t.cache = {p.label: (enc, err)}
            return enc
    best = max((p.sqnr_db for p in t.points), default=-math.inf)
    raise ConfigError(f"no candidate setting reaches {floor_db:g} dB (the best measured {best:.2f} dB)",
                      path=t.ref.path, tensor=t.ref.name)


def _plan(sources: Sources, inputs: list[str], budget: Budget, selection: Selection, recipe: Recipe | None,
          base: Spec, candidates: list[Spec], sample: int, keep_nonfinite: bool, jobs: int,
          objective: str, verify: bool, start: float) -> Plan:
    if objective not in ("relative", "mse"):
        raise ConfigError(f"objective must be relative or mse, got {objective!r}")
    tensors = _measure_all(sources, selection, recipe, base, candidates, sample, keep_nonfinite, jobs)
    limit = _limit_bytes(budget, tensors)
    labels = list(dict.fromkeys(candidate_label(c) for c in candidates))
    if budget.kind == "sqnr":
        for t in tensors:
            if t.role == "planned":
                options = _choose_min_sqnr(t, budget.value)
                if not options:
                    best = max((p.sqnr_db for p in t.points), default=-math.inf)
                    raise ConfigError(f"no candidate setting reaches {budget.value:g} dB (the best measured "
                                      f"{best:.2f} dB)", path=t.ref.path, tensor=t.ref.name)
                t.choice = options[0]
        if verify:
            for t in tensors:
                if t.role == "planned":
                    _verify(t, budget.value, keep_nonfinite)
                    t.cache = {}
    else:
        assert limit is not None
        try:
            allocate(tensors, limit, _fixed_bound(tensors), objective)
        except _TooSmall as e:
            if budget.kind != "bpw":
                raise
            n = sum(t.elements for t in tensors if t.quantized)
            kept = sum(t.kept_bytes for t in tensors if not t.quantized)
            raise ConfigError(f"--target-bpw {budget.value:g} is too small: the smallest plan takes "
                              f"{8 * (e.need - kept) / n:.3f} bits per weight (headers counted)") from None
    header = exact_header(tensors)
    plan = Plan(inputs, budget, tensors, sources.input_bytes, header, limit, 0.0, sample, labels)
    if limit is not None and plan.predicted_archive_bytes > limit:  # the bounds make this impossible
        raise WorkError(f"internal: the plan needs {plan.predicted_archive_bytes} bytes, over the budget {limit}")
    plan.baseline_uniform, plan.baseline_any = _baselines(tensors, budget, limit, labels)
    plan.planning_seconds = time.perf_counter() - start
    return plan


def _setup(recipe: str | Recipe | None, jobs: int | None, sample: int) -> tuple[Recipe | None, int]:
    if isinstance(recipe, str):
        recipe = load_recipe(recipe)
    jobs = default_jobs() if jobs is None else jobs
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    if sample < 0:
        raise ConfigError(f"--sample must be 0 (whole tensors) or a number of values, got {sample}")
    return recipe, jobs


def plan_budget(inputs: list[str], budget: Budget, spec: Spec | None = None, *, only: str | None = None,
                skip: str | None = None, include_1d: bool = False, keep_nonfinite: bool = False,
                recipe: str | Recipe | None = None, candidates: list[Spec] | None = None, sample: int = SAMPLE,
                jobs: int | None = 1, objective: str = "relative") -> Plan:
    """The dry run: measure, allocate, and predict the archive's exact size (nothing written).

    With --min-sqnr every planned tensor's choice is checked on the whole tensor (so the
    prediction is exact there too); `spec` is the base for recipe-pinned tensors only.
    """
    start = time.perf_counter()
    recipe, jobs = _setup(recipe, jobs, sample)
    with Sources(inputs) as sources:
        refuse_archives(sources)
        plan = _plan(sources, list(inputs), budget, Selection(only, skip, include_1d), recipe, spec or Spec(),
                     candidates or default_candidates(), sample, keep_nonfinite, jobs, objective,
                     verify=budget.kind == "sqnr", start=start)
    for t in plan.tensors:  # encodings kept for a write that a dry run does not do
        t.cache = {}
    return plan


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


def quantize_budget(inputs: list[str], output: str, budget: Budget, spec: Spec | None = None, *,
                    only: str | None = None, skip: str | None = None, include_1d: bool = False,
                    keep_nonfinite: bool = False, recipe: str | Recipe | None = None,
                    candidates: list[Spec] | None = None, sample: int = SAMPLE, jobs: int | None = 1,
                    objective: str = "relative",
                    progress: Callable[[int, int, str], None] | None = None) -> PlannedQuantizeReport:
    """Plan, then write the archive with the chosen settings; its size is the plan's prediction.

    Fully measured tensors reuse their encodings from the measuring pass; with --min-sqnr the
    whole-tensor check is the final encoding (each tensor is encoded once more at most).
    """
    start = time.perf_counter()
    recipe, jobs = _setup(recipe, jobs, sample)
    with Sources(inputs) as sources:
        check_output(output, sources.files, ".safetensors")
        refuse_archives(sources)
        plan = _plan(sources, list(inputs), budget, Selection(only, skip, include_1d), recipe, spec or Spec(),
                     candidates or default_candidates(), sample, keep_nonfinite, jobs, objective,
                     verify=False, start=start)
        writer = ArchiveWriter(output)
        total = sum(t.ref.nbytes for t in plan.tensors)
        reports: list[TensorReport] = []
        stats = ZERO
        done = 0

        def encode(t: TensorPlan) -> tuple[Encoding, ErrorStats | None]:
            if not t.quantized:
                return get_method("keep").encode(t.ref.load(), Spec()), None
            if budget.kind == "sqnr" and t.role == "planned":
                enc = _verify(t, budget.value, keep_nonfinite)
                return enc, t.actual
            assert t.choice is not None
            cached = t.cache.pop(t.choice.label, None)
            if cached is not None:
                return cached
            xf, _ = _load(t.ref, keep_nonfinite)
            return _encode(xf, t.choice.spec, t.ref)  # type: ignore[arg-type]

        try:
            for t, (enc, err) in zip(plan.tensors, _ordered_map(encode, plan.tensors, jobs)):
                nbytes = stored_nbytes(enc, tuple(t.ref.shape))
                if t.choice is not None and (enc.params != t.choice.params or nbytes != t.choice.nbytes):
                    raise WorkError(f"internal: {t.ref.name} encoded to {nbytes} bytes, planned "
                                    f"{t.choice.nbytes}; nothing was written")
                t.cache = {}
                t.actual = err
                note = t.note if not t.quantized else ""
                at = writer.add(t.ref.name, t.ref.code, tuple(t.ref.shape), enc, metrics_doc(err, enc, t.ref), note)
                reports.append(tensor_report(at, nbytes, err))
                if err is not None:
                    stats = stats + err
                done += t.ref.nbytes
                if progress:
                    progress(done, total, t.ref.name)
            header = exact_header(plan.tensors)
            plan.header_bytes = header
            archive_bytes = writer.finish(header)
        except BaseException:
            writer.abort()
            raise
        input_bytes = sources.input_bytes
    report = QuantizeReport(output, list(inputs), reports, input_bytes, archive_bytes, time.perf_counter() - start,
                            stats)
    return PlannedQuantizeReport(plan, report)


# ---------------------------------------------------------------------------------------------
# rate-distortion curve


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
    pareto: bool = False


@dataclass
class Curve:
    inputs: list[str]
    points: list[CurvePoint]
    tensors: int
    elements: int
    sample: int
    seconds: float


def rate_distortion_curve(inputs: list[str], *, only: str | None = None, skip: str | None = None,
                          include_1d: bool = False, keep_nonfinite: bool = False,
                          candidates: list[Spec] | None = None, sample: int = SAMPLE,
                          jobs: int | None = 1) -> Curve:
    """Measure every candidate setting on the model (row samples as the planner does)."""
    start = time.perf_counter()
    _, jobs = _setup(None, jobs, sample)
    candidates = candidates or default_candidates()
    with Sources(inputs) as sources:
        refuse_archives(sources)
        tensors = _measure_all(sources, Selection(only, skip, include_1d), None, Spec(), candidates, sample,
                               keep_nonfinite, jobs)
    planned = [t for t in tensors if t.role == "planned"]
    n = sum(t.elements for t in planned)
    points = []
    for label, spec in dict((candidate_label(c), c) for c in candidates).items():
        picks = [[p for p in t.points if p.label == label] for t in planned]
        if not planned or any(not p for p in picks):
            continue
        chosen = [p[0] for p in picks]
        points.append(CurvePoint(label, spec.method, spec.bits, 8 * sum(p.nbytes for p in chosen) / n if n else 0.0,
                                 overall_sqnr((t.signal, p.rel) for t, p in zip(planned, chosen)),
                                 weighted_sqnr((t.elements, p.rel) for t, p in zip(planned, chosen))))
    for i in pareto_front([p.bits_per_weight for p in points], [-p.weighted_sqnr_db for p in points]):  # type: ignore[arg-type]
        points[i].pareto = True
    return Curve(list(inputs), points, len(planned), n, sample, time.perf_counter() - start)


def plot_curve(curve: Curve, path: str) -> None:
    """A PNG of weighted SQNR against bits per weight, one line per method and group size.
    Needs matplotlib (the optional `plot` extra)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'quantcli[plot]'") from None
    families: dict[str, list[CurvePoint]] = {}
    for p in curve.points:
        family = p.label.split(" ", 1)[1] if " " in p.label else p.label
        name = f"{p.method} {family}".replace("asym ", "")
        families.setdefault(name, []).append(p)
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, pts in sorted(families.items()):
        pts = sorted(pts, key=lambda p: p.bits_per_weight)
        ax.plot([p.bits_per_weight for p in pts], [p.weighted_sqnr_db for p in pts], marker="o", label=name)
    ax.set_xlabel("bits per weight (stored arrays)")
    ax.set_ylabel("weighted SQNR (dB)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120)
    except OSError as e:
        raise ConfigError(f"cannot write the plot: {e.strerror or e}", path=path) from None
    finally:
        plt.close(fig)

