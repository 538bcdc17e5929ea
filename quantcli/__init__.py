"""quant: compress neural-network weight files, with honest error reports.

The library API (no printing, no exiting; errors are QuantError subclasses):

    >>> import os
    >>> from quantcli import Spec, quantize_file, dequantize_file
    >>> report = quantize_file(["model.safetensors"], "model.qnt.safetensors",
    ...                        Spec(bits=4, scheme="asymmetric", granularity="group", group_size=64))
    >>> 18 < report.overall_sqnr_db < 24, report.archive_bytes == os.path.getsize("model.qnt.safetensors")
    (True, True)
    >>> dequantize_file("model.qnt.safetensors", "restored.safetensors").tensors[0]
    ('layer.0.weight', 'F32', (32, 64))

Reading an archive back as arrays (each tensor in its original dtype; `quantcli.torch` has the
PyTorch twin):

    >>> import quantcli
    >>> weights = quantcli.load("model.qnt.safetensors")
    >>> weights["layer.0.weight"].dtype, weights["layer.0.weight"].shape
    (dtype('float32'), (32, 64))
    >>> with quantcli.open("model.qnt.safetensors") as archive:   # one tensor decoded at a time
    ...     archive["layer.0.weight"].shape == weights["layer.0.weight"].shape
    True

Names are imported when first used (PEP 562), so `import quantcli` and `quant --version` load
neither numpy nor the methods.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from .errors import ArchiveError, ConfigError, InputError, QuantError, WorkError  # noqa: E402
from .spec import Spec  # noqa: E402

_LAZY = {
    "quantize_file": "api", "dequantize_file": "api", "inspect_paths": "api", "open_archive": "api",
    "pq_dot": "api", "verify_archive": "api", "QuantizeReport": "api", "DequantizeReport": "api",
    "TensorReport": "api", "PQDotReport": "api", "VerifyReport": "api",
    "METHODS": "methods", "get_method": "methods",
    "load": "archive.loader", "open": "archive.loader", "ArchiveReader": "archive.loader",
}

__all__ = [
    "__version__", "Spec", "quantize_file", "dequantize_file", "inspect_paths", "open_archive",
    "QuantizeReport", "DequantizeReport", "TensorReport", "METHODS", "get_method",
    "QuantError", "ConfigError", "InputError", "ArchiveError", "WorkError", "pq_dot", "PQDotReport",
    "verify_archive", "VerifyReport", "load", "ArchiveReader",
]  # `quantcli.open` is left out: a star import must not shadow the built-in open


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'quantcli' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"quantcli.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
