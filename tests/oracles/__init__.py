"""Numpy twins of the compiled kernels (quantcli/kernels/): plain vectorised numpy, slow, kept
out of the package as the oracles the kernels must match bit for bit.

Each module mirrors one kernel module with the same function names and signatures (outputs
written into the arrays passed in, status codes returned), so `use(monkeypatch, name)` can swap a
whole kernel module for its twin and a test can run the package's public functions both ways
and compare the bytes.
"""

from __future__ import annotations

import contextlib
import importlib


_REAL: dict[tuple[str, str], object] = {}  # the compiled kernels, as found before any swap


def use(monkeypatch, name: str, oracle: bool = True) -> None:
    """Replace every function of quantcli.kernels.<name> that has a twin here by that twin, or
    (oracle=False) put the compiled kernels back; monkeypatch undoes either at the test's end."""
    kernels = importlib.import_module(f"quantcli.kernels.{name}")
    twin = importlib.import_module(f"oracles.{name}")
    for attr in twin.KERNELS:
        real = _REAL.setdefault((name, attr), getattr(kernels, attr))
        monkeypatch.setattr(kernels, attr, getattr(twin, attr) if oracle else real)


@contextlib.contextmanager
def swapped(*names: str):
    """use() outside pytest (the benchmarks' numpy rows): the twins of kernels.<name> for each name,
    the compiled kernels back on exit."""
    saved = []
    for name in names:
        kernels = importlib.import_module(f"quantcli.kernels.{name}")
        twin = importlib.import_module(f"oracles.{name}")
        for attr in twin.KERNELS:
            saved.append((kernels, attr, getattr(kernels, attr)))
            setattr(kernels, attr, getattr(twin, attr))
    try:
        yield
    finally:
        for kernels, attr, real in reversed(saved):
            setattr(kernels, attr, real)
