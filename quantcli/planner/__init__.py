"""Rate-distortion planning: per-tensor settings that give the best quality for a size budget,
or the smallest archive that keeps every tensor above a quality floor.

How it works (docs/PLANNER.md has the long version):

1. Measure (`measure`). Each tensor to plan is loaded once; every candidate setting
   (`candidates.default_candidates`) is encoded on a sample of at most `sample` values (whole
   rows, evenly spaced). The error estimate is the sample's relative error sum(err^2) / sum(x^2).
   Stored sizes are exact.
2. Allocate (`allocate`, pure). Distortion of a tensor = n_t * MSE_t / mean(x_t^2) (element-weighted
   relative error; `objective="mse"` uses the squared error instead). Greedy marginal gain over
   each tensor's lower convex hull, then a fill pass.
3. Size exactly (`quantcli.sizing`). The header is sized with every metric at its longest and the
   writer pads the real header to exactly that size: a dry run's prediction is the file's size.
"""

from .allocate import allocate, lower_hull, pareto_front
from .budget import Budget, budget_from_options
from .candidates import LEVELS, default_candidates, family, label
from .curve import plot_curve, rate_distortion_curve
from .measure import SAMPLE, sample_rows
from .model import (Baseline, Curve, CurvePoint, Plan, PlannedQuantizeReport, Point, TensorPlan, overall_sqnr,
                    weighted_sqnr)
from .run import OBJECTIVES, exact_header, plan_budget, quantize_budget

candidate_label = label  # the name earlier releases used

__all__ = [
    "Budget", "budget_from_options", "default_candidates", "label", "family", "candidate_label", "LEVELS",
    "plan_budget", "quantize_budget", "rate_distortion_curve", "plot_curve", "allocate", "lower_hull",
    "pareto_front", "exact_header", "sample_rows", "SAMPLE", "OBJECTIVES", "Baseline", "Curve", "CurvePoint",
    "Plan", "PlannedQuantizeReport", "Point", "TensorPlan", "overall_sqnr", "weighted_sqnr",
]
