"""ecsq: entropy-coded scalar quantization.

A uniform reconstruction grid x_hat = q * step with no clipping: every value rounds to its
nearest grid point, whatever its magnitude, so the error is at most step / 2 everywhere, outliers
included. The codes q are not of a fixed width: the archive stores them entropy-coded (`crans`:
rANS with contexts from the trellis state and the row's scale so far, quantcli/codecs/context.py),
so a tensor costs close to the entropy of its codes (about log2(sigma / step) + 2.05 bits per
weight for bell-shaped weights) instead of a fixed number of bits.

One step for every tensor is the allocation that minimises total squared error for a given size
(at high rate each tensor's error is N step^2 / 12 and its rate falls by N bits when the step
doubles, whatever its spread); `--sqnr D` finds that common step for D dB over all quantized
tensors together (`step_for_sqnr`). Measured on all-MiniLM-L6-v2 (docs/BENCHMARKS.md), plain
rounding is within 0.03 bpw of rate-distortion-optimised rounding at these rates.

Arrays: codes [the tensor's shape], integers 0 .. levels - 1 with q = code + offset.
Params: step (a float32 value, exactly representable in JSON), offset (int), levels (int) and
bits = ceil(log2(levels)) (the width if the codes were bit-packed); with --trellis also dq (true)
and, when they lower the error, shrink: reconstruction offsets toward zero in 1/256 of a step for
|level| = 1 and |level| >= 2 (+0.1 dB at 14.6 dB, docs/BENCHMARKS-dq.md).
"""

from __future__ import annotations

import math
import sys
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ..errors import ArchiveError, ConfigError, InputError
from ..metrics import sqnr_db, sum_squares
from ..spec import Spec
from . import dq
from ..calibration.importance import TensorImportance
from .base import ArrayLayout, Encoding, Method, StorageHint, code_dtype, code_layout, matrix_shape, param
from .compensate import compensate
from . import register

MAX_LEVELS = 1 << 16  # the entropy coder's largest alphabet


def quantize(x: np.ndarray, step: np.float32) -> np.ndarray:
    """Nearest grid point index of each value (round half to even), as int64."""
    return np.rint(np.asarray(x, np.float32) / step).astype(np.int64)


def reconstruct(q: np.ndarray, step: np.float32) -> np.ndarray:
    """float32 values of grid indices: the same expression in encode and decode, so the error
    measured while encoding is the error of the archive."""
    return q.astype(np.float32) * step


FLOAT32_MAX = float(np.finfo(np.float32).max)


def step_from_rms(fraction: float, x: np.ndarray) -> np.float32:
    """fraction x RMS of `x` as a float32 step (a tiny positive step for an all-zero tensor); a
    step past float32's range is refused as too large (it would decode to inf)."""
    rms = math.sqrt(sum_squares(x) / x.size) if np.size(x) else 0.0
    value = fraction * rms
    if value > FLOAT32_MAX:
        raise InputError(f"--step-rms {fraction:g} times the values' RMS {rms:.3g} is a step of {value:.3g}, "
                         "too large: beyond float32's range; use a smaller --step-rms")
    step = np.float32(value)
    return step if step > 0 else np.float32(1e-30)


SHRINK_UNIT = 256  # shrinks are integers in 1/256 of a step
# lambda = c step^2 of the trellis's priced pass: with crans and shrink, c = 0.3 reaches each SQNR in
# 0.0083 / 0.0033 / 0.0011 / 0 fewer bpw than the study's 0.1 at 14.6 / 20.9 / 27.0 / 41.2 dB
# (docs/BENCHMARKS-dq.md; 0.5 is within 0.0003 of it)
TRELLIS_C = 0.3


def shrunk(levels: np.ndarray, step: float, shrink: tuple[int, int]) -> np.ndarray:
    """float32 values of integer levels with reconstruction offsets: level L becomes
    (L - sign(L) d / 256) step, d = shrink[0] for |L| = 1 and shrink[1] for |L| >= 2 (the float64
    difference rounded to float32, times float32(step)); (0, 0) is plain L * step."""
    lv = np.asarray(levels, np.int64)
    return dq.shrunk(lv.reshape(-1), step, shrink).reshape(lv.shape)


