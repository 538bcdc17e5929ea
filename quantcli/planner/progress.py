"""Phase events of a planned run, for a progress display: what the planner is doing, how far
along, and when it expects to finish the phase. The library only emits them; the CLI shows them
on a terminal (never under --quiet or --json, never into a pipe)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class PhaseEvent:
    """One step of a phase: `done` of `total` units (tensors, or passes), an estimate of the
    seconds left in the phase when one can be made (from the bytes done so far)."""

    phase: str               # "measuring", "allocating", "solving", "writing", "correcting"
    done: int
    total: int
    unit: str = "tensors"
    eta_seconds: float | None = None
    name: str = ""           # the tensor just finished, when there is one

    def describe(self) -> str:
        """e.g. 'measuring 37/111 tensors'."""
        if self.total <= 0:
            return self.phase
        return f"{self.phase} {self.done}/{self.total} {self.unit}"


PhaseProgress = Callable[[PhaseEvent], None]


class PhaseClock:
    """Emits a phase's events with an ETA from the work done so far (`weight`, e.g. bytes)."""

    def __init__(self, report: PhaseProgress | None, phase: str, total: int, weight_total: float,
                 unit: str = "tensors"):
        self.report, self.phase, self.total, self.unit = report, phase, total, unit
        self.weight_total = float(weight_total)
        self.weight = 0.0
        self.done = 0
        self.start = time.perf_counter()
        if report is not None:
            report(PhaseEvent(phase, 0, total, unit))

    def step(self, weight: float = 1.0, name: str = "") -> None:
        self.done += 1
        self.weight += weight
        if self.report is None:
            return
        spent = time.perf_counter() - self.start
        eta = None
        if 0 < self.weight < self.weight_total:
            eta = spent * (self.weight_total - self.weight) / self.weight
        elif self.weight >= self.weight_total:
            eta = 0.0
        self.report(PhaseEvent(self.phase, self.done, self.total, self.unit, eta, name))


def announce(report: PhaseProgress | None, phase: str) -> None:
    """A phase without counts (e.g. allocating)."""
    if report is not None:
        report(PhaseEvent(phase, 0, 0, ""))
