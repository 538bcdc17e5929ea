"""The planner's entry points: plan for a budget (a dry run), or plan and write the archive."""

from __future__ import annotations

import math
import time

from ..errors import ConfigError
from ..calibration.importance import Importance
from ..metrics import archive_bits_per_weight
from ..io.output import check_output
from ..pipeline.parallel import default_jobs
from ..pipeline.write import importance_use, open_importance, write_archive
from ..recipe import Recipe, load_recipe
from ..reports import QuantizeReport
from ..pipeline.selection import Selection, plan_tensors, refuse_archives
from ..archive.sizing import fixed_header_bound, header_bytes
from ..io.sources import Sources, model_configs
from ..spec import Spec
from .allocate import TooSmall, allocate
from .budget import Budget
from .candidates import default_candidates, label
from .measure import SAMPLE, measure_all
from .progress import PhaseClock, PhaseProgress, announce
from .solve import Solved, solve
from .weights import OBJECTIVES, objective_weights
from .write import write_planned
from .model import (Baseline, Plan, PlannedQuantizeReport, Point, TensorPlan, objective_sqnr, overall_sqnr,
                    weighted_sqnr)


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


def _baselines(tensors: list[TensorPlan], budget: Budget, limit: int | None, candidates: list[Spec],
               weights: dict[int, float]) -> tuple[Baseline | None, Baseline | None]:
    """The best single setting for every planned tensor that fits the budget: among the uniform
    candidates, and among all candidates. Sizes exact, quality estimated as for the plan, and
    chosen and compared under the plan's own objective weights (`weights`, by tensor index), so
    that a baseline never looks better only because it is weighed differently."""
    best: dict[bool, Baseline | None] = {True: None, False: None}
    planned = [t for t in tensors if t.role == "planned"]
    if not planned:
        return None, None
    quant_n = sum(t.elements for t in tensors if t.quantized)
    kept = sum(t.kept_bytes for t in tensors if not t.quantized)
    by_candidate: list[dict[Spec, Point]] = []
    for t in tensors:
        first: dict[Spec, Point] = {}
        for p in t.points:
            first.setdefault(p.candidate, p)
        by_candidate.append(first)
    for candidate in dict.fromkeys(candidates):
        picks: list[Point | None] = []
        for t, first in zip(tensors, by_candidate):
            if t.role != "planned":
                picks.append(t.choice)
                continue
            if candidate not in first:
                break
            picks.append(first[candidate])
        else:
            arrays = sum(p.nbytes if p is not None else t.kept_bytes for t, p in zip(tensors, picks))
            if budget.kind != "sqnr" and limit is not None and arrays > limit:
                continue  # the header only adds
            size = exact_header(tensors, picks) + arrays
            q = [(t, p) for t, p in zip(tensors, picks) if t.quantized and p is not None]
            if budget.kind == "sqnr":
                if any(p.sqnr_db < budget.value for t, p in q if t.role == "planned"):
                    continue
            elif limit is not None and size > limit:
                continue
            b = Baseline(label(candidate), size, archive_bits_per_weight(size, kept, quant_n),
                         weighted_sqnr((t.elements, p.rel) for t, p in q),
                         overall_sqnr((t.signal, p.rel) for t, p in q),
                         objective_sqnr((weights[i], p.rel) for i, p in enumerate(picks)
                                        if i in weights and p is not None) if weights else None)
            for uniform_only in (True, False):
                if uniform_only and candidate.method != Spec().method:  # the default method's best
                    continue
                cur = best[uniform_only]
                if cur is None or (b.archive_bytes < cur.archive_bytes if budget.kind == "sqnr"
                                   else _quality(b) > _quality(cur)):
                    best[uniform_only] = b
    return best[True], best[False]


def _quality(b: Baseline) -> float:
    return b.objective_sqnr_db if b.objective_sqnr_db is not None else b.weighted_sqnr_db


