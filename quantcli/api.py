"""The library facade: paths in, dataclass reports out. No printing, no exiting.

Each function checks its arguments, opens its inputs and hands over to the module that does the
work (pipeline, dequant, inspection, pqdot); the planner has its own entry points
(`quantcli.planner`)."""

from __future__ import annotations

from .archive import Archive, open_archive
from .dequant import OUTPUT_DTYPES, dequantize_file, parse_size
from .errors import ConfigError
from .inspection import archive_report, inspect_paths, tensor_stats, verify_archive
from .methods import get_method
from .output import check_output
from .parallel import default_jobs
from .pipeline import Progress, dry_run, open_importance, quantize, resolve
from .pqdot import pq_dot
from .recipe import Recipe, load_recipe
from .reports import (DequantizeReport, Inspection, PlanReport, PQDotReport, QuantizeReport, TensorReport,
                      TensorStats, VerifyReport)
from .selection import Selection, plan_tensors, refuse_archives
from .sources import Sources
from .spec import Spec

__all__ = [
    "quantize_file", "plan_file", "dequantize_file", "inspect_paths", "verify_archive", "pq_dot", "open_archive",
    "Archive", "archive_report", "tensor_stats", "parse_size", "OUTPUT_DTYPES", "check_output", "resolve_jobs",
    "QuantizeReport", "DequantizeReport", "PlanReport", "Inspection", "TensorReport", "TensorStats",
    "VerifyReport", "PQDotReport", "Progress",
]


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
        return quantize(sources, list(inputs), plan, output, jobs=jobs, keep_nonfinite=keep_nonfinite,
                        progress=progress, base=spec, importance=stats)


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
        return dry_run(sources, list(inputs), plan, stats)
