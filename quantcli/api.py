"""The library facade: paths in, dataclass reports out. No printing, no exiting.

Each function checks its arguments, opens its inputs and hands over to the module that does the
work (pipeline, dequant, inspection, pqdot); the planner has its own entry points
(`quantcli.planner`)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

from .archive.container import Archive, open_archive
from .archive.dequant import OUTPUT_DTYPES, dequantize_file, parse_size
from .errors import ConfigError
from .archive.inspection import archive_report, inspect_paths, tensor_stats, verify_archive
from .methods import METHODS, get_method
from .io.output import check_output
from .pipeline.parallel import default_jobs
from .pipeline import write as pipeline
from .pipeline.write import Progress, open_importance, resolve
from .pqdot import pq_dot
from .recipe import Recipe, load_recipe
from .reports import (DequantizeReport, Inspection, PlanReport, PQDotReport, QuantizeReport, TensorReport,
                      TensorStats, VerifyReport)
from .pipeline.selection import Selection, plan_tensors, refuse_archives
from .io.sources import Sources
from .spec import Spec

__all__ = [
    "quantize_file", "plan_file", "dequantize_file", "inspect_paths", "verify_archive", "pq_dot", "open_archive",
    "Archive", "archive_report", "tensor_stats", "parse_size", "OUTPUT_DTYPES", "check_output", "resolve_jobs",
    "QuantizeReport", "DequantizeReport", "PlanReport", "Inspection", "TensorReport", "TensorStats",
    "VerifyReport", "PQDotReport", "Progress",
]


SPEC_FIELDS = frozenset(f.name for f in dataclasses.fields(Spec))


def resolve_jobs(jobs: int | None) -> int:
    """None means the machine's cores; anything below 1 is a usage error."""
    jobs = default_jobs() if jobs is None else jobs
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    return jobs


def weighs_importance(method: str) -> bool:
    """Whether --importance changes what `method` does (it weights its choices)."""
    return get_method(method).weighs_importance


def _recipe(recipe: str | Recipe | None) -> Recipe | None:
    return load_recipe(recipe) if isinstance(recipe, str) else recipe


def quantize_file(inputs: list[str], output: str, spec: Spec | None = None, *, only: str | None = None,
                  skip: str | None = None, include_1d: bool = False, keep_nonfinite: bool = False,
                  recipe: str | Recipe | None = None, jobs: int | None = 1,
                  progress: Progress | None = None, importance: str | None = None) -> QuantizeReport:
    """Quantize every tensor of `inputs` into one archive at `output` (written atomically).

    With `jobs` > 1 (None: the machine's cores) and enough tensor bytes to encode, worker
    processes encode tensors at once; the archive's bytes do not depend on `jobs`. `importance`:
    a calibration statistics file (docs/IMPORTANCE.md); the tensors it covers are encoded for
    their layer's output error.

    Example:
        >>> r = quantize_file(["w.npy"], "w.qnt.safetensors", Spec(bits=4, granularity="group"))
        >>> r.tensors[0].sqnr_db > 15
        True
    """
    start = time.perf_counter()  # the report's time covers the whole run (an --sqnr step search too)
    spec = spec or Spec()
    get_method(spec.method).check_spec(spec)
    recipe = _recipe(recipe)
    jobs = resolve_jobs(jobs)
    selection = Selection(only, skip, include_1d)
    with Sources(inputs) as sources:
        check_output(output, sources.files + ([importance] if importance else []), ".safetensors")
        refuse_archives(sources)
        stats = open_importance(importance, sources)
        plan = resolve(plan_tensors(sources.refs, spec, selection, recipe), stats)
        report = pipeline.quantize(sources, list(inputs), plan, output, jobs=jobs, keep_nonfinite=keep_nonfinite,
                                   progress=progress, base=spec, importance=stats)
    report.seconds = time.perf_counter() - start
    return report


def plan_file(inputs: list[str], spec: Spec | None = None, *, only: str | None = None, skip: str | None = None,
              include_1d: bool = False, recipe: str | Recipe | None = None,
              importance: str | None = None) -> PlanReport:
    """The per-tensor plan and predicted archive size, reading headers only (no tensor data).

    Stored bytes are exact for each tensor's arrays; the header (manifest with metrics) is built
    as the writer builds it with every metric at its longest, so it is an upper bound, close to
    exact. A tensor whose float16 scales would overflow falls back to float32 scales when actually
    encoded, which the plan cannot see without reading the data.
    """
    spec = spec or Spec()
    recipe = _recipe(recipe)
    with Sources(inputs) as sources:
        refuse_archives(sources)
        stats = open_importance(importance, sources)
        plan = plan_tensors(sources.refs, spec, Selection(only, skip, include_1d), recipe)
        return pipeline.dry_run(sources, list(inputs), plan, stats)