def _plan(sources: Sources, inputs: list[str], budget: Budget, selection: Selection, recipe: Recipe | None,
          base: Spec, candidates: list[Spec], sample: int, keep_nonfinite: bool, jobs: int,
          objective: str, start: float, trellis: bool = True, importance: Importance | None = None,
          progress: PhaseProgress | None = None) -> tuple[Plan, dict[int, float], Solved | None]:
    """Measure on samples, allocate, re-solve continuous steps: the plan with PREDICTED sizes,
    the objective's weight of each planned tensor (by index) and the re-solve's state."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"--objective must be {', '.join(OBJECTIVES[:-1])} or {OBJECTIVES[-1]}, got {objective!r}")
    if objective == "sensitivity" and (importance is None or not importance.sensitivity):
        raise ConfigError("--objective sensitivity needs --importance with NAME.sensitivity entries "
                          "(quant collect-importance --sensitivity)")
    items = plan_tensors(sources.refs, base, selection, recipe)
    clock = PhaseClock(progress, "measuring", len(items), sum(i.ref.nbytes for i in items))
    tensors = measure_all(items, candidates, sample, keep_nonfinite, jobs, importance,
                          step=lambda t: clock.step(t.ref.nbytes, t.ref.name))
    quant_n = sum(t.elements for t in tensors if t.quantized)
    kept = sum(t.kept_bytes for t in tensors if not t.quantized)
    limit = budget.limit_bytes(quant_n, kept)
    refined = solved = None
    weights: dict[int, float] = {}
    announce(progress, "allocating")
    if budget.kind == "sqnr":
        for t in tensors:
            if t.role == "planned":
                options = _choose_min_sqnr(t, budget.value)
                if not options:
                    raise _no_candidate(t, budget.value)
                t.choice = options[0]
    else:
        assert limit is not None
        idx = [i for i, t in enumerate(tensors) if t.role == "planned"]
        planned = [tensors[i] for i in idx]
        ws = objective_weights([t.elements for t in planned], [t.signal for t in planned],
                               [t.ref.name for t in planned], objective, (r.name for r in sources.refs),
                               shapes={r.name: r.shape for r in sources.refs}, configs=model_configs(sources.files),
                               sensitivity=importance.sensitivity if importance is not None else None)
        weights = dict(zip(idx, ws))
        try:
            choices, _ = allocate([[p.cost for p in t.points] for t in planned],
                                  [[w * p.rel for p in t.points] for t, w in zip(planned, ws)],
                                  limit, _fixed_bound(tensors))
        except TooSmall as e:
            if budget.kind != "bpw":
                raise
            # named: the tensor whose cheapest setting takes the most bits per weight
            worst = max(planned, key=lambda t: min((p.cost for p in t.points), default=0) / max(t.elements, 1))
            least = min((p.cost for p in worst.points), default=0) * 8 / max(worst.elements, 1)
            raise ConfigError(f"--target-bpw {budget.value:g} is too small: the smallest plan takes "
                              f"{archive_bits_per_weight(e.need, kept, quant_n):.3f} bits per weight "
                              f"(headers counted; this tensor's cheapest setting {least:.3f})",
                              path=worst.ref.path, tensor=worst.ref.name) from None
        for t, i in zip(planned, choices):
            t.choice = t.points[i]
        def total(ts: list[TensorPlan], pts: list[Point]) -> int:
            swap = {id(t): p for t, p in zip(ts, pts)}
            picks = [swap.get(id(t), t.choice) for t in tensors]
            return exact_header(tensors, picks) + sum(p.nbytes if p is not None else t.kept_bytes
                                                      for t, p in zip(tensors, picks))
        refined, solved = solve(planned, ws, limit, len(str(limit)), jobs, trellis, progress, total)
    for t in tensors:
        t.sample = None  # the samples' work is done: only statistics stay
    labels = list(dict.fromkeys(label(c) for c in candidates))
    plan = Plan(inputs, budget, tensors, sources.input_bytes, exact_header(tensors), limit, 0.0, sample, labels,
                objective)
    plan.refined = refined
    plan.baseline_uniform, plan.baseline_any = _baselines(tensors, budget, limit, candidates, weights)
    if weights:
        chosen = {i: tensors[i].choice for i in weights}
        plan.objective_sqnr_db = objective_sqnr((weights[i], p.rel) for i, p in chosen.items() if p is not None)
    plan.planning_seconds = time.perf_counter() - start
    return plan, weights, solved


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
                jobs: int | None = 1, objective: str = "auto", trellis: bool = True,
                importance: str | None = None, progress: PhaseProgress | None = None) -> Plan:
    """The dry run: measure on samples, allocate, re-solve, and PREDICT the archive's size
    (nothing written). Fixed-rate choices are sized exactly; entropy-coded ones are predicted
    from their samples (the real run then guarantees the budget, docs/PLANNER.md). `spec` is
    the base for recipe-pinned tensors only. trellis=False re-solves steps with plain rounding."""
    start = time.perf_counter()
    recipe, jobs = setup(recipe, jobs, sample)
    with Sources(inputs) as sources:
        refuse_archives(sources)
        plan, _, _ = _plan(sources, list(inputs), budget, Selection(only, skip, include_1d), recipe, spec or Spec(),
                           candidates or default_candidates(), sample, keep_nonfinite, jobs, objective,
                           start=start, trellis=trellis, importance=open_importance(importance, sources),
                           progress=progress)
    return plan


def quantize_budget(inputs: list[str], output: str, budget: Budget, spec: Spec | None = None, *,
                    only: str | None = None, skip: str | None = None, include_1d: bool = False,
                    keep_nonfinite: bool = False, recipe: str | Recipe | None = None,
                    candidates: list[Spec] | None = None, sample: int = SAMPLE, jobs: int | None = 1,
                    objective: str = "auto", progress: PhaseProgress | None = None,
                    trellis: bool = True, importance: str | None = None) -> PlannedQuantizeReport:
    """Plan on samples, then write every tensor once with its chosen setting; the archive never
    exceeds the budget (a bounded correction pass on the written sizes, `write.py`).
    `progress` receives phase events (measuring, allocating, solving, writing, correcting)."""
    start = time.perf_counter()
    recipe, jobs = setup(recipe, jobs, sample)
    with Sources(inputs) as sources:
        check_output(output, sources.files + ([importance] if importance else []), ".safetensors")
        refuse_archives(sources)
        stats = open_importance(importance, sources)
        plan, weights, solved = _plan(sources, list(inputs), budget, Selection(only, skip, include_1d), recipe,
                                      spec or Spec(), candidates or default_candidates(), sample, keep_nonfinite,
                                      jobs, objective, start=start, trellis=trellis, importance=stats,
                                      progress=progress)
        writer, header, passes = write_planned(plan.tensors, output, list(inputs), plan.limit_bytes, weights, solved,
                                               jobs, keep_nonfinite, stats,
                                               budget.value if budget.kind == "sqnr" else None, progress)
        ok = False
        try:
            for i, t in enumerate(plan.tensors):  # the plan now says what was written, exactly
                w = writer.done[i]
                t.actual = w.err
                if t.choice is not None:
                    t.choice = Point(t.choice.candidate, t.choice.spec, t.choice.label, w.sized, t.choice.rel,
                                     t.choice.header)
            plan.header_bytes = header
            if plan.refined is not None:
                plan.refined.corrections = passes
            reports, totals, archive_bytes = write_archive(output, writer.results(),
                                                           sum(t.ref.nbytes for t in plan.tensors), None,
                                                           lambda: header)
            ok = True
        finally:
            writer.close(ok)
        report = QuantizeReport(output, list(inputs), reports, sources.input_bytes, archive_bytes,
                                time.perf_counter() - start, totals, importance_use(stats, reports))
    return PlannedQuantizeReport(plan, report)
