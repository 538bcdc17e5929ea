"""Measuring: each tensor to plan is loaded once and every candidate setting is encoded on a
sample of whole rows (groups run along rows, so a row sample is quantized exactly as in the full
tensor). Stored sizes are exact; the error is the sample's relative error."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from ..errors import NonFiniteError
from ..methods import Encoding, get_method
from ..codecs import entropy
from ..methods import ecsq
from ..methods.base import matrix_shape
from ..packing import packed_nbytes
from ..metrics import ErrorStats, sum_squares
from ..parallel import ordered_map
from ..importance import PARAM as IMPORTANCE_PARAM, Importance
from ..pipeline import encode_and_measure, encode_weighted, load_float32, nonfinite_error, nonfinite_note, weighted_by
from ..selection import PlanItem
from ..sizing import Layout, Sized, entry_bound
from ..sources import TensorRef
from ..spec import Spec
from .allocate import pareto_front
from .candidates import label
from .model import Point, TensorPlan

# the writer stores rans codes only when they beat bit-packing by more than their manifest entry's
# bytes; a bound of the array must allow for that margin
MANIFEST_SLACK = 256
SAMPLE = 1 << 16         # values measured per tensor and candidate (whole rows); see docs/PLANNER.md
CACHE_BYTES = 1 << 28    # encodings of fully measured tensors kept for the final write, at most this much


def sample_rows(rows: int, cols: int, sample: int) -> np.ndarray | None:
    """Indices of the evenly spaced rows to measure on, or None for the whole tensor."""
    if sample <= 0 or rows * cols <= sample or rows <= 1:
        return None
    r = max(1, min(rows, -(-sample // max(cols, 1))))
    if r >= rows:
        return None
    return ((2 * np.arange(r, dtype=np.int64) + 1) * rows) // (2 * r)


def resolve(spec: Spec, shape: tuple[int, ...], xf: np.ndarray) -> Spec:
    """The candidate as it will be encoded on the whole tensor: narrow scales or codebooks that
    would not fit this tensor fall back to float32 (the method says so, from the data), and the
    candidate then asks for float32 outright so that a row sample encodes with the same params."""
    method = get_method(spec.method)
    if method.params_for(shape, spec, xf) != method.params_for(shape, spec):
        return spec.with_options(scale_dtype="float32")
    return spec


@dataclass
class _Context:
    candidates: list[Spec]
    labels: list[str]
    sample: int
    keep_nonfinite: bool
    cache_left: list[int]
    lock: threading.Lock
    importance: Importance | None = None


def weighted_params(t: TensorPlan, spec: Spec, params: dict) -> dict:
    """The params a tensor with statistics records when its method weighs them (else as given)."""
    method = get_method(spec.method)
    if t.stats is None or not method.weighs_importance:
        return params
    return {**method.params_for(tuple(t.ref.shape), method.importance_spec(spec)), IMPORTANCE_PARAM: t.record}


def load(ref: TensorRef, keep_nonfinite: bool) -> tuple[np.ndarray | None, str]:
    """float32 values, or (None, note) for a tensor kept for its NaN/Inf values."""
    try:
        return load_float32(ref), ""
    except NonFiniteError as e:
        if keep_nonfinite:
            return None, nonfinite_note(e.count)
        raise nonfinite_error(ref, e.count) from None


def _keep_plan(ref: TensorRef, note: str) -> TensorPlan:
    return TensorPlan(ref, "kept", note, kept=Sized.kept(ref, note))


def _offer_cache(t: TensorPlan, point: Point, enc: Encoding, err: ErrorStats, ctx: _Context) -> None:
    """Keep the encoding (and its whole-tensor error) of a fully measured tensor for the final
    write, within CACHE_BYTES in all."""
    with ctx.lock:
        if enc.nbytes <= ctx.cache_left[0]:
            ctx.cache_left[0] -= enc.nbytes
            t.cache[point.candidate] = (enc, err)


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
        desc = get_method(item.spec.method).describe(enc.params)
        t.points = [Point(item.spec, item.spec, desc, Sized.stored(ref, item.spec.method, enc.params), rel)]
        t.choice, t.exact, t.sample_rows, t.actual = t.points[0], True, rows, err
        _offer_cache(t, t.points[0], enc, err, ctx)
        return t
    idx = sample_rows(rows, cols, ctx.sample)
    xs = xf if idx is None else xf.reshape(rows, cols)[idx]
    t.exact, t.sample_rows = idx is None, rows if idx is None else len(idx)
    absmax = float(max(-xf.min(), xf.max())) if xf.size else 0.0
    encodings: list[tuple[Encoding, ErrorStats] | None] = []
    for candidate, shown in zip(ctx.candidates, ctx.labels):
        if candidate.method == "ecsq":  # measured whole: exact error, a bound of its coded size
            point = ecsq_point(t, candidate, shown, xf)
            if point is not None:
                t.points.append(point)
                encodings.append(None)
            continue
        spec = candidate
        if spec.method in ("fp16", "bf16"):
            if spec.method == "fp16" and absmax > 65504.0:
                spec, shown = spec.with_options(method="bf16"), "bf16"
        else:
            spec = resolve(spec, shape, xf)
        params = get_method(spec.method).params_for(shape, spec)
        enc, err = encode_and_measure(xs, spec, ref)
        if t.exact:
            params = enc.params  # the truth, when measured on the whole tensor
        rel = err.error / err.signal if err.signal > 0 else 0.0
        if t.stats is not None:  # measured plainly; encoded with the statistics at the write
            params = weighted_params(t, spec, params)
        t.points.append(Point(candidate, spec, shown, Sized.stored(ref, spec.method, params), rel))
        encodings.append((enc, err) if t.exact and t.stats is None else None)
    if t.exact:
        for i in pareto_front([p.nbytes for p in t.points], [p.rel for p in t.points]):
            enc_err = encodings[i]
            if enc_err is not None:  # ecsq points are cheap to encode again at the write
                _offer_cache(t, t.points[i], *enc_err, ctx)
    return t


def ecsq_point(t: TensorPlan, candidate: Spec, shown: str, xf: np.ndarray) -> Point | None:
    """An ecsq candidate on the whole tensor (rounding is cheap): its exact error, and an upper
    bound of its stored bytes from the codes' histogram (`entropy.size_bound`), so a plan never
    exceeds its budget; None when the step needs more levels than the coder's alphabet. (With a
    Gram the write compensates the rounding; should that not fit this bound, plain rounding at the
    same step, which does, is written instead.)"""
    ref, signal = t.ref, t.signal
    rs = cs = None
    y = xf
    if t.stats is not None:  # as ecsq encodes with statistics: steps per row and column
        rs, cs = ecsq.importance_scales(t.stats.rows), ecsq.importance_scales(t.stats.cols)
        y = ecsq.scale_matrix(xf.reshape(matrix_shape(tuple(ref.shape))), rs, cs, divide=True).reshape(xf.shape)
    step = ecsq.step_from_rms(candidate.step_rms, y) if candidate.step_rms is not None \
        else np.float32(candidate.step)
    q = ecsq.quantize(y, step)
    lo, hi = (int(q.min()), int(q.max())) if q.size else (0, 0)
    levels = hi - lo + 1
    if levels > ecsq.MAX_LEVELS:
        return None
    if t.stats is None:
        rel = sum_squares(xf - ecsq.reconstruct(q, step)) / signal if signal > 0 else 0.0
    else:
        recon = ecsq.scale_matrix(ecsq.reconstruct(q, step).reshape(matrix_shape(tuple(ref.shape))), rs, cs,
                                  divide=False)
        rel = sum_squares(xf - recon.reshape(xf.shape)) / signal if signal > 0 else 0.0
    bits = max(1, math.ceil(math.log2(levels)))
    alphabet = max(2, levels)
    counts = np.bincount((q - lo).reshape(-1), minlength=alphabet)
    del q
    bound = min(packed_nbytes(xf.size, bits), entropy.size_bound(counts) + MANIFEST_SLACK)
    params: dict = {"step": float(step), "offset": lo, "levels": levels, "bits": bits}
    layout: Layout = {"codes": (np.dtype(np.uint8), (bound,))}
    for key, scale in (("row_scale", rs), ("column_scale", cs)):
        if scale is not None:  # stored plain (storage.py), float16
            params[key] = True
            layout[key] = (np.dtype(np.float16), (scale.size,))
    if t.stats is not None:
        params[IMPORTANCE_PARAM] = t.record
    codecs = {"codes": {"codec": "rans", "alphabet": alphabet, "lanes": -(-xf.size // entropy.CODES_PER_LANE),
                        "table_nbytes": entropy.table_nbytes(counts),
                        "nbytes": bound}}
    sized = Sized(ref, "ecsq", params, layout, "", codecs, exact=False)
    spec = candidate.with_options(step=float(step), step_rms=None)
    return Point(candidate, spec, shown, sized, rel)


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
                jobs: int, importance: Importance | None = None) -> list[TensorPlan]:
    ctx = _Context(candidates, [label(c) for c in candidates], sample, keep_nonfinite,
                   [CACHE_BYTES], threading.Lock(), importance)
    tensors = list(ordered_map(lambda ir: _measure(ir[0], ir[1], ctx), roles(items), jobs))
    bound_headers(tensors)
    return tensors
