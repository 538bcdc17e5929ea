"""Rate-distortion planning: per-tensor settings that give the best quality for a size budget,
or the smallest archive that keeps every tensor above a quality floor.

How it works (docs/PLANNER.md has the long version):

1. Measure (`measure`). Each tensor to plan is loaded once; every candidate setting (each
   method's `planner_candidates`) is encoded on a sample of at most `sample` values (whole rows,
   evenly spaced). Fixed-rate sizes are exact; entropy-coded sizes are predicted from the sample.
   Only per-tensor statistics (and the sample rows of tensors with a continuous step) stay.
2. Allocate (`allocate`, pure): greedy marginal gain over each tensor's lower convex hull of
   (bytes, w_t x relative error), w_t from the objective (`weights`).
3. Re-solve (`solve`): the tensors whose choice has a continuous step (ecsq) share one factor on
   sqrt(signal / w_t), searched on the samples (trellis, real codec) to fill their bytes.
4. Write once (`write`): every tensor encoded once with its choice (`--jobs` processes), sized
   exactly; over the budget, at most two correction passes (coarser steps, then exact
   fixed-rate moves) before anything is published.
"""

from .allocate import allocate, lower_hull, pareto_front
from .budget import Budget, budget_from_options
from .candidates import LEVELS, default_candidates, family, label
from .curve import plot_curve, rate_distortion_curve
from .measure import SAMPLE, sample_rows
from .progress import PhaseEvent, PhaseProgress
from .model import (Baseline, Curve, CurvePoint, Plan, PlannedQuantizeReport, Point, TensorPlan, overall_sqnr,
                    weighted_sqnr)
from .run import exact_header, plan_budget, quantize_budget
from .weights import OBJECTIVES

candidate_label = label  # the name earlier releases used

__all__ = [
    "Budget", "budget_from_options", "default_candidates", "label", "family", "candidate_label", "LEVELS",
    "plan_budget", "quantize_budget", "rate_distortion_curve", "plot_curve", "allocate", "lower_hull",
    "pareto_front", "exact_header", "sample_rows", "SAMPLE", "OBJECTIVES", "Baseline", "Curve", "CurvePoint",
    "Plan", "PlannedQuantizeReport", "PhaseEvent", "PhaseProgress", "Point", "TensorPlan", "overall_sqnr", "weighted_sqnr",
]
