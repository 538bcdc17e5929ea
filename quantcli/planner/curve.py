"""`quant curve`: every candidate setting applied to the whole model, as rate-distortion points."""

from __future__ import annotations

import time

from ..errors import ConfigError
from ..pipeline.selection import Selection, plan_tensors, refuse_archives
from ..io.sources import Sources
from ..spec import Spec
from .allocate import pareto_front
from .candidates import default_candidates, family, label
from .measure import SAMPLE, measure_all
from .model import Curve, CurvePoint, overall_sqnr, weighted_sqnr
from .run import setup


def rate_distortion_curve(inputs: list[str], *, only: str | None = None, skip: str | None = None,
                          include_1d: bool = False, keep_nonfinite: bool = False,
                          candidates: list[Spec] | None = None, sample: int = SAMPLE,
                          jobs: int | None = 1) -> Curve:
    """Measure every candidate setting on the model (row samples as the planner does)."""
    start = time.perf_counter()
    _, jobs = setup(None, jobs, sample)
    candidates = candidates or default_candidates()
    with Sources(inputs) as sources:
        refuse_archives(sources)
        items = plan_tensors(sources.refs, Spec(), Selection(only, skip, include_1d))
        tensors = measure_all(items, candidates, sample, keep_nonfinite, jobs)
    planned = [t for t in tensors if t.role == "planned"]
    n = sum(t.elements for t in planned)
    points = []
    for candidate in dict.fromkeys(candidates):
        picks = [[p for p in t.points if p.candidate == candidate] for t in planned]
        if not planned or any(not p for p in picks):
            continue
        chosen = [p[0] for p in picks]
        points.append(CurvePoint(label(candidate), candidate.method, candidate.bits,
                                 8 * sum(p.nbytes for p in chosen) / n if n else 0.0,
                                 overall_sqnr((t.signal, p.rel) for t, p in zip(planned, chosen)),
                                 weighted_sqnr((t.elements, p.rel) for t, p in zip(planned, chosen)),
                                 family(candidate)))
    for i in pareto_front([p.bits_per_weight for p in points], [-p.weighted_sqnr_db for p in points]):
        points[i].pareto = True
    return Curve(list(inputs), points, len(planned), n, sample, time.perf_counter() - start)


def plot_curve(curve: Curve, path: str) -> None:
    """A PNG of weighted SQNR against bits per weight, one line per method and grouping.
    Needs matplotlib (the optional `plot` extra)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install matplotlib") from None
    families: dict[str, list[CurvePoint]] = {}
    for p in curve.points:
        families.setdefault(p.family, []).append(p)
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, pts in sorted(families.items()):
        pts = sorted(pts, key=lambda p: p.bits_per_weight)
        ax.plot([p.bits_per_weight for p in pts], [p.weighted_sqnr_db for p in pts], marker="o", label=name)
    ax.set_xlabel("bits per weight (stored arrays)")
    ax.set_ylabel("weighted SQNR (dB)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120)
    except OSError as e:
        raise ConfigError(f"cannot write the plot: {e.strerror or e}", path=path) from None
    finally:
        plt.close(fig)
