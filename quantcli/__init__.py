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
"""

__version__ = "0.1.0"

# Names are imported on first use (PEP 562), so that `import quantcli` is cheap: the command line
# installs its signal handlers before the heavy imports (numpy, typer, rich) happen.
_EXPORTS = {
    "ArchiveError": "errors", "ConfigError": "errors", "InputError": "errors", "QuantError": "errors",
    "WorkError": "errors", "Spec": "spec", "DequantizeReport": "api", "PQDotReport": "api", "QuantizeReport": "api",
    "TensorReport": "api", "VerifyReport": "api", "dequantize_file": "api", "inspect_paths": "api",
    "open_archive": "api", "pq_dot": "api", "quantize_file": "api", "verify_archive": "api", "METHODS": "methods",
    "get_method": "methods",
}


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'quantcli' has no attribute {name!r}")
    from importlib import import_module
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "__version__", "Spec", "quantize_file", "dequantize_file", "inspect_paths", "open_archive",
    "QuantizeReport", "DequantizeReport", "TensorReport", "METHODS", "get_method",
    "QuantError", "ConfigError", "InputError", "ArchiveError", "WorkError", "pq_dot", "PQDotReport",
    "verify_archive", "VerifyReport",
]
