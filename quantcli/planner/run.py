"""The planner's entry points: plan for a budget (a dry run), or plan and write the archive."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Iterator

from ..storage import stored_arrays, stored_nbytes
from ..errors import ConfigError, InputError, WorkError
from ..methods import Encoding, get_method
from ..metrics import ErrorStats, archive_bits_per_weight
from ..output import check_output
from ..parallel import default_jobs, ordered_map
from ..pipeline import (Encoded, Progress, encode_weighted, importance_use, open_importance,
                        storage_codec, write_archive)
from ..recipe import Recipe, load_recipe
from ..reports import QuantizeReport
from ..selection import Selection, plan_tensors, refuse_archives
from ..sizing import fixed_header_bound, header_bytes
from ..sources import Sources
from ..spec import Spec
from .allocate import TooSmall, allocate
from .budget import Budget
from .candidates import default_candidates, label
from .measure import SAMPLE, load, measure_all
from ..importance import Importance
from .refine import encode_for, refine_ecsq
from .weights import OBJECTIVES, objective_weights
from .model import Baseline, Plan, PlannedQuantizeReport, Point, TensorPlan, overall_sqnr, weighted_sqnr


def exact_header(tensors: list[TensorPlan], choices: list[Point | None] | None = None) -> int:
    """The header size the archive gets with these choices (default: the current ones)."""
    picks = [t.choice for t in tensors] if choices is None else choices
    return header_bytes([t.sized(p) if p is not None else t.sized() for t, p in zip(tensors, picks)])


def _fixed_bound(tensors: list[TensorPlan]) -> int:
    """Header bound of everything the planner does not choose, plus kept arrays and pinned arrays."""
    total = fixed_header_bound()
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


def _no_candidate(t: TensorPlan, floor_db: float) -> ConfigError:
    best = max((p.sqnr_db for p in t.points), default=-math.inf)
    return ConfigError(f"no candidate setting reaches {floor_db:g} dB (the best measured {best:.2f} dB)",
                       path=t.ref.path, tensor=t.ref.name)


def _verify(t: TensorPlan, floor_db: float, keep_nonfinite: bool) -> Encoding:
    """--min-sqnr: encode the whole tensor with the cheapest setting estimated to meet the floor and
    move to the next one while the measured SQNR falls short. Returns the encoding."""
    xf = None
    for p in _choose_min_sqnr(t, floor_db):
        cached = t.cache.get(p.candidate)
        if cached is not None:
            enc, err = cached
        else:
            if xf is None:
                xf, _ = load(t.ref, keep_nonfinite)
            assert xf is not None
            enc, err = encode_for(t, xf, p.spec)
        if err.sqnr_db >= floor_db:
            t.choice, t.actual = p, err
            t.cache = {p.candidate: (enc, err)}
            return enc
    raise _no_candidate(t, floor_db)


def _baselines(tensors: list[TensorPlan], budget: Budget, limit: int | None,
               candidates: list[Spec]) -> tuple[Baseline | None, Baseline | None]:
    """The best single setting for every planned tensor that fits the budget: among the uniform
    candidates, and among all candidates. Sizes exact, quality estimated as for the plan."""
    best: dict[bool, Baseline | None] = {True: None, False: None}
    planned = [t for t in tensors if t.role == "planned"]
    if not planned:
        return None, None
    quant_n = sum(t.elements for t in tensors if t.quantized)
    kept = sum(t.kept_bytes for t in tensors if not t.quantized)
    for candidate in dict.fromkeys(candidates):
        picks: list[Point | None] = []
        for t in tensors:
            if t.role != "planned":
                picks.append(t.choice)
                continue
            match = [p for p in t.points if p.candidate == candidate]
            if not match:
                break
            picks.append(match[0])
        else:
            size = exact_header(tensors, picks) + sum(
                p.nbytes if p is not None else t.kept_bytes for t, p in zip(tensors, picks))
            q = [(t, p) for t, p in zip(tensors, picks) if t.quantized and p is not None]
            if budget.kind == "sqnr":
                if any(p.sqnr_db < budget.value for t, p in q if t.role == "planned"):
                    continue
            elif limit is not None and size > limit:
                continue
            b = Baseline(label(candidate), size, archive_bits_per_weight(size, kept, quant_n),
                         weighted_sqnr((t.elements, p.rel) for t, p in q),
                         overall_sqnr((t.signal, p.rel) for t, p in q))
            for uniform_only in (True, False):
                if uniform_only and candidate.method != "uniform":
                    continue
                cur = best[uniform_only]
                if cur is None or (b.archive_bytes < cur.archive_bytes if budget.kind == "sqnr"
                                   else b.weighted_sqnr_db > cur.weighted_sqnr_db):
                    best[uniform_only] = b
    return best[True], best[False]


def _plan(sources: Sources, inputs: list[str], budget: Budget, selection: Selection, recipe: Recipe | None,
          base: Spec, candidates: list[Spec], sample: int, keep_nonfinite: bool, jobs: int,
          objective: str, verify: bool, start: float, trellis: bool = True,
          importance: Importance | None = None) -> Plan:
    if objective not in OBJECTIVES:
        raise ConfigError(f"--objective must be {', '.join(OBJECTIVES[:-1])} or {OBJECTIVES[-1]}, got {objective!r}")
    if objective == "sensitivity" and (importance is None or not importance.sensitivity):
        raise ConfigError("--objective sensitivity needs --importance with NAME.sensitivity entries "
                          "(quant collect-importance --sensitivity)")
    items = plan_tensors(sources.refs, base, selection, recipe)
    tensors = measure_all(items, candidates, sample, keep_nonfinite, jobs, importance)
    quant_n = sum(t.elements for t in tensors if t.quantized)
    kept = sum(t.kept_bytes for t in tensors if not t.quantized)
    limit = budget.limit_bytes(quant_n, kept)
    refined = None
    if budget.kind == "sqnr":
        for t in tensors:
            if t.role == "planned":
                options = _choose_min_sqnr(t, budget.value)
                if not options:
                    raise _no_candidate(t, budget.value)
                t.choice = options[0]
        if verify:
            for t in tensors:
                if t.role == "planned":
                    _verify(t, budget.value, keep_nonfinite)
                    t.cache = {}
    else:
        assert limit is not None
        planned = [t for t in tensors if t.role == "planned"]
        weights = objective_weights([t.elements for t in planned], [t.signal for t in planned],
                                    [t.ref.name for t in planned], objective, (r.name for r in sources.refs),
                                    shapes={r.name: r.shape for r in sources.refs},
                                    sensitivity=importance.sensitivity if importance is not None else None)
        try:
            choices, _ = allocate([[p.cost for p in t.points] for t in planned],
                                  [[w * p.rel for p in t.points] for t, w in zip(planned, weights)],
                                  limit, _fixed_bound(tensors))
        except TooSmall as e:
            if budget.kind != "bpw":
                raise
            raise ConfigError(f"--target-bpw {budget.value:g} is too small: the smallest plan takes "
                              f"{archive_bits_per_weight(e.need, kept, quant_n):.3f} bits per weight "
                              "(headers counted)") from None
        for t, i in zip(planned, choices):
            t.choice = t.points[i]
        others = sum(t.choice.cost for t in planned if t.choice is not None and t.choice.spec.method != "ecsq")
        refined = refine_ecsq(planned, weights,
                              limit - _fixed_bound(tensors) - others, len(str(limit)), keep_nonfinite, jobs,
                              trellis)
    labels = list(dict.fromkeys(label(c) for c in candidates))
    plan = Plan(inputs, budget, tensors, sources.input_bytes, exact_header(tensors), limit, 0.0, sample, labels,
                objective)
    plan.refined = refined
    if limit is not None and plan.predicted_archive_bytes > limit:  # the bounds make this impossible
        raise WorkError(f"internal: the plan needs {plan.predicted_archive_bytes} bytes, over the budget {limit}")
    plan.baseline_uniform, plan.baseline_any = _baselines(tensors, budget, limit, candidates)
    plan.planning_seconds = time.perf_counter() - start
    return plan


def setup(recipe: str | Recipe | None, jobs: int | None, sample: int) -> tuple[Recipe | None, int]:
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
                jobs: int | None = 1, objective: str = "relative-emb", trellis: bool = True,
                importance: str | None = None) -> Plan:
    """The dry run: measure, allocate, and predict the archive's exact size (nothing written).

    With --min-sqnr every planned tensor's choice is checked on the whole tensor (so the
    prediction is exact there too); `spec` is the base for recipe-pinned tensors only.
    trellis=False re-solves ecsq steps with plain rounding only (quicker, ~0.9 dB lower).
    """
    start = time.perf_counter()
    recipe, jobs = setup(recipe, jobs, sample)
    with Sources(inputs) as sources:
        refuse_archives(sources)
        plan = _plan(sources, list(inputs), budget, Selection(only, skip, include_1d), recipe, spec or Spec(),
                     candidates or default_candidates(), sample, keep_nonfinite, jobs, objective,
                     verify=budget.kind == "sqnr", start=start, trellis=trellis,
                     importance=open_importance(importance, sources))
    for t in plan.tensors:  # encodings kept for a write that a dry run does not do
        t.cache = {}
    return plan


def quantize_budget(inputs: list[str], output: str, budget: Budget, spec: Spec | None = None, *,
                    only: str | None = None, skip: str | None = None, include_1d: bool = False,
                    keep_nonfinite: bool = False, recipe: str | Recipe | None = None,
                    candidates: list[Spec] | None = None, sample: int = SAMPLE, jobs: int | None = 1,
                    objective: str = "relative-emb", progress: Progress | None = None,
                    trellis: bool = True, importance: str | None = None) -> PlannedQuantizeReport:
    """Plan, then write the archive with the chosen settings; its size is the plan's prediction.

    Fully measured tensors reuse their encodings from the measuring pass; with --min-sqnr the
    whole-tensor check is the final encoding (each tensor is encoded once more at most).
    """
    start = time.perf_counter()
    recipe, jobs = setup(recipe, jobs, sample)
    with Sources(inputs) as sources:
        check_output(output, sources.files + ([importance] if importance else []), ".safetensors")
        refuse_archives(sources)
        stats = open_importance(importance, sources)
        plan = _plan(sources, list(inputs), budget, Selection(only, skip, include_1d), recipe, spec or Spec(),
                     candidates or default_candidates(), sample, keep_nonfinite, jobs, objective,
                     verify=False, start=start, trellis=trellis, importance=stats)

        def encode(t: TensorPlan) -> tuple[Encoding, ErrorStats | None]:
            if not t.quantized:
                return get_method("keep").encode(t.ref.load(), Spec()), None
            if budget.kind == "sqnr" and t.role == "planned":
                return _verify(t, budget.value, keep_nonfinite), t.actual
            assert t.choice is not None
            cached = t.cache.pop(t.choice.candidate, None)
            if cached is not None:
                return cached
            xf, _ = load(t.ref, keep_nonfinite)
            if xf is None:
                raise InputError("changed while planning (it now holds NaN or Inf values)", path=t.ref.path,
                                 tensor=t.ref.name)
            enc, err = encode_for(t, xf, t.choice.spec)
            if t.stats is not None and not t.choice.sized.exact and enc.method == "ecsq":
                # a ladder point: its bound is that of rounding the scaled rows and columns;
                # compensated codes have their own range, and where they outgrow the bound that
                # rounding (the bound's own codes) is written instead
                arrays, _ = stored_arrays(enc, tuple(t.ref.shape), "entropy")
                if sum(int(a.nbytes) for a in arrays.values()) > t.choice.nbytes:  # the bound's own codes
                    enc, err = encode_weighted(xf, t.choice.spec, t.ref, replace(t.stats, gram=None), t.record)
                t.choice = replace(t.choice, sized=replace(t.choice.sized, params=enc.params))
            elif t.stats is not None and t.stats.gram is not None and enc.params != t.choice.params:
                # compensation moved a group's values past what its narrow scales hold (float32 was
                # needed): the planned params are those of the weighted encoding without compensation
                enc, err = encode_weighted(xf, t.choice.spec, t.ref, replace(t.stats, gram=None), t.record)
            return enc, err

        def results() -> Iterator[Encoded]:
            for t, (enc, err) in zip(plan.tensors, ordered_map(encode, plan.tensors, jobs)):
                codec = storage_codec(t.choice.spec if t.choice is not None else None, Spec())
                arrays = stored_arrays(enc, tuple(t.ref.shape), codec) if codec != "bitpack" else None
                stored = (sum(int(a.nbytes) for a in arrays[0].values()) if arrays is not None
                          else stored_nbytes(enc, tuple(t.ref.shape)))
                exact = t.choice is None or t.choice.sized.exact
                if t.choice is not None and (enc.params != t.choice.params or stored > t.choice.nbytes
                                             or exact and stored != t.choice.nbytes):
                    raise WorkError(f"internal: {t.ref.name} encoded to {stored} bytes, planned "
                                    f"{t.choice.nbytes}; nothing was written")
                t.cache = {}
                t.actual = err
                yield Encoded(t.ref, enc, err, t.note if not t.quantized else "", codec=codec, stored=arrays)

        def header() -> int:
            plan.header_bytes = exact_header(plan.tensors)
            return plan.header_bytes

        reports, totals, archive_bytes = write_archive(output, results(), sum(t.ref.nbytes for t in plan.tensors),
                                                       progress, header)
        report = QuantizeReport(output, list(inputs), reports, sources.input_bytes, archive_bytes,
                                time.perf_counter() - start, totals,
                                importance_use(stats, reports))
    return PlannedQuantizeReport(plan, report)
