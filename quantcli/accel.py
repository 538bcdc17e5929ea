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


def compile_kernels(build: Callable[[Callable[[Callable], Callable]], dict]) -> dict:
    """`build(jit)`'s kernels, or {} when numba cannot be imported (every module then uses
    its numpy path). `jit` compiles a function with nogil and an on-disk cache, or without the
    cache where no cache location is writable; no fastmath: floats round as numpy's do."""
    try:
        import numba
    except Exception:  # not installed, or broken: the numpy paths give the same results
        return {}

    def jit(fn: Callable) -> Callable:
        try:
            return numba.njit(cache=True, nogil=True)(fn)
        except Exception:  # no writable cache location: compile per process
            return numba.njit(nogil=True)(fn)

    return build(jit)