def best_shrink(x: np.ndarray, levels: np.ndarray, step: float) -> tuple[int, int]:
    """The least-squares offsets of |L| = 1 and |L| >= 2 toward zero, in 1/256 of a step, clipped
    to [-128, 128]. Rounding to 1/256 keeps the error below the unshrunk one: the error is a
    parabola in d with its minimum at the exact optimum, and a nonzero rounded d is no farther
    from it than 0 is."""
    return _shrink(dq.shrink_sums(np.asarray(x, np.float32).reshape(-1), np.asarray(levels).reshape(-1), step))


def _shrink(sums: np.ndarray) -> tuple[int, int]:
    out = [int(np.clip(round(sums[g] / sums[2 + g] * SHRINK_UNIT), -128, 128)) if sums[2 + g] else 0
           for g in (0, 1)]
    return out[0], out[1]


CHUNK_VALUES = 1 << 22  # the shrink sums are added a chunk of rows of about this many values at a time


def trellis_codes(x: np.ndarray, step: float) -> tuple[np.ndarray, tuple[int, int]]:
    """Dependent quantization (methods/dq.py) of x viewed as [rows, cols]: (codes int32
    [rows, cols], reconstruction offsets). The offsets' sums are added per chunk of rows (the
    order archives were written with); no levels array is made."""
    rows, cols = matrix_shape(np.shape(x))
    x2 = np.asarray(x, np.float32).reshape(rows, cols)
    k, _ = dq.quantize_dq(x2, float(step), c=TRELLIS_C, recon=False)
    chunk = max(1, CHUNK_VALUES // max(cols, 1))
    sums = np.zeros(4)
    for r0 in range(0, rows if k.size else 0, chunk):
        sums += dq.code_shrink_sums(x2[r0:r0 + chunk], k[r0:r0 + chunk], float(step))
    return k, (_shrink(sums) if k.size else (0, 0))


def trellis_quantize(x: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """(codes int32, float32 reconstruction, both in x's shape, and the reconstruction offsets)
    of trellis_codes."""
    k, shrink = trellis_codes(x, step)
    return k.reshape(np.shape(x)), dq.code_shrunk(k, float(step), shrink).reshape(np.shape(x)), shrink


def trellis_error(x: np.ndarray, step: float) -> float:
    return sum_squares(np.asarray(x, np.float32) - trellis_quantize(x, step)[1])


def rounding_error(x: np.ndarray, step: float) -> float:
    """Sum of squared rounding errors of float32 `x` at `step` (float64 sums)."""
    s = np.float32(step)
    return sum_squares(np.asarray(x, np.float32) - reconstruct(quantize(x, s), s))


# steps per row / column go as w^-SCALE_EXPONENT of their statistics, within 1/SCALE_RANGE ..
# SCALE_RANGE of the geometric mean. The weighted error's optimum at high rate is w^-1/2 (range
# 16 tried): on MiniLM it overfits the calibration text (channels with outlier activations took
# the bits, cosine fell); a quarter power within 4x gave the best cosine (docs/IMPORTANCE.md).
SCALE_EXPONENT = 0.25
SCALE_RANGE = 4.0


def importance_scales(weights: np.ndarray | None) -> np.ndarray | None:
    """float16 step multipliers for rows or columns of importance `weights` (None: none): a
    weighted squared error sum_j w_j n_j step_j^2 / 12 at a given rate is least with step_j going
    as w_j^(-1/2); the multipliers go as w_j^-SCALE_EXPONENT relative to the weights' geometric
    mean, within 1/SCALE_RANGE .. SCALE_RANGE."""
    if weights is None or not np.size(weights):
        return None
    w = np.asarray(weights, np.float64)
    floor = float(w.max()) / SCALE_RANGE ** 4 if w.max() > 0 else 1.0
    w = np.maximum(w, floor)
    mean_log = float(np.log(w).mean())
    return np.clip(np.exp(-SCALE_EXPONENT * (np.log(w) - mean_log)), 1 / SCALE_RANGE, SCALE_RANGE
                   ).astype(np.float16)


def scale_matrix(x: np.ndarray, row_scale: np.ndarray | None, column_scale: np.ndarray | None,
                 divide: bool) -> np.ndarray:
    """float32 x divided (encode) or multiplied (decode) by its rows' and columns' scales."""
    out = np.array(x, dtype=np.float32)
    for s, axis in ((row_scale, 0), (column_scale, 1)):
        if s is not None:
            f = s.astype(np.float32).reshape((-1, 1) if axis == 0 else (1, -1))
            out = np.divide(out, f, out=out) if divide else np.multiply(out, f, out=out)
    return out


def _f32_step(step: float) -> float:
    """`step` rounded to float32, at most float32's largest value."""
    return float(np.float32(min(step, FLOAT32_MAX)))


def step_for_sqnr(tensors: Callable[[], Iterable[np.ndarray]], target_db: float, passes: int = 12,
                  trellis: bool = False, error_of: Callable[[int, np.ndarray, float], float | None] | None = None
                  ) -> float:
    """The largest float32 step whose rounding gives at least `target_db` over all tensors
    together. `tensors()` yields the float32 tensors once per call (one in memory at a time);
    each pass over them measures one step. The first guess is the high-rate formula
    step^2 / 12 = signal / (N 10^(D/10)); then a bracket is narrowed (secant in log-log, else
    bisection) until the step is within 0.1% of the largest one that meets the target.
    `error_of(i, x, step)`: the i-th tensor's squared error at `step` when it is not plain rounding's
    (--importance encodes it otherwise), or None."""
    signal, count = 0.0, 0
    for x in tensors():
        signal += sum_squares(x)
        count += x.size
    if count == 0 or signal == 0.0:
        return 1.0  # all zeros: every step reconstructs them exactly (SQNR inf meets any target)
    # the largest total squared error allowed; past +-3000 dB (where 10^(D/10) overflows) a target
    # allows only an exact reconstruction, or float32's largest step (as at -3000 dB)
    if abs(target_db) <= 3000:
        want = min(signal / 10 ** (target_db / 10), sys.float_info.max)
    else:
        want = 0.0 if target_db > 0 else min(signal * 1e300, sys.float_info.max)

    measure_at = trellis_error if trellis else rounding_error

    def measure(i: int, x: np.ndarray, step: float) -> float:
        other = error_of(i, x, step) if error_of is not None else None
        return measure_at(x, step) if other is None else other

    def error(step: float) -> float:
        return sum(measure(i, x, step) for i, x in enumerate(tensors()))

    # a trellis step reaches the rounding step's error at about 0.575 of it (docs/BENCHMARKS.md)
    guess = _f32_step(math.sqrt(12.0 * want / count) * (0.575 if trellis else 1.0))
    good: tuple[float, float] | None = None  # (step, error) meeting the target
    bad: tuple[float, float] | None = None
    step = guess
    for _ in range(passes):
        if not step > 0:  # below float32's smallest step: the target is out of reach
            break
        err = error(step)
        if err <= want:
            good = (step, err) if good is None or step > good[0] else good
        else:
            bad = (step, err) if bad is None or step < bad[0] else bad
        if good is not None and (bad[0] <= good[0] * 1.001 if bad is not None else good[0] >= FLOAT32_MAX):
            break
        if good is None:
            step = step * math.sqrt(want / err) * 0.999 if err > 0 else step / 2
        elif bad is None:
            step = step * math.sqrt(want / good[1]) * 1.001 if good[1] > 0 else step * 2
        else:  # secant in log(step), log(error), kept strictly inside the bracket
            (s0, e0), (s1, e1) = good, bad
            t = 0.5
            if e0 > 0 and e1 > e0:
                t = math.log(want / e0) / math.log(e1 / e0)
            t = min(max(t, 0.1), 0.9)
            step = math.exp(math.log(s0) + t * (math.log(s1) - math.log(s0)))
        step = _f32_step(step)
    if good is None:
        raise ConfigError(f"no step reaches {target_db:g} dB over the quantized tensors")
    return good[0]


class _StepGrid:
    """compensate.ColumnGrid of the uniform step grid: nothing to fit, codes recorded as int64."""

    def __init__(self, step: float, shape: tuple[int, ...]):
        self.step = np.float32(step)
        self.codes = np.zeros(shape, np.int64)

    def fit(self, columns: np.ndarray, start: int) -> None:
        return None

    def snap(self, column: np.ndarray, j: int) -> np.ndarray:
        q = quantize(column.astype(np.float32), self.step)
        self.codes[:, j] = q
        return reconstruct(q, self.step).astype(np.float64)


def _reach(params: dict[str, Any]) -> float:
    """The largest magnitude the grid of `params` can decode to (a bound)."""
    offset, levels = params["offset"], params["levels"]
    return (max(abs(offset), abs(offset + levels - 1)) * (2 if params.get("dq") else 1) + 1) * float(params["step"]) \
        * (SCALE_RANGE if "row_scale" in params else 1) * (SCALE_RANGE if "column_scale" in params else 1)


@register
class ECSQ(Method):
    name = "ecsq"
    options = frozenset({"step", "sqnr", "step_rms", "trellis"})
    entropy_coded = True
    weighs_importance = True

    def check_spec(self, spec: Spec) -> None:
        if spec.step is None and spec.sqnr is None and spec.step_rms is None:
            raise ConfigError("--method ecsq needs --step S, --step-rms F or --sqnr D (dB over all quantized "
                              "tensors)")

    def check_writable(self, shape: tuple[int, ...], spec: Spec) -> None:
        """The step may come from the data (--step-rms), so only the spec is checked here; the
        codes' range is checked against the coder's alphabet while encoding."""
        self.check_spec(spec)

    def _step(self, spec: Spec, x: np.ndarray | None = None) -> np.float32:
        """The tensor's step: --step as given, --step-rms times its RMS (from the data); with x, a
        step so small that |x / step| reaches 2^29 (int overflow, the trellis's bound) is refused."""
        step = np.float32(spec.step) if spec.step is not None else (
            step_from_rms(spec.step_rms, x) if spec.step_rms is not None and x is not None else None)
        if step is not None and x is not None and np.size(x):
            peak = float(np.max(np.abs(x)))
            if not float(step) > 0 or peak / float(step) >= 2.0**29:
                raise InputError(f"step {float(step):.3g} is too small for its values (largest magnitude "
                                 f"{peak:.3g}: more than 2^29 steps); use a larger step")
        if step is not None:
            return step
        raise ConfigError("ecsq's step comes from the data here (--step-rms) or from the whole model "
                          "(--sqnr): quantize files, or give --step")

    def params_for(self, shape: tuple[int, ...], spec: Spec, x: np.ndarray | None = None) -> dict[str, Any]:
        step = self._step(spec, x)
        params: dict[str, Any] = {"step": float(step), "offset": 0, "levels": 1, "bits": 1}
        if x is not None and np.size(x):
            if spec.trellis:
                q, shrink = trellis_codes(x, float(step))
                params.update(self._range(q))
                if shrink != (0, 0):
                    params["shrink"] = list(shrink)
            else:
                params.update(self._range(quantize(x, step)))
        if spec.trellis:
            params["dq"] = True
        return params

    @staticmethod
    def _check_reach(params: dict[str, Any]) -> None:
        """A step so large that the grid's outer level passes float32's range is refused while
        encoding (layout() would refuse the archive)."""
        if _reach(params) > FLOAT32_MAX:
            raise InputError(f"step {params['step']:.3g} is too large for its values: its grid reaches beyond "
                             "float32's range; use a smaller step")

    @staticmethod
    def _range(q: np.ndarray) -> dict[str, Any]:
        lo, hi = (int(q.min()), int(q.max())) if q.size else (0, 0)
        levels = hi - lo + 1
        if levels > MAX_LEVELS:
            raise InputError(f"needs {levels} grid levels at this step (at most {MAX_LEVELS}): its range is "
                             "too wide for the step; use a larger step or a lower --sqnr")
        return {"offset": lo, "levels": levels, "bits": max(1, math.ceil(math.log2(levels)))}

    def _encode(self, x: np.ndarray, spec: Spec) -> tuple[Encoding, np.ndarray | None]:
        step = self._step(spec, x)
        shrink = (0, 0)
        if spec.trellis:
            q, shrink = trellis_codes(x, float(step))
        else:
            q = quantize(x, step)
        params = {"step": float(step), **self._range(q)}
        if spec.trellis:
            params["dq"] = True
        self._check_reach(params)
        if shrink != (0, 0):
            params["shrink"] = list(shrink)
        codes = np.empty(np.shape(q), code_dtype(params["bits"]))  # q - offset, without an int64 temporary
        np.subtract(q, np.asarray(params["offset"], q.dtype), out=codes, casting="unsafe")
        if spec.trellis:  # rebuilt from the narrow codes, so the int32 codes go first (peak memory)
            del q
            recon = dq.code_shrunk(codes, float(step), shrink, offset=params["offset"])
        else:
            recon = reconstruct(q, step)
        codes = codes.reshape(np.shape(x))
        return Encoding(self.name, params, {"codes": codes}), recon.reshape(np.shape(x))

    def _encode_importance(self, x: np.ndarray, spec: Spec, imp: TensorImportance) -> Encoding:
        """Steps per row and column (`importance_scales`: the weighted error's optimum at equal
        rate), stored as float16 `row_scale` / `column_scale` arrays: x is divided by them, coded as
        usual (the trellis included) and multiplied back by the decoder. With a Gram the rounding
        is compensated column by column instead (compensate.py, with the Gram of the scaled
        columns); the trellis, which picks codes along rows, does not combine with that order."""
        if np.ndim(x) != 2 or not np.size(x):
            return self._encode(x, spec)[0]
        rs, cs = importance_scales(imp.rows), importance_scales(imp.cols)
        y = scale_matrix(x, rs, cs, divide=True)
        if imp.gram is None:
            enc = self._encode(y, spec)[0]
        else:
            step = self._step(spec, y)
            c = cs.astype(np.float64) if cs is not None else np.ones(y.shape[1])
            grid = _StepGrid(float(step), tuple(y.shape))
            compensate(y, imp.gram * np.outer(c, c), grid, int(y.shape[1]))
            params = {"step": float(step), **self._range(grid.codes)}
            enc = Encoding(self.name, params, {"codes": (grid.codes - params["offset"]).astype(
                code_dtype(params["bits"]))})
        params, arrays = dict(enc.params), dict(enc.arrays)
        for key, scale in (("row_scale", rs), ("column_scale", cs)):
            if scale is not None:
                params[key], arrays[key] = True, scale
        try:
            self.layout(tuple(np.shape(x)), params)
        except ArchiveError:  # values near float32's limit: the scaled grid's bound would not fit
            return self._encode(x, spec)[0]
        return Encoding(self.name, params, arrays)

    def layout(self, shape: tuple[int, ...], params: dict[str, Any]) -> dict[str, ArrayLayout]:
        step = params.get("step")
        if not isinstance(step, (int, float)) or isinstance(step, bool) or not math.isfinite(step) or step <= 0 \
                or float(np.float32(step)) != step:
            raise ArchiveError(f"param 'step' must be a positive float32 value, got {step!r}")
        param(params, "offset", int, lo=-(1 << 62), hi=1 << 62)
        levels = param(params, "levels", int, lo=1, hi=MAX_LEVELS)
        bits = param(params, "bits", int, lo=1, hi=16)
        if "dq" in params:
            param(params, "dq", bool, choices=(True,))
        if "shrink" in params:
            sh = params["shrink"]
            if not isinstance(sh, list) or len(sh) != 2 or not all(
                    isinstance(v, int) and not isinstance(v, bool) and -128 <= v <= 128 for v in sh):
                raise ArchiveError(f"param 'shrink' must be two integers in -128..128, got {sh!r}")
        offset = params["offset"]
        if not _reach(params) <= FLOAT32_MAX:  # a forged grid must not decode to inf
            raise ArchiveError(f"param 'step' = {step!r} with offset {offset} and {levels} levels reaches beyond "
                               "float32's range")
        if bits != max(1, math.ceil(math.log2(levels))):
            raise ArchiveError(f"param 'bits' = {bits} does not fit {levels} levels")
        out = {"codes": code_layout(shape, bits)}
        rows, cols = matrix_shape(shape)
        for key, n in (("row_scale", rows), ("column_scale", cols)):
            if key in params:
                param(params, key, bool, choices=(True,))
                if len(shape) != 2:
                    raise ArchiveError(f"param {key!r} needs a 2-D tensor")
                out[key] = ArrayLayout(np.dtype(np.float16), (n,))
        return out

    def decode(self, enc: Encoding, shape: tuple[int, ...]) -> np.ndarray:
        y = self._decode_grid(enc, shape)
        rs, cs = enc.arrays.get("row_scale"), enc.arrays.get("column_scale")
        if rs is None and cs is None:
            return y
        for s in (rs, cs):
            if s is not None and not (np.isfinite(s).all() and float(s.min(initial=1)) > 0
                                      and float(s.max(initial=1)) <= SCALE_RANGE):
                raise ArchiveError(f"holds a scale outside (0, {SCALE_RANGE:g}]")
        return scale_matrix(y.reshape(matrix_shape(shape)), rs, cs, divide=False).reshape(shape)

    def _decode_grid(self, enc: Encoding, shape: tuple[int, ...]) -> np.ndarray:
        p = enc.params
        codes = enc.arrays["codes"]
        if codes.size and int(codes.max()) >= p["levels"]:
            raise ArchiveError(f"a code is {int(codes.max())}, beyond the {p['levels']} levels")
        if p.get("dq"):  # from the codes as stored: no int64 codes or levels arrays
            return dq.code_shrunk(codes.reshape(matrix_shape(shape)), p["step"], tuple(p.get("shrink", (0, 0))),
                                  offset=p["offset"]).reshape(shape)
        q = codes.astype(np.int64) + p["offset"]
        if "shrink" in p:
            return shrunk(q, p["step"], tuple(p["shrink"])).reshape(shape)
        return reconstruct(q, np.float32(p["step"])).reshape(shape)

    def describe(self, params: dict[str, Any]) -> str:
        scaled = " scaled" if "row_scale" in params or "column_scale" in params else ""
        return f"ecsq{' trellis' if params.get('dq') else ''}{scaled} step {params['step']:.3g}"

    # -- life-cycle hooks (base.Method)

    def storage_hint(self, role: str, params: dict[str, Any]) -> StorageHint | None:
        """Codes through `crans` (contexts from the trellis state and the row's scale so far),
        else rans; the row and column scales stay plain."""
        if role == "codes":
            return StorageHint("crans", {"offset": int(params["offset"]), "dq": bool(params.get("dq"))})
        return StorageHint(None)

    def resolve(self, specs: list[Spec], load: Callable[[int], np.ndarray],
                importance: Callable[[int], TensorImportance | None]) -> list[Spec]:
        """Tensors asking for --sqnr D share ONE step (the MSE-optimal allocation), chosen over all
        of them together (a pass over their data per step tried); different targets are resolved
        per target. Tensors with statistics are measured as they will be encoded (weighted, Gram
        compensation included): D is what the archive gets."""
        out = list(specs)
        for target in sorted({s.sqnr for s in specs if s.sqnr is not None}):
            chosen = [i for i, s in enumerate(out) if s.sqnr == target]

            def tensors(idx: list[int] = chosen) -> Iterator[np.ndarray]:
                return (load(i) for i in idx)

            def error_of(k: int, x: np.ndarray, step: float, idx: list[int] = chosen) -> float | None:
                stats = importance(idx[k])
                if stats is None:
                    return None
                enc = self.encode_importance(x, out[idx[k]].with_options(step=step, sqnr=None), stats)
                return sum_squares(x - self.decode(enc, tuple(x.shape)))

            step = step_for_sqnr(tensors, target, trellis=bool(out[chosen[0]].trellis), error_of=error_of)
            for i in chosen:
                out[i] = out[i].with_options(step=step, sqnr=None)
        return out

    def planner_candidates(self, level: str) -> list[Spec]:
        """Steps at 2^(-k/4) of each tensor's RMS, k = -2 .. 24: about 1.5 to 8 bits per weight in
        quarter-octave steps; the planner re-solves the chosen steps continuously (`step`)."""
        return [Spec(method=self.name, step_rms=float(2.0 ** (-k / 4))) for k in range(-2, 25)]

    def candidate_label(self, spec: Spec) -> str:
        if spec.step_rms is not None:
            return f"ecsq step {spec.step_rms:.3g} rms"
        return super().candidate_label(spec)

    def candidate_family(self, spec: Spec) -> str:
        return self.name

    def planner_spec(self, spec: Spec, shape: tuple[int, ...], x: np.ndarray) -> Spec:
        """A step relative to the RMS becomes this tensor's step (a row sample has its own RMS)."""
        if spec.step_rms is None:
            return spec
        return spec.with_options(step=float(step_from_rms(spec.step_rms, x)), step_rms=None)

    def step(self, params: dict[str, Any]) -> float | None:
        return float(params["step"])

    def at_step(self, spec: Spec, step: float, fine: bool) -> Spec:
        return spec.with_options(step=float(np.float32(step)), step_rms=None, sqnr=None, trellis=fine)


__all__ = ["ECSQ", "quantize", "reconstruct", "rounding_error", "step_for_sqnr", "sqnr_db"]
