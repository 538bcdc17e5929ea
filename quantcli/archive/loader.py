"""Reading an archive back as numpy arrays: `load` (every tensor) and `open` (one tensor at a time).

Each tensor comes back in its ORIGINAL dtype, as recorded in the manifest: a quantized tensor is
decoded (float32) and rounded to that dtype with numpy (bfloat16 through ml_dtypes, round to
nearest even), which gives exactly the values `quant dequantize` writes; a kept tensor is the
stored array itself, bit for bit. With `dtype`, float tensors (quantized or kept) are converted to
it instead; integer and bool tensors always keep their own dtype.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from .container import Archive, open_archive
from .dequant import narrowed
from ..errors import ConfigError
from ..io.safetensors import DTYPES, FLOAT_CODES

_NAMES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}
FRAMEWORKS = {"numpy": "numpy", "np": "numpy", "pt": "torch", "torch": "torch"}  # safe_open's names too


def float_code(dtype: Any) -> str | None:
    """A float dtype asked for ('bfloat16', np.float16, 'F32', ...) as its safetensors code; None stays None."""
    if dtype is None:
        return None
    if isinstance(dtype, str) and dtype.upper() in FLOAT_CODES:
        return dtype.upper()
    try:
        name = np.dtype(DTYPES["BF16"] if str(dtype) == "bfloat16" else dtype).name
    except TypeError:
        name = ""
    if name not in _NAMES:
        raise ConfigError(f"dtype must be a float type ({', '.join(_NAMES)}), got {dtype!r}")
    return _NAMES[name]


class ArchiveReader:
    """An open archive read lazily, like a read-only dict: `keys()`, `a[name]`, `in`, `len`.

    Opening validates the manifest and every stored array's dtype and shape (no tensor data is
    read); `a[name]` reads, checks (SHA-256) and decodes that tensor only."""

    def __init__(self, path: str, dtype: Any = None, framework: str = "numpy", device: Any = "cpu"):
        if framework not in FRAMEWORKS:
            raise ConfigError(f"framework must be one of {', '.join(FRAMEWORKS)}, got {framework!r}")
        self._code = float_code(dtype)
        self._torch = FRAMEWORKS[framework] == "torch"
        self._device = device
        self.archive: Archive = open_archive(path)
        self.path = path

    def get_tensor(self, name: str) -> Any:
        """`name` decoded, as a numpy array or (framework "pt") a torch tensor on the device."""
        if not self._torch:
            return self[name]
        return to_tensor(self[name]).to(self._device)

    def metadata(self) -> dict[str, str]:
        """The archive file's safetensors metadata (format keys and the manifest), as safe_open gives."""
        return dict(self.archive.file.metadata)

    def keys(self) -> list[str]:
        return [t.name for t in self.archive.tensors]

    def dtype_of(self, name: str) -> str:
        """The safetensors dtype `a[name]` returns (the original one unless a dtype was asked for)."""
        return self._target(self._tensor(name).dtype)

    def _target(self, code: str) -> str:
        return self._code if self._code is not None and code in FLOAT_CODES else code

    def _tensor(self, name: str) -> Any:
        try:
            return self.archive.by_name[name]
        except KeyError:
            raise KeyError(name) from None

    def __getitem__(self, name: str) -> np.ndarray:
        t = self._tensor(name)
        values = self.archive.decode(t)
        target = self._target(t.dtype)
        with np.errstate(over="ignore"):
            out = values.astype(DTYPES[target], copy=False)
        return narrowed(self.path, name, values, out, target, original=target == t.dtype)  # too narrow: refused

    def __contains__(self, name: object) -> bool:
        return name in self.archive.by_name

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.archive.tensors)

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        """(name, array) pairs, decoded one at a time as the iteration reaches them."""
        for name in self.keys():
            yield name, self[name]

    def close(self) -> None:
        self.archive.close()

    def __enter__(self) -> "ArchiveReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open(path: str, framework: str = "numpy", device: Any = "cpu", dtype: Any = None  # noqa: A001
         ) -> ArchiveReader:
    """Open an archive for reading one tensor at a time, like safetensors' `safe_open`:
    `with quantcli.open(p, framework="pt") as a: a.keys(), a.get_tensor(name), a.metadata()`
    (`a[name]` is always a numpy array)."""
    return ArchiveReader(path, dtype, framework, device)


def load(path: str, dtype: Any = None) -> dict[str, np.ndarray]:
    """Every tensor of the archive at `path` as {name: ndarray}, in each tensor's original dtype
    (bfloat16 as ml_dtypes.bfloat16) or, for float tensors, in `dtype`."""
    with ArchiveReader(path, dtype) as reader:
        return dict(reader.items())


def to_tensor(array: np.ndarray) -> Any:
    """A numpy array (bfloat16 from ml_dtypes included) as a CPU torch tensor sharing its memory
    when it can (a read-only array, such as a kept tensor read from the file, is copied once)."""
    import torch

    if not array.flags.writeable:
        array = array.copy()
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(array)
