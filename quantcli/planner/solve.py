"""After the allocation: re-solve the continuous steps of the tensors whose choice has one
(`Method.step`, e.g. ecsq), on their row samples.

The ladder lets the allocation compare such a method with the others per tensor, but only at
ladder points. For entropy-coded scalar quantization the Lagrangian optimum has a closed form:
with distortion weight w_t on tensor t's relative error the best step is proportional to
sqrt(signal_t / w_t) (at high rate a tensor's error is n_t step^2 / 12 and its rate falls by n_t
bits when its step doubles): one common step for `mse`, a step proportional to each tensor's RMS
for `relative` (docs/STUDY-ecsq.md). So the tensors share one factor theta, searched (secant
steps on ln theta inside a bracket) so that their PREDICTED bytes fill what the budget leaves
them. Each trial encodes only the samples, with the method's fine rounding (`at_step(fine=True)`:
ecsq's trellis), and stores them with the real codec; a coded array's bytes are predicted as
T + (B - T) n / s, B its bytes on the s sampled values and T its fixed part (tables), measured once
per tensor from the sample and half of it. The write then encodes each tensor once
(`write.py`), which also keeps the budget whatever the prediction's error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import InputError, QuantError
from ..methods import get_method
from ..pipeline.parallel import ordered_map
from ..pipeline.write import encode_and_measure
from ..archive.sizing import entry_bound
from ..archive import storage
from .measure import predicted
from .model import Point, Refined, TensorPlan
from .progress import PhaseClock, PhaseProgress

FINE_RATIO = 0.52   # a fine (trellis) step gives about the bytes of plain rounding at this fraction of its step
EVALS = 5           # passes over the samples, at most
TOLERANCE = 1e-3    # stop once the bytes left unused are below this fraction of the budget
# Gram compensation costs about one bit per weight at an equal step (measured on MiniLM's layers:
# +0.9-1.0 bit) and buys 4-6 dB of output SQNR at an equal rate with a step twice as large: a
# compensated tensor takes twice the step of the allocation's rule
COMPENSATED_STEP = 2.0


@dataclass
class Trial:
    """The tensors at one factor theta: points (None where the step is infeasible), total
    predicted cost (bytes + header bounds) and weighted distortion."""

    theta: float
    points: list[Point | None]
    cost: float
    dist: float

    @property
    def ok(self) -> bool:
        return all(p is not None for p in self.points)


def search(evaluate: Callable[[float], Trial], theta0: float, budget: float, per_lnstep: float,
           evals: int) -> tuple[Trial | None, int]:
    """The smallest theta whose cost fits `budget` (cost falls as theta grows, by about
    `per_lnstep` bytes per unit of ln theta): secant steps on ln theta inside a bracket, the best
    feasible trial kept. Returns (best feasible trial or None, trials made)."""
    good: Trial | None = None
    bad: Trial | None = None
    theta, n = theta0, 0
    while n < evals:
        trial = evaluate(theta)
        n += 1
        if trial.ok and trial.cost <= budget:
            if good is None or trial.theta < good.theta:
                good = trial
            if budget - trial.cost <= TOLERANCE * budget:
                break
        elif bad is None or trial.theta > bad.theta:
            bad = trial
        if good is not None and bad is not None:
            if good.theta <= bad.theta * (1 + 1e-4):
                break
            lo, hi = math.log(bad.theta), math.log(good.theta)
            if bad.ok and good.cost > bad.cost:  # secant on (ln theta, cost), kept inside the bracket
                f = (bad.cost - budget) / (bad.cost - good.cost)
                f = min(max(f, 0.1), 0.9)
            else:
                f = 0.5
            theta = math.exp(lo + f * (hi - lo))
        else:
            ref = good or bad  # one side only: aim at half the tolerance inside the budget, with
            assert ref is not None  # steps doubling while the side stays the same
            gap = ref.cost - budget * (1 - TOLERANCE / 2) if ref.ok else per_lnstep
            theta = ref.theta * math.exp(max(min(gap / per_lnstep * 2.0 ** (n - 1), 1.0), -1.0))
    return good, n


def _measured_scale(t: TensorPlan, w: float, p: Point | None) -> float:
    """sqrt(n_t / k_t), k_t = w_t rel_t / step_t^2 from the tensor's ladder choice: the step rule
    when a tensor's error is not its plain relative error (--importance weighs it). It is the
    plain rule's sqrt(12 signal_t / w_t) where rel_t = step_t^2 / (12 mean x_t^2), as at high rate."""
    step = get_method(p.spec.method).step(p.params) if p is not None else None
    if p is None or step is None or not w > 0 or not p.rel > 0:
        return 0.0
    return math.sqrt(t.elements * step ** 2 / (w * p.rel))


def _coded(t: TensorPlan, enc_bytes: dict[str, int], half: Callable[[], tuple[dict[str, int], int]] | None,
           s: int) -> Callable[[str, np.ndarray], int | None]:
    """Predicted bytes of each coded array of tensor t from its bytes on the s-value sample."""
    if half is not None and any(role not in t.tables for role in enc_bytes):
        h, s2 = half()
        for role, b in enc_bytes.items():
            b2 = h.get(role)
            if b2 is None or s <= s2:
                t.tables[role] = 0.0
                continue
            per = (b - b2) / (s - s2)
            t.tables[role] = float(min(max(b - s * per, 0.0), b))
    scale = t.elements / max(s, 1)
    def coded(role: str, a: np.ndarray) -> int | None:
        if role not in enc_bytes:  # the sample's codes were not worth coding: stored bit-packed
            return None
        fixed = t.tables.get(role, 0.0)
        return math.ceil(fixed + (enc_bytes[role] - fixed) * scale)
    return coded


