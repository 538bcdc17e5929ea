"""Rate-distortion planning: per-tensor settings that give the best quality for a size budget,
or the smallest archive that keeps every tensor above a quality floor.

How it works (docs/PLANNER.md has the long version):

1. Measure (`measure`). Each tensor to plan is loaded once; every candidate setting
   (`candidates.default_candidates`) is encoded on a sample of at most `sample` values (whole
   rows, evenly spaced). The error estimate is the sample's relative error sum(err^2) / sum(x^2).
   Stored sizes are exact.
2. Allocate (`allocate`, pure). Distortion of a tensor = w_t x its relative error, w_t from the
   objective (`weights`: n_t for `relative`, sum x^2 for `mse`, `relative-emb` as relative with
   an encoder's input token table at 1/16). Greedy marginal gain over each tensor's lower convex
   hull, then a fill pass.
3. Re-solve (`refine`). The tensors that chose ecsq get the closed-form optimal steps (one factor
   on sqrt(signal / w_t)) searched on whole-tensor sizes to fill their bytes, then the same with
   the trellis, sized by storing its encodings (kept for the write).
4. Size exactly (`quantcli.sizing`). The header is sized with every metric at its longest and the
   writer pads the real header to exactly that size: a dry run's prediction is the file's size
   (an upper bound where plain-rounding ecsq choices remain).
"""

from .allocate import allocate, lower_hull, pareto_front
from .budget import Budget, budget_from_options
from .candidates import LEVELS, default_candidates, family, label
from .curve import plot_curve, rate_distortion_curve
from .measure import SAMPLE, sample_rows
from .model import (Baseline, Curve, CurvePoint, Plan, PlannedQuantizeReport, Point, TensorPlan, overall_sqnr,
                    weighted_sqnr)
from .run import exact_header, plan_budget, quantize_budget
from .weights import OBJECTIVES

candidate_label = label  # the name earlier releases used

__all__ = [
    "Budget", "budget_from_options", "default_candidates", "label", "family", "candidate_label", "LEVELS",
    "plan_budget", "quantize_budget", "rate_distortion_curve", "plot_curve", "allocate", "lower_hull",
    "pareto_front", "exact_header", "sample_rows", "SAMPLE", "OBJECTIVES", "Baseline", "Curve", "CurvePoint",
    "Plan", "PlannedQuantizeReport", "Point", "TensorPlan", "overall_sqnr", "weighted_sqnr",
]
