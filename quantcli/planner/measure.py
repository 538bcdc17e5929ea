"""Measuring: each tensor to plan is loaded once, and every candidate setting is encoded on a
sample of whole rows (groups and trellises run along rows, so a sampled row is quantized exactly
as in the full tensor). What stays in memory afterwards is per-tensor: the candidates' points
(sizes, sample errors) and, for tensors a method may re-solve continuously, the sample rows
(at most `sample` values), never the tensor.

Sizes: a fixed-rate candidate's stored bytes are exact from its params and layout (shapes only).
An entropy-coded candidate's bytes are predicted from the sample: order-0 entropy of its codes,
scaled to the tensor (the allocation only ranks methods with it; the re-solve then sizes the
chosen steps by coding samples with the real codec, `solve.py`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import InputError, NonFiniteError, QuantError
from ..calibration.importance import PARAM as IMPORTANCE_PARAM, Importance
from ..methods import Encoding, get_method
from ..methods.base import matrix_shape
from ..metrics import ErrorStats, sum_squares
from ..pipeline.parallel import ordered_map
from ..pipeline.write import encode_and_measure, encode_weighted, load_float32, nonfinite_error, nonfinite_note, weighted_by
from ..pipeline.selection import PlanItem
from ..archive.sizing import Sized, entry_bound
from ..io.sources import TensorRef
from ..spec import Spec
from ..archive import storage
from .candidates import label
from .model import Point, TensorPlan

SAMPLE = 1 << 16         # values measured per tensor and candidate (whole rows); see docs/PLANNER.md
TABLE_SLACK = 16         # bytes a coded array's estimate adds for its codec's own header
RANK_ROWS = 8            # below 4x this many sample rows, candidates are ranked on all of them


def sample_size(sample: int, n: int) -> int:
    """Values to sample from a tensor of n: `sample`, and up to 4x that for tensors over 64x it
    (n / 64): a size predicted from s values extrapolates the sample's coded bytes n / s times, so
    its noise grows with n / s; this keeps n / s at most 64 up to 256 x `sample` values."""
    return sample if sample <= 0 else max(sample, min(4 * sample, n // 64))


def sample_rows(rows: int, cols: int, sample: int, energy: np.ndarray | None = None) -> np.ndarray | None:
    """Indices (ascending) of the rows to measure on, or None for the whole tensor: evenly spaced,
    or, given each row's `energy` (sum of squares), evenly spaced in the order of their energy
    (a stratified sample: a row's rate and error go with its scale, so the sample spans the
    scales of the tensor's rows in proportion instead of by chance)."""
    if sample <= 0 or rows * cols <= sample or rows <= 1:
        return None
    r = max(1, min(rows, -(-sample // max(cols, 1))))
    if r >= rows:
        return None
    picks = ((2 * np.arange(r, dtype=np.int64) + 1) * rows) // (2 * r)
    if energy is None:
        return picks
    return np.sort(np.argsort(energy, kind="stable")[picks])


def load(ref: TensorRef, keep_nonfinite: bool) -> tuple[np.ndarray | None, str]:
    """float32 values, or (None, note) for a tensor kept for its NaN/Inf values."""
    try:
        return load_float32(ref), ""
    except NonFiniteError as e:
        if keep_nonfinite:
            return None, nonfinite_note(e.count)
        raise nonfinite_error(ref, e.count) from None


@dataclass
class _Context:
    candidates: list[Spec]
    labels: list[str]
    sample: int
    keep_nonfinite: bool
    importance: Importance | None = None


def weighted_params(t: TensorPlan, spec: Spec, params: dict) -> dict:
    """The params a tensor with statistics records when its method weighs them (else as given)."""
    method = get_method(spec.method)
    if t.stats is None or not method.weighs_importance:
        return params
    return {**method.params_for(tuple(t.ref.shape), method.importance_spec(spec)), IMPORTANCE_PARAM: t.record}


def _keep_plan(ref: TensorRef, note: str) -> TensorPlan:
    return TensorPlan(ref, "kept", note, kept=Sized.kept(ref, note))


def order0_bits(codes: np.ndarray) -> float:
    """Order-0 code length of `codes` in bits (their empirical entropy times their number)."""
    if not codes.size:
        return 0.0
    counts = np.bincount(codes.reshape(-1).astype(np.int64) - int(codes.min())).astype(np.float64)
    counts = counts[counts > 0]
    return float(-(counts * np.log2(counts / codes.size)).sum())


def predicted(t: TensorPlan, enc: Encoding, sample_values: int,
              coded_bytes: Callable[[str, np.ndarray], int | None] | None = None) -> Sized:
    """How tensor `t` would be stored with the params of `enc`, an entropy-coded encoding of
    `sample_values` of its values: plain arrays exactly (from the layout of the whole tensor),
    coded arrays predicted from the sample (`coded_bytes(role, array)`, None for an array kept on
    its default codec; by default order-0 entropy scaled to the tensor)."""
    method = get_method(enc.method)
    shape = tuple(t.ref.shape)
    scale = t.elements / max(sample_values, 1)
    codecs: dict[str, dict] = {}
    for role, lay in method.layout(shape, enc.params).items():
        hint = method.storage_hint(role, enc.params)
        if lay.bits is None or hint is not None and hint.codec is None:
            continue
        a = enc.arrays[role]
        nbytes = coded_bytes(role, a) if coded_bytes is not None else \
            math.ceil(order0_bits(a) * scale / 8) + 2 * int(a.max(initial=0)) + TABLE_SLACK
        if nbytes is None:  # stored with its default codec (coding would not have been smaller)
            continue
        codecs[role] = {"codec": hint.codec if hint is not None else "rans", "nbytes": int(nbytes)}
    layout = storage.stored_layout(enc.method, shape, enc.params, codecs)
    return Sized(t.ref, enc.method, enc.params, layout, "", codecs or None, exact=False)


def _probe(t: TensorPlan, candidate: Spec, shown: str, xs: np.ndarray, peak: np.ndarray) -> Point | None:
    """One candidate on the sample rows `xs`; `peak` (the sample plus the row holding the tensor's
    largest magnitude) decides data-dependent params (`Method.planner_spec`)."""
    shape = tuple(t.ref.shape)
    try:  # a candidate this tensor cannot take (e.g. a step past float32's range) is no point
        spec = get_method(candidate.method).planner_spec(candidate, shape, peak)
        enc, err = encode_and_measure(xs, spec, t.ref)
    except (InputError, QuantError):  # e.g. more levels than the coder's alphabet at this step
        return None
    method = get_method(spec.method)
    if spec.method != candidate.method:
        shown = method.candidate_label(spec)
    rel = err.error / err.signal if err.signal > 0 else 0.0
    if method.entropy_coded:
        sized = predicted(t, enc, xs.size)
    else:
        params = enc.params if t.exact else method.params_for(shape, spec)
        sized = Sized.stored(t.ref, spec.method, weighted_params(t, spec, params))
    return Point(candidate, spec, shown, sized, rel)


def _measure(item: PlanItem, role: str, ctx: _Context) -> TensorPlan:
    """Load one tensor and measure its candidates (or its pinned setting) on a row sample."""
    ref = item.ref
    if role == "kept":
        return _keep_plan(ref, item.note)
    xf, note = load(ref, ctx.keep_nonfinite)
    if xf is None:
        return _keep_plan(ref, note)
    shape = tuple(ref.shape)
    rows, cols = matrix_shape(shape)
    t = TensorPlan(ref, role, "", signal=sum_squares(xf), rows=rows)
    imp = ctx.importance
    if imp is not None and ref.name in imp.tensors and (
            role == "planned" or item.spec is not None and weighted_by(imp, ref, item.spec)):
        t.stats, t.record = imp.for_tensor(ref.name, shape), imp.record
    if role == "pinned":  # the recipe's setting, exactly as it will be written: encode it whole
        assert item.spec is not None
        if t.stats is not None:
            enc, err = encode_weighted(xf, item.spec, ref, t.stats, t.record)
        else:
            enc, err = encode_and_measure(xf, item.spec, ref)
        rel = err.error / err.signal if err.signal > 0 else 0.0
        method = get_method(item.spec.method)
        if method.entropy_coded:
            arrays, codecs = storage.store(enc, shape, "entropy")
            sized = Sized(ref, enc.method, enc.params, storage.stored_layout(enc.method, shape, enc.params, codecs),
                          "", codecs or None)
        else:
            sized = Sized.stored(ref, item.spec.method, enc.params)
        t.points = [Point(item.spec, item.spec, method.describe(enc.params), sized, rel)]
        t.choice, t.exact, t.sample_rows, t.actual = t.points[0], True, rows, err
        return t
    m = xf.reshape(rows, cols)
    idx = sample_rows(rows, cols, sample_size(ctx.sample, xf.size),
                      np.einsum("ij,ij->i", m, m, dtype=np.float64) if xf.size else None)
    xs = xf if idx is None else np.ascontiguousarray(m[idx]).reshape((len(idx),) + shape[1:])
    t.exact, t.sample_rows = idx is None, rows if idx is None else len(idx)
    peak = xs
    if idx is not None and xf.size:
        top = int(np.argmax(np.maximum(m.max(axis=1), -m.min(axis=1))))
        if top not in set(idx.tolist()):
            peak = np.concatenate([xs.reshape(len(idx), cols), m[top:top + 1]]).reshape((len(idx) + 1,) + shape[1:])
    del m
    rank = xs  # the candidates are ranked on a quarter of the sample rows (the re-solve uses them all)
    if idx is not None and len(idx) >= 4 * RANK_ROWS:
        rank = np.ascontiguousarray(xs.reshape(len(idx), cols)[::4]).reshape((-(-len(idx) // 4),) + shape[1:])
    for candidate, shown in zip(ctx.candidates, ctx.labels):
        point = _probe(t, candidate, shown, rank, peak)
        if point is not None:
            t.points.append(point)
    if any(get_method(p.spec.method).step(p.params) is not None for p in t.points):
        t.sample = np.array(xs, np.float32, copy=True)  # for the continuous re-solve: the rows only
    return t


def bound_headers(tensors: list[TensorPlan]) -> None:
    """Header bounds of every point and kept tensor, with data offsets as long as the largest
    archive any choice could make."""
    largest = sum(max((p.nbytes for p in t.points), default=t.kept_bytes) for t in tensors)
    digits = len(str(largest))
    for t in tensors:
        if t.kept is not None:
            t.kept_header = entry_bound(t.kept, digits)
        for p in t.points:
            p.header = entry_bound(p.sized, digits)


def roles(items: list[PlanItem]) -> list[tuple[PlanItem, str]]:
    """(item, role) per tensor: kept (--only/--skip/default policy/recipe keep), pinned by a
    recipe rule (it keeps its setting), or planned."""
    return [(item, "kept" if item.spec is None else "pinned" if item.pinned else "planned") for item in items]


def measure_all(items: list[PlanItem], candidates: list[Spec], sample: int, keep_nonfinite: bool,
                jobs: int, importance: Importance | None = None,
                step: Callable[[TensorPlan], None] | None = None) -> list[TensorPlan]:
    """Every tensor measured (`jobs` at a time); `step(t)` after each, in order."""
    ctx = _Context(candidates, [label(c) for c in candidates], sample, keep_nonfinite, importance)
    tensors = []
    for t in ordered_map(lambda ir: _measure(ir[0], ir[1], ctx), roles(items), jobs):
        tensors.append(t)
        if step is not None:
            step(t)
    bound_headers(tensors)
    return tensors


__all__ = ["SAMPLE", "sample_rows", "load", "measure_all", "predicted", "order0_bits", "ErrorStats"]