def quantize(inputs: list[str], output: str = "", *, dry_run: bool = False, target_bpw: float | None = None,
             max_size: str | None = None, min_sqnr: float | None = None, only: str | None = None,
             skip: str | None = None, include_1d: bool = False, keep_nonfinite: bool = False,
             recipe: str | Recipe | None = None, jobs: int | None = None, importance: str | None = None,
             sample: int | None = None, candidates: str = "default", objective: str | None = None,
             preset: str | None = None, typed: frozenset[str] | set[str] = frozenset(),
             progress: Callable[..., None] | None = None, **spec_fields: Any) -> Any:
    """THE front door of `quant quantize`: a plain run, a budgeted run (`target_bpw`, `max_size` or
    `min_sqnr`: the planner) or either's dry run, from options named as the command names them.

    `spec_fields` are `Spec` fields (method, bits, ...). `preset` fills options by name
    (quantcli.presets). `typed`: the options the user set explicitly; an explicit option that would
    change nothing (a method's option it does not read, a per-tensor option with a budget) is a
    ConfigError rather than a silent no-op. `progress` gets (bytes done, total, tensor) for a plain
    run and the planner's PhaseEvents for a planned one (`is_planned`). Returns a QuantizeReport, PlanReport (plain dry run),
    planner Plan (budgeted dry run) or PlannedQuantizeReport."""
    from . import planner, presets

    unknown = sorted(set(spec_fields) - SPEC_FIELDS)
    if unknown:
        raise TypeError(f"quantize() got unexpected options: {', '.join(unknown)}")
    run = dict(target_bpw=target_bpw, include_1d=include_1d)
    chosen = presets.apply(preset, {**run, **spec_fields}, set(typed))
    target_bpw, include_1d = chosen.pop("target_bpw"), chosen.pop("include_1d")
    spec = Spec(**chosen)
    if not output and not dry_run:
        raise ConfigError("quantize needs --output/-o (or --dry-run)")
    budget = planner.budget_from_options(target_bpw, max_size, min_sqnr)
    fixed = sorted(set(presets.get(preset).options) & SPEC_FIELDS) if preset is not None else []
    if budget is not None and recipe is None and fixed:  # a preset's setting the planner would ignore
        raise ConfigError(f"--preset {preset} is a fixed setting and a budget lets the planner choose each "
                          f"tensor's; give one or the other (a budget preset: best-B)")
    refuse_ignored(spec, set(typed), planned=budget is not None, pinned=recipe is not None)
    planner_only = sorted({"objective", "sample", "candidates"} & set(typed))
    if planner_only and budget is None:
        raise ConfigError(f"--{planner_only[0]} has no effect without a budget: it sets how the planner "
                          "chooses (give --target-bpw, --max-size or --min-sqnr)")
    if importance is not None and budget is None and recipe is None and not weighs_importance(spec.method):
        raise ConfigError(f"--importance has no effect with --method {spec.method} (it weights the choices of "
                          f"{', '.join(m for m in METHODS if METHODS[m].weighs_importance)})")
    select = dict(only=only, skip=skip, include_1d=include_1d, recipe=recipe, importance=importance)
    if budget is not None:  # `progress` receives the planner's phase events (planner.PhaseEvent)
        kw = dict(select, keep_nonfinite=keep_nonfinite, candidates=planner.default_candidates(candidates),
                  sample=planner.SAMPLE if sample is None else sample, jobs=jobs, progress=progress,
                  **({"objective": objective} if objective is not None else {}))  # else the planner's default
        if dry_run:
            return planner.plan_budget(inputs, budget, spec, **kw)  # type: ignore[arg-type]
        return planner.quantize_budget(inputs, output, budget, spec, **kw)  # type: ignore[arg-type]
    if dry_run:
        return plan_file(inputs, spec, **select)  # type: ignore[arg-type]
    return quantize_file(inputs, output, spec, keep_nonfinite=keep_nonfinite, jobs=jobs, progress=progress,
                         **select)  # type: ignore[arg-type]


def is_planned(*, target_bpw: float | None = None, max_size: str | None = None, min_sqnr: float | None = None,
               preset: str | None = None, **_: Any) -> bool:
    """Whether `quantize` with these options runs the planner (a budget, or a budget preset): its
    progress is then phase events, not bytes."""
    from . import presets

    chosen = presets.get(preset).options if preset is not None else {}
    return any(v is not None for v in (target_bpw, max_size, min_sqnr, chosen.get("target_bpw")))


def refuse_ignored(spec: Spec, typed: set[str], *, planned: bool, pinned: bool) -> None:
    """An option set explicitly that would change nothing is an error, not a no-op: with a budget
    (and no recipe) every per-tensor option (--method and --codec included), else what the method
    does not read (`Method.reads`)."""
    from .methods.base import ALWAYS_READ

    per_tensor = {o for m in METHODS.values() for o in m.options} | {"method", "codec"}
    if planned and not pinned:  # the planner picks each tensor's method and codec too
        ignored = sorted(typed & per_tensor - (ALWAYS_READ - {"method", "codec"}))
        if ignored:
            raise ConfigError(f"--{ignored[0].replace('_', '-')} has no effect with a budget: the planner chooses "
                              "each tensor's setting (use --recipe to pin some tensors)")
        return
    METHODS[spec.method].refuse_unread(spec, typed & per_tensor)


def curve(inputs: list[str], *, plot: str | None = None, only: str | None = None, skip: str | None = None,
          include_1d: bool = False, sample: int | None = None, candidates: str = "default",
          jobs: int | None = None) -> Any:
    """The rate-distortion points of every planner candidate on the model (`planner.Curve`), and
    with `plot` a PNG of them. matplotlib is checked before the measuring, not after it."""
    from . import planner

    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ConfigError("--plot needs matplotlib: pip install matplotlib") from None
    result = planner.rate_distortion_curve(inputs, only=only, skip=skip, include_1d=include_1d,
                                           sample=planner.SAMPLE if sample is None else sample,
                                           candidates=planner.default_candidates(candidates), jobs=jobs)
    if plot is not None:
        planner.plot_curve(result, plot)
    return result
