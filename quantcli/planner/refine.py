"""After the allocation: re-solve the steps of the tensors that chose ecsq, continuously.

The ladder of ecsq candidates (steps 2^(-k/4) x RMS) lets the allocation compare ecsq with the
other methods per tensor, but only at ladder points. For entropy-coded scalar quantization the
Lagrangian optimum has a closed form: with distortion weight w_t (the objective's weight of
tensor t's relative error) the best step is proportional to sqrt(signal_t / w_t) (at high rate a
tensor's error is n_t step^2 / 12 and its rate falls by n_t bits when the step doubles), i.e. one
common step for `mse`, a step proportional to each tensor's RMS for `relative`
(docs/STUDY-ecsq.md). So the tensors that chose ecsq share one factor theta, found by a secant /
bisection search on the bytes they may take (the budget less everything else): first with plain
rounding, then with the trellis (dependent quantization, ~0.9 dB more at equal rate). Each trial
encodes the whole tensors and sizes them by storing them (`storage.stored_arrays`), so sizes are
exact and the chosen trial's encodings are written as they are (within CACHE_BYTES). Only trials
that fit are kept, so the budget holds; the result replaces the ladder choice only when its
objective is lower.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import InputError
from ..methods import Encoding, get_method
from ..metrics import ErrorStats
from ..parallel import ordered_map
from ..pipeline import encode_and_measure, encode_weighted
from ..sizing import Sized, entry_bound
from ..spec import Spec
from ..storage import stored_arrays, stored_layout
from ..methods.base import matrix_shape
from .measure import CACHE_BYTES, SAMPLE, load, sample_rows
from .model import Point, Refined, TensorPlan

DQ_RATIO = 0.56     # a trellis step gives about the bytes of plain rounding at this fraction of its step
PLAIN_EVALS = 12    # passes of the plain-rounding search (and of the trellis estimate on samples), at most
TRELLIS_EVALS = 4   # whole-model trellis encodes, at most
# Gram compensation costs about one bit per weight at an equal step (measured on MiniLM's layers:
# +0.9-1.0 bit) and buys 4-6 dB of output SQNR at an equal rate with a step twice as large: a
# compensated tensor takes twice the step of the allocation's rule, so it keeps the bits the
# allocation gives it and spends them on a lower output error
COMPENSATED_STEP = 2.0
TOLERANCE = 2e-4    # stop once the bytes left unused are below this fraction of the ecsq budget


@dataclass
class Trial:
    """The ecsq tensors at one factor theta: points (None where the step needs too many levels),
    total cost (bytes + header bounds) and weighted distortion."""

    theta: float
    points: list[Point | None]
    cost: float
    dist: float
    encodings: list[tuple[Encoding, ErrorStats] | None] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(p is not None for p in self.points)


def _exact_point(t: TensorPlan, spec: Spec, enc: Encoding, err: ErrorStats) -> Point:
    """A point sized by storing the encoding: exact bytes and the codec entries the writer records."""
    shape = tuple(t.ref.shape)
    arrays, codecs = stored_arrays(enc, shape, "entropy")
    sized = Sized(t.ref, enc.method, enc.params, stored_layout(enc.method, shape, enc.params, codecs), "",
                  codecs or None, exact=True)
    assert sized.nbytes == sum(int(a.nbytes) for a in arrays.values())
    rel = err.error / err.signal if err.signal > 0 else 0.0
    return Point(spec, spec, get_method(enc.method).describe(enc.params), sized, rel)


def _search(evaluate: Callable[[float], Trial], theta0: float, budget: float, per_lnstep: float,
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
            trial.encodings = []  # never written: free them
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
            assert ref is not None  # steps doubling while the side stays the same (sizes move in words)
            gap = ref.cost - budget * (1 - TOLERANCE / 2) if ref.ok else per_lnstep
            theta = ref.theta * math.exp(max(min(gap / per_lnstep * 2.0 ** (n - 1), 1.0), -1.0))
    return good, n


def refine_ecsq(planned: list[TensorPlan], weights: list[float], budget: int, digits: int,
                keep_nonfinite: bool, jobs: int, trellis: bool = True) -> Refined | None:
    """Re-solve the steps of the planned tensors whose choice is ecsq within `budget` bytes (the
    limit less every other cost, header bounds included); `weights` are the objective's weights of
    each tensor's relative error. Updates the choices in place (keeping the trellis encodings for
    the write, within CACHE_BYTES) when that lowers the objective; None when no tensor chose ecsq."""
    items = [(t, w) for t, w in zip(planned, weights) if t.choice is not None and t.choice.spec.method == "ecsq"]
    if not items:
        return None
    ts = [t for t, _ in items]
    ws = [w for _, w in items]
    before_pts = [t.choice for t in ts]
    if any(t.stats is not None for t in ts):
        scale = [_measured_scale(t, w, p) * (COMPENSATED_STEP if t.stats is not None and t.stats.gram is not None
                                             else 1.0) for t, w, p in zip(ts, ws, before_pts)]
    else:
        scale = [math.sqrt(t.signal / w) if t.signal > 0 and w > 0 else 0.0 for t, w in items]
    before = sum(w * p.rel for w, p in zip(ws, before_pts) if p is not None)
    n = sum(t.elements for t in ts)
    live = [a > 0 for a in scale]  # all-zero tensors keep their (exact) ladder point
    if not any(live):
        return None
    logs = [(t.elements, math.log(float(p.params["step"]) / a))
            for t, p, a in zip(ts, before_pts, scale) if a > 0 and p is not None]
    theta0 = math.exp(sum(k * v for k, v in logs) / sum(k for k, _ in logs))
    per_lnstep = n / (8 * math.log(2))

    def step_of(i: int, theta: float) -> float:
        return float(np.float32(theta * scale[i]))

    def header(p: Point) -> Point:
        p.header = entry_bound(p.sized, digits)
        return p

    def encoded(theta: float, dq: bool) -> Trial:
        """Every ecsq tensor encoded at theta and sized by storing it; encodings kept for the
        write while they fit in CACHE_BYTES (the rest is encoded again, identically, if chosen)."""
        room, lock = [CACHE_BYTES], threading.Lock()

        def one(i: int) -> tuple[Point | None, tuple[Encoding, ErrorStats] | None]:
            t = ts[i]
            if not live[i]:
                return before_pts[i], None
            xf, _ = load(t.ref, keep_nonfinite)
            assert xf is not None
            spec = Spec(method="ecsq", step=step_of(i, theta), trellis=dq)
            try:
                enc, err = encode_for(t, xf, spec)
            except InputError:  # more levels than the coder's alphabet at this step: infeasible
                return None, None
            point = header(_exact_point(t, spec, enc, err))
            with lock:
                keep = enc.nbytes <= room[0]
                room[0] -= enc.nbytes if keep else 0
            return point, (enc, err) if keep else None
        out = list(ordered_map(one, list(range(len(ts))), jobs))
        trial = _trial(theta, [p for p, _ in out], ws)
        trial.encodings = [e for _, e in out]
        return trial

    best, passes = _search(lambda th: encoded(th, False), theta0, float(budget), per_lnstep, PLAIN_EVALS)
    # Gram-compensated tensors trade plain error for output error, which the ladder (plain rounding)
    # cannot show: their re-solve is taken whenever it fits
    compensated = any(t.stats is not None and t.stats.gram is not None for t in ts)
    if best is None or best.dist >= before and not compensated:
        best = None
    used_trellis = False
    if trellis and best is not None:
        start = _trellis_start(ts, live, scale, best, float(budget), per_lnstep, keep_nonfinite, jobs)
        found, k = _search(lambda th: encoded(th, True), start, float(budget), per_lnstep, TRELLIS_EVALS)
        passes += k
        if found is not None and found.dist < (best.dist if best is not None else before):
            best, used_trellis = found, True
    if best is None:
        return Refined(len(ts), False, before, before, passes)
    assert best.cost <= budget and best.ok
    for i, (t, p) in enumerate(zip(ts, best.points)):
        assert p is not None
        t.choice = p
        t.points.append(p)
        enc_err = best.encodings[i] if best.encodings else None
        if enc_err is not None:
            t.cache[p.candidate] = enc_err
    return Refined(len(ts), used_trellis, before, best.dist, passes)


def _measured_scale(t: TensorPlan, w: float, p: Point | None) -> float:
    """sqrt(n_t / k_t), k_t = w_t rel_t / step_t^2 from the tensor's ladder choice: the step rule
    when a tensor's error is not its plain relative error (--importance weighs it, and its steps are
    taken on rows and columns scaled by their statistics). It is the plain rule's
    sqrt(12 signal_t / w_t) where rel_t = step_t^2 / (12 mean x_t^2), as at high rate."""
    if p is None or not w > 0 or not p.rel > 0 or "step" not in p.params:
        return 0.0
    return math.sqrt(t.elements * float(p.params["step"]) ** 2 / (w * p.rel))


def encode_for(t: TensorPlan, xf: np.ndarray, spec: Spec) -> tuple[Encoding, ErrorStats]:
    """The tensor's encoding as the archive will hold it: with its statistics (--importance) the
    method's weighted encoding (Gram compensation included) where the method weighs them, else
    the plain encoding. The error stats are the plain ones, what the allocation weighs."""
    if t.stats is not None and get_method(spec.method).weighs_importance:
        return encode_weighted(xf, spec, t.ref, t.stats, t.record)
    return encode_and_measure(xf, spec, t.ref)


def _code_bits(codes: np.ndarray) -> float:
    """Order-0 code length of `codes` in bits (the empirical entropy times their number)."""
    counts = np.unique(codes, return_counts=True)[1].astype(np.float64)
    return float(-(counts * np.log2(counts / codes.size)).sum()) if codes.size else 0.0


def _trellis_start(ts: list[TensorPlan], live: list[bool], scale: list[float], plain: Trial, budget: float,
                   per_lnstep: float, keep_nonfinite: bool, jobs: int) -> float:
    """Where to start the trellis search: the theta whose trellis codes are estimated to take the
    budget, from row samples (`sample_rows`, as the measuring pass): the plain trial's bytes plus,
    per tensor, its elements times the difference in order-0 bits per code between the trellis at
    theta and plain rounding at the plain trial's theta on the same rows. A trellis pass over the
    samples is cheap; the whole-tensor passes that follow then start within a fraction of a percent."""
    method = get_method("ecsq")

    def sample(i: int) -> tuple[np.ndarray, float] | None:
        t = ts[i]
        if not live[i]:
            return None
        xf, _ = load(t.ref, keep_nonfinite)
        assert xf is not None
        rows, cols = matrix_shape(tuple(t.ref.shape))
        idx = sample_rows(rows, cols, SAMPLE)
        xs = xf if idx is None else np.ascontiguousarray(xf.reshape(rows, cols)[idx])
        step = np.float32(plain.theta * scale[i])
        return xs, _code_bits(method.encode_measured(xs, Spec(method="ecsq", step=float(step)))[0].arrays["codes"])

    samples = list(ordered_map(sample, list(range(len(ts))), jobs))

    def estimate(theta: float) -> Trial:
        def one(i: int) -> float | None:
            s = samples[i]
            if s is None:
                return 0.0
            xs, plain_bits = s
            try:
                enc, _ = method.encode_measured(xs, Spec(method="ecsq", step=float(np.float32(theta * scale[i])),
                                                        trellis=True))
            except InputError:
                return None
            return ts[i].elements / xs.size * (_code_bits(enc.arrays["codes"]) - plain_bits) / 8
        deltas = list(ordered_map(one, list(range(len(ts))), jobs))
        if any(d is None for d in deltas):
            return Trial(theta, [None], math.inf, math.inf)
        return Trial(theta, [], plain.cost + sum(d for d in deltas if d is not None), 0.0)

    found, _ = _search(estimate, plain.theta * DQ_RATIO, budget * (1 - 4 * TOLERANCE), per_lnstep, PLAIN_EVALS)
    return found.theta if found is not None else plain.theta * DQ_RATIO


def _trial(theta: float, pts: list[Point | None], ws: list[float]) -> Trial:
    if any(p is None for p in pts):
        return Trial(theta, pts, math.inf, math.inf)
    return Trial(theta, pts, float(sum(p.cost for p in pts if p is not None)),
                 float(sum(w * p.rel for w, p in zip(ws, pts) if p is not None)))
