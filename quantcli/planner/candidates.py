"""The settings the planner measures on each tensor, keyed by their frozen `Spec`: each method
contributes its own ladder (`Method.planner_candidates`), in registry order."""

from __future__ import annotations

from ..errors import ConfigError
from ..methods import METHODS, get_method
from ..spec import Spec

LEVELS = ("default", "fast", "all")


def default_candidates(level: str = "default") -> list[Spec]:
    """The settings the planner measures per tensor, from every registered method.

    default: uniform asymmetric 2-8 bits at g32/g64/g128/channel, fp16, and ecsq steps of 2^0.5 ..
    2^-6 of the tensor's RMS (re-solved continuously after the allocation). fast: uniform at
    g64/g128/channel only. all: default plus nf 2-5 bits at g32/g64/g128 and kmeans
    normalize=group 2-4 bits at g64/g128 (several times the measuring time; docs/PLANNER.md).
    """
    if level not in LEVELS:
        raise ConfigError(f"--candidates must be {', '.join(LEVELS[:-1])} or {LEVELS[-1]}, got {level!r}")
    return [spec for method in METHODS.values() for spec in method.planner_candidates(level)]


def label(spec: Spec) -> str:
    """The setting's display name, independent of the tensor (e.g. 'int4 asym g64', 'nf3 g128')."""
    return get_method(spec.method).candidate_label(spec)


def family(spec: Spec) -> str:
    """The setting without its bits (one line of a rate-distortion plot): method and grouping."""
    return get_method(spec.method).candidate_family(spec)
