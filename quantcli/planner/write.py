"""The planned write: every tensor encoded ONCE with its chosen setting (`--jobs` worker processes
or in this process, stored arrays spilled to a file beside the output, never all in memory),
then sized exactly, corrected if over the budget, and published.

The budget holds whatever the samples predicted: after the write the archive's exact size is
known (the header sized as the writer builds it, every metric at its longest, and padded to that).
If it is under the limit by more than 0.05% (the samples over-predicted), one fill pass encodes
one stepped tensor again at a finer step that spends 80% of what is left (chosen as below). If
it is over the limit, at most two correction passes follow before anything is published:

1. the fewest tensors with a continuous step (ecsq) are encoded again at a coarser step that
   frees the excess (plus 5% and 64 bytes) at half the high-rate rule's bytes per ln step;
2. if still over, tensors move to fixed-rate settings whose sizes are exact before encoding (params
   resolved on the whole tensor), the least distortion added per byte saved first, until the
   exact total fits. If no such moves fit, the budget is too small (ConfigError), nothing written.
   (With --importance, Gram compensation may widen a fixed-rate setting's scales beyond what was
   resolved, so there pass 2 may run once more.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Iterator, Mapping

import numpy as np

from ..errors import ConfigError, WorkError
from ..calibration.importance import PARAM as IMPORTANCE_PARAM, Importance
from ..methods import KEEP, get_method
from ..metrics import ErrorStats
from ..pipeline.parallel import PARALLEL_MIN_BYTES, Spill, Spilled, Workers
from ..pipeline.write import Encoded, encode_tensor, storage_codec
from ..io.safetensors import DTYPES
from ..pipeline.selection import PlanItem
from ..archive.sizing import Sized, header_bytes
from ..spec import Spec
from .measure import load
from .model import Point, TensorPlan
from .progress import PhaseClock, PhaseProgress
from .solve import Solved

SPARE = 1.05       # correction pass 1 frees this much more than the excess
SLACK_BYTES = 64   # ... plus this much (the header changes with the new params)
FILL_MIN = 5e-4    # a written archive this far under its budget gets one fill pass ...
FILL_USE = 0.8     # ... spending this much of what is left on one tensor's finer step


@dataclass
class Written:
    """One tensor as written: where its stored arrays are, its error and its exact size."""

    spilled: Spilled
    err: ErrorStats | None
    note: str
    fd: int
    sized: Sized


def _sized(t: TensorPlan, s: Spilled, note: str) -> Sized:
    if s.method == KEEP:
        return Sized.kept(t.ref, note)
    layout = {role: (np.dtype(DTYPES[code]), tuple(shape)) for role, (code, shape, _, _) in s.pieces.items()}
    return Sized(t.ref, s.method, s.params, layout, note if t.role == "kept" else "", s.codecs or None)


class Writer:
    """Encodes plan tensors into spill files (workers or in process) and keeps where they are."""

    def __init__(self, tensors: list[TensorPlan], output: str, inputs: list[str], jobs: int, keep_nonfinite: bool,
                 importance: Importance | None):
        encode = encode_tensor if importance is None else partial(encode_tensor, importance=importance)
        codec = partial(_codec)
        big = sum(t.ref.nbytes for t in tensors) >= PARALLEL_MIN_BYTES
        self.engine: Workers | Spill = (Workers(inputs, output, jobs, keep_nonfinite, encode, codec)
                                        if jobs > 1 and len(tensors) > 1 and big
                                        else Spill(output, keep_nonfinite, encode, codec))
        self.tensors = tensors
        self.done: dict[int, Written] = {}

    def write(self, idx: list[int], specs: Mapping[int, Spec | None], clock: PhaseClock) -> None:
        items = [PlanItem(self.tensors[i].ref, specs[i], self.tensors[i].note) for i in idx]
        for i, (_, (spilled, err, note)) in zip(idx, self.engine.run(items)):
            t = self.tensors[i]
            self.done[i] = Written(spilled, err, note, self.engine.spill_fd(spilled), _sized(t, spilled, note))
            clock.step(t.ref.nbytes, t.ref.name)

    def total(self) -> tuple[int, int]:
        """(exact archive bytes, exact header bytes) of what is written so far (all tensors)."""
        sizes = [self.done[i].sized for i in range(len(self.tensors))]
        header = header_bytes(sizes)
        return header + sum(s.nbytes for s in sizes), header

    def results(self) -> Iterator[Encoded]:
        for i, t in enumerate(self.tensors):
            w = self.done[i]
            yield Encoded(t.ref, w.spilled, w.err, w.note, w.fd)

    def close(self, ok: bool) -> None:
        self.engine.close(ok)


def _codec(item: PlanItem) -> str:
    return storage_codec(item.spec, Spec())


def _rel(err: ErrorStats | None) -> float:
    return err.error / err.signal if err is not None and err.signal > 0 else 0.0


def _restep(w: Writer, solved: Solved | None, change: float) -> dict[int, Spec]:
    """New steps for the fewest stepped tensors so that their bytes change by about `change`
    (negative: free bytes, a coarser step; positive: spend them, a finer one), each moved by at
    most an octave. The bytes per unit of ln step are taken as the high-rate rule's n / (8 ln 2)
    when spending (the true slope is at most that: never spends more than asked, near enough) and
    half of it when freeing (frees at least what is asked down to ~2 bits per weight). One tensor
    when one can: among those whose weighted distortion changes best (within 25%; to first order
    all do at the Lagrangian optimum), the smallest, the quickest to encode again."""
    if solved is None:
        return {}
    index = {id(t): i for i, t in enumerate(w.tensors)}
    options = []
    for t, wt in zip(solved.tensors, solved.weights):
        i = index[id(t)]
        written = w.done[i]
        step = get_method(written.spilled.method).step(written.spilled.params)
        if step is None or t.choice is None:
            continue
        slope = t.elements / (8 * math.log(2)) * (1.0 if change > 0 else 0.5)
        options.append((i, t, wt, step, slope, written.sized.nbytes))
    single = []
    for i, t, wt, step, slope, nbytes in options:
        delta = -change / slope  # ln step change
        if abs(delta) <= math.log(2) and abs(change) < nbytes / 2:
            worse = wt * _rel(w.done[i].err) * (math.exp(2 * delta) - 1)  # > 0 coarser, < 0 finer
            single.append((worse, t.elements, i, t, step * math.exp(delta)))
    if single:
        best = min(x[0] for x in single)
        band = [x for x in single if x[0] <= best + 0.25 * abs(best)]
        _, _, i, t, step = min(band, key=lambda x: (x[1], x[2]))
        assert t.choice is not None
        return {i: get_method(t.choice.spec.method).at_step(t.choice.spec, step, bool(t.choice.spec.trellis))}
    if change >= 0:
        return {}
    out: dict[int, Spec] = {}
    freed = 0.0
    for i, t, _, step, slope, _ in sorted(options, key=lambda o: -o[4]):  # largest savings first
        if freed >= -change:
            break
        assert t.choice is not None
        out[i] = get_method(t.choice.spec.method).at_step(t.choice.spec, step * 2, bool(t.choice.spec.trellis))
        freed += slope * math.log(2)
    return out


def _pass_exact(w: Writer, weights: dict[int, float], limit: int, keep_nonfinite: bool) -> dict[int, Spec]:
    """Correction pass 2: fixed-rate moves with exact sizes (params resolved on the whole tensor),
    the least distortion added per byte saved first, until the exact total fits `limit`."""
    moves: list[tuple[float, int, Point]] = []
    for i, t in enumerate(w.tensors):
        if t.role != "planned" or i not in weights:
            continue
        written = w.done[i]
        now, d0 = written.sized.nbytes, weights[i] * _rel(written.err)
        for p in t.points:
            if get_method(p.spec.method).entropy_coded or p.nbytes >= now:
                continue
            moves.append(((weights[i] * p.rel - d0) / (now - p.nbytes), i, p))
    moves.sort(key=lambda m: (m[0], m[1]))
    exact: dict[int, dict[int, tuple[Spec, Sized]]] = {}  # tensor -> point -> its exact setting and size
    chosen: dict[int, tuple[Spec, Sized]] = {}
    for _, i, p in moves:
        if i not in exact:  # the tensor's params resolved on its whole data, once
            t = w.tensors[i]
            xf, _ = load(t.ref, keep_nonfinite)
            exact[i] = {}
            for q in t.points:
                method = get_method(q.spec.method)
                if xf is not None and not method.entropy_coded:
                    spec = method.planner_spec(q.spec, tuple(t.ref.shape), xf)
                    if t.stats is not None and method.weighs_importance:  # encoded with the statistics
                        params = {**method.params_for(tuple(t.ref.shape), method.importance_spec(spec), xf),
                                  IMPORTANCE_PARAM: t.record}
                    else:
                        params = method.params_for(tuple(t.ref.shape), spec, xf)
                    exact[i][id(q)] = spec, Sized.stored(t.ref, spec.method, params)
            del xf
        move = exact[i].get(id(p))
        if move is None or i in chosen and move[1].nbytes >= chosen[i][1].nbytes:
            continue
        chosen[i] = move
        sizes = [chosen[j][1] if j in chosen else w.done[j].sized for j in range(len(w.tensors))]
        if header_bytes(sizes) + sum(s.nbytes for s in sizes) <= limit:
            return {j: spec for j, (spec, _) in chosen.items()}
    raise ConfigError(f"the budget of {limit} bytes is too small: even the smallest settings the planner has "
                      "for the tensors written over it do not fit")


def write_planned(tensors: list[TensorPlan], output: str, inputs: list[str], limit: int | None, weights: dict[int, float],
                  solved: Solved | None, jobs: int, keep_nonfinite: bool, importance: Importance | None,
                  floor: float | None, progress: PhaseProgress | None) -> tuple[Writer, int, int]:
    """Encode every tensor once, correct (at most 2 passes) if over `limit`; with a `floor`
    (--min-sqnr) move each tensor short of it to its next cheapest setting instead. Returns the
    writer holding the spilled tensors (the caller publishes and closes it), the exact header
    bytes and the number of correction passes."""
    w = Writer(tensors, output, inputs, jobs, keep_nonfinite, importance)
    ok = False
    try:
        specs = {i: t.choice.spec if t.choice is not None else None for i, t in enumerate(tensors)}
        clock = PhaseClock(progress, "writing", len(tensors), sum(t.ref.nbytes for t in tensors))
        w.write(list(range(len(tensors))), specs, clock)
        passes = 0
        if floor is not None:
            passes = _floor_passes(w, floor)
        total, header = w.total()
        if limit is not None and limit - total > FILL_MIN * limit:  # the samples over-predicted: fill
            fix = _restep(w, solved, (limit - total) * FILL_USE)
            if fix:
                w.write(sorted(fix), fix, PhaseClock(progress, "filling", len(fix),
                                                     sum(tensors[i].ref.nbytes for i in fix)))
                for i, spec in fix.items():
                    _record(tensors[i], spec, w.done[i])
                total, header = w.total()
        # with statistics a Gram-compensated fixed-rate encoding may widen its scales beyond what
        # was resolved, so there the exact pass may run once more
        most = 2 if importance is None else 3
        while limit is not None and total > limit:
            if passes >= most:
                raise WorkError(f"internal: the archive would take {total} bytes after {passes} correction passes, "
                                f"over the budget {limit}; nothing was written")
            fix = _restep(w, solved, -((total - limit) * SPARE + SLACK_BYTES)) if passes == 0 else {}
            if not fix:
                passes = max(passes, 1)
                fix = _pass_exact(w, weights, limit, keep_nonfinite)
            passes += 1
            w.write(sorted(fix), fix, PhaseClock(progress, "correcting", len(fix),
                                                 sum(tensors[i].ref.nbytes for i in fix)))
            for i, spec in fix.items():
                _record(tensors[i], spec, w.done[i])
            total, header = w.total()
        ok = True
    finally:
        if not ok:
            w.close(False)
    return w, header, passes


def _record(t: TensorPlan, spec: Spec, written: Written) -> None:
    """The tensor's choice becomes what was written (for the report)."""
    s = written.spilled
    point = Point(spec, spec, get_method(s.method).describe(s.params), written.sized, _rel(written.err))
    t.points.append(point)
    t.choice = point


def _floor_passes(w: Writer, floor: float) -> int:
    """--min-sqnr: a tensor whose written SQNR falls short moves to its next cheapest setting
    estimated to meet the floor, until each meets it (the floor holds on the whole tensor)."""
    passes = 0
    while True:
        fix: dict[int, Spec] = {}
        for i, t in enumerate(w.tensors):
            err = w.done[i].err
            if t.role != "planned" or t.choice is None or err is None or err.sqnr_db >= floor:
                continue
            order = sorted((p for p in t.points if p.sqnr_db >= floor), key=lambda p: (p.cost, p.rel))
            ids = [id(p) for p in order]
            later = order[ids.index(id(t.choice)) + 1:] if id(t.choice) in ids else []
            if not later:
                raise ConfigError(f"no candidate setting reaches {floor:g} dB (measured {err.sqnr_db:.2f} dB "
                                  "on the whole tensor)", path=t.ref.path, tensor=t.ref.name)
            t.choice = later[0]
            fix[i] = later[0].spec
        if not fix:
            return passes
        passes += 1
        w.write(sorted(fix), fix, PhaseClock(None, "checking", len(fix), len(fix)))


__all__ = ["write_planned", "Writer"]
