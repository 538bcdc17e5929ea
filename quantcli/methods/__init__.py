"""The method registry: one table, filled when each method module is imported below."""

from __future__ import annotations

from typing import TypeVar

from ..errors import ConfigError

METHODS: dict[str, "Method"] = {}
KEEP = "keep"  # the method that stores a tensor as it is (kept tensors: biases, norms, integers)
_M = TypeVar("_M", bound=type)


def register(cls: _M) -> _M:
    """Class decorator: add one instance of a Method subclass under its `name`."""
    name = cls.name  # type: ignore[attr-defined]
    if name in METHODS:
        raise RuntimeError(f"method {name!r} is registered twice")
    METHODS[name] = cls()
    return cls


def get_method(name: str) -> "Method":
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}") from None


from .base import Encoding, Method  # noqa: E402
from . import keep, uniform, floats, levels, kmeans, vq, pq, ecsq, lossless  # noqa: E402,F401

__all__ = ["KEEP", "METHODS", "Encoding", "Method", "get_method", "register"]
