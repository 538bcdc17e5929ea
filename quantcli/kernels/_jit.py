"""The one way kernels are compiled: nopython, GIL released (threads can run them side by side), an
on-disk cache, no fastmath (floats round exactly as numpy's, so results match the oracles bit for bit).

Where the cache goes is numba's rule: $NUMBA_CACHE_DIR if set, else the package's __pycache__ when
it is writable, else the user-wide cache dir (~/.cache/numba); a process with none of these
writable compiles without a cache instead of failing.
"""

from __future__ import annotations

from typing import Any, Callable

import numba


def jit(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """numba.njit(cache=True, nogil=True, **options) of fn (or a decorator when fn is None)."""
    if fn is None:
        return lambda f: jit(f, **options)
    try:
        return numba.njit(cache=True, nogil=True, **options)(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available": compile per process
        return numba.njit(nogil=True, **options)(fn)
