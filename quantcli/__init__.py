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

from .errors import ArchiveError, ConfigError, InputError, QuantError, WorkError  # noqa: E402
from .spec import Spec  # noqa: E402
from .api import (DequantizeReport, PQDotReport, QuantizeReport, TensorReport, VerifyReport,  # noqa: E402
                  dequantize_file, inspect_paths, open_archive, pq_dot, quantize_file, verify_archive)
from .methods import METHODS, get_method  # noqa: E402

__all__ = [
    "__version__", "Spec", "quantize_file", "dequantize_file", "inspect_paths", "open_archive",
    "QuantizeReport", "DequantizeReport", "TensorReport", "METHODS", "get_method",
    "QuantError", "ConfigError", "InputError", "ArchiveError", "WorkError", "pq_dot", "PQDotReport",
    "verify_archive", "VerifyReport",
]
