"""Optional numba kernels: which backend a call uses. numba is the `fast` extra; every kernel has
a numpy path that gives the same results, so the choice is about speed only."""

from __future__ import annotations

from typing import Callable

BACKENDS = ("auto", "numpy", "numba")


def choose(requested: str, compiled: Callable[[], dict], where: str = "backend") -> str:
    """"numba" when asked for or `auto` and `compiled()` (the module's kernels, compiled once, {}
    without numba) has them; "numpy" otherwise. ValueError for an unknown name, or numba asked for
    and not installed."""
    if requested not in BACKENDS:
        raise ValueError(f"{where} must be one of {BACKENDS}, got {requested!r}")
    if requested == "numpy":
        return "numpy"
    if compiled():
        return "numba"
    if requested == "numba":
        raise ValueError("numba backend requested but numba is not installed")
    return "numpy"