def _point(t: TensorPlan, base: Point, step: float, fine: bool, digits: int) -> Point | None:
    """The tensor at `step` on its sample: predicted whole-tensor size and sample error."""
    method = get_method(base.spec.method)
    spec = method.at_step(base.spec, step, fine)
    xs = t.sample
    assert xs is not None
    try:
        enc, err = encode_and_measure(xs, spec, t.ref)
    except (InputError, QuantError):  # more levels than the coder's alphabet at this step
        return None
    arrays, codecs = storage.store(enc, tuple(xs.shape), "entropy")
    coded = {role: int(arrays[role].nbytes) for role in codecs}
    half = None
    if not t.exact and xs.shape[0] >= 4:
        def half() -> tuple[dict[str, int], int]:
            h = np.ascontiguousarray(xs[::2])  # every other row: as representative as the sample
            arrays2, codecs2 = storage.store(encode_and_measure(h, spec, t.ref)[0], tuple(h.shape),
                                                     "entropy")
            return {role: int(arrays2[role].nbytes) for role in codecs2}, h.size
    sized = predicted(t, enc, xs.size, _coded(t, coded, half, xs.size if not t.exact else t.elements))
    if t.exact:
        sized = type(sized)(t.ref, enc.method, enc.params,
                            storage.stored_layout(enc.method, tuple(t.ref.shape), enc.params, codecs), "",
                            codecs or None, exact=True)
    rel = err.error / err.signal if err.signal > 0 else 0.0
    p = Point(spec, spec, method.describe(enc.params), sized, rel)
    p.header = entry_bound(sized, digits)
    return p


@dataclass
class Solved:
    """The re-solve's result: which tensors, their scale rule, and the theta chosen."""

    tensors: list[TensorPlan]
    weights: list[float]
    scale: list[float]
    theta: float


def solve(planned: list[TensorPlan], weights: list[float], budget: int, digits: int, jobs: int,
          fine: bool = True, progress: PhaseProgress | None = None,
          total: Callable[[list[TensorPlan], list[Point]], int] | None = None
          ) -> tuple[Refined | None, Solved | None]:
    """Re-solve the steps of the planned tensors whose choice has one, on their samples; updates
    the choices in place when that lowers the objective. `total(tensors, points)`, when given,
    is the predicted archive with those tensors at those points (the header sized as the writer
    will size it), held to `budget` (the limit); else their costs (bytes + header bounds) are."""
    items = [(t, w) for t, w in zip(planned, weights)
             if t.choice is not None and t.sample is not None
             and get_method(t.choice.spec.method).step(t.choice.params) is not None]
    if not items:
        return None, None
    ts = [t for t, _ in items]
    ws = [w for _, w in items]
    before_pts = [t.choice for t in ts]
    if any(t.stats is not None for t in ts):
        scale = [_measured_scale(t, w, p) * (COMPENSATED_STEP if t.stats is not None and t.stats.gram is not None
                                             else 1.0) for t, w, p in zip(ts, ws, before_pts)]
    else:
        scale = [math.sqrt(t.signal / w) if t.signal > 0 and w > 0 else 0.0 for t, w in items]
    before = sum(w * p.rel for w, p in zip(ws, before_pts) if p is not None)
    live = [a > 0 for a in scale]  # all-zero tensors keep their ladder point
    if not any(live):
        return None, None
    logs = []
    for t, p, a in zip(ts, before_pts, scale):
        step = get_method(p.spec.method).step(p.params) if p is not None else None
        if a > 0 and step:
            logs.append((t.elements, math.log(step / a)))
    theta0 = math.exp(sum(k * v for k, v in logs) / sum(k for k, _ in logs)) * (FINE_RATIO if fine else 1.0)
    per_lnstep = sum(t.elements for t in ts) / (8 * math.log(2))
    clock = PhaseClock(progress, "solving", EVALS, EVALS, "passes")

    def evaluate(theta: float) -> Trial:
        def one(i: int) -> Point | None:
            p0 = before_pts[i]
            if not live[i] or p0 is None:
                return p0
            return _point(ts[i], p0, theta * scale[i], fine, digits)
        pts = list(ordered_map(one, list(range(len(ts))), jobs))
        clock.step()
        if any(p is None for p in pts):
            return Trial(theta, pts, math.inf, math.inf)
        chosen = [p for p in pts if p is not None]
        cost = total(ts, chosen) if total is not None else sum(p.cost for p in chosen)
        return Trial(theta, pts, float(cost), float(sum(w * p.rel for w, p in zip(ws, chosen))))

    best, passes = search(evaluate, theta0, float(budget), per_lnstep, EVALS)
    solved = Solved(ts, ws, scale, best.theta if best is not None else theta0)
    if best is None or best.dist >= before and not any(t.stats is not None and t.stats.gram is not None
                                                       for t in ts):
        return Refined(len(ts), False, before, before, passes), solved
    for t, p in zip(ts, best.points):
        assert p is not None
        t.choice = p
        t.points.append(p)
    return Refined(len(ts), fine, before, best.dist, passes), solved
