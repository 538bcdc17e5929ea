"""The method registry: one table of names, each method's module imported on first use.

Reading the names (`NAMES`, `CHOICES`: the CLI's --method choices) imports no method module, so
`quant --help` and `quant inspect x.npy` pay for none of them. A method module registers its
class with `@register` when it is imported; `METHODS[name]` and `get_method(name)` import it then.
Adding a method: its module in this folder and one line in `_MODULES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ConfigError

if TYPE_CHECKING:
    from .base import Encoding, Method

# name -> the module of this folder that registers it, in registration order (the planner's
# candidate order, so the archive bytes of a planned run depend on it)
_MODULES = {"keep": "keep", "uniform": "uniform", "fp16": "floats", "bf16": "floats", "log": "levels",
            "nf": "levels", "kmeans": "kmeans", "vq": "vq", "pq": "pq", "ecsq": "ecsq", "lossless": "lossless"}
NAMES = tuple(_MODULES)
KEEP = "keep"        # the method that stores a tensor as it is (kept tensors: biases, norms, integers)
DEFAULT = "uniform"  # Spec's default method: 8-bit symmetric uniform, the safe default
LOOKUP = "pq"        # the method whose codes index lookup tables: pq-encode writes it, pq-dot reads it
CHOICES = tuple(n for n in NAMES if n != KEEP)  # what a user may ask for (--method, recipes)
_M = TypeVar("_M", bound=type)
_REGISTERED: dict[str, "Method"] = {}


def register(cls: _M) -> _M:
    """Class decorator: add one instance of a Method subclass under its `name`."""
    name = cls.name  # type: ignore[attr-defined]
    if name in _REGISTERED:
        raise RuntimeError(f"method {name!r} is registered twice")
    _REGISTERED[name] = cls()
    return cls


class _Registry(Mapping[str, "Method"]):
    """name -> Method, importing a method's module the first time it is asked for."""

    def __getitem__(self, name: str) -> "Method":
        if name not in _REGISTERED and isinstance(name, str) and name in _MODULES:
            importlib.import_module(f"{__name__}.{_MODULES[name]}")
        return _REGISTERED[name]

    def __iter__(self) -> Iterator[str]:
        yield from _MODULES
        yield from (n for n in list(_REGISTERED) if n not in _MODULES)

    def __len__(self) -> int:
        return len(set(_MODULES) | set(_REGISTERED))

    def __contains__(self, name: object) -> bool:
        return name in _MODULES or name in _REGISTERED


METHODS: Mapping[str, "Method"] = _Registry()


def get_method(name: str) -> "Method":
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}") from None


def __getattr__(name: str) -> Any:
    """`Encoding` and `Method` from .base, imported when first used (base imports numpy and more)."""
    if name in ("Encoding", "Method"):
        from . import base
        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CHOICES", "DEFAULT", "KEEP", "LOOKUP", "METHODS", "NAMES", "Encoding", "Method", "get_method", "register"]
