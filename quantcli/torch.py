"""An archive as a PyTorch state dict. torch is imported when `load_state_dict` is called, never
before: quantcli does not depend on it.

What happens to each tensor, exactly:
- quantized: decoded to float32 by its method (numpy), rounded to the target dtype in numpy
  (bfloat16 through ml_dtypes, round to nearest even: the same bits `quant dequantize` writes),
  then handed to torch without a copy (`torch.from_numpy`; bfloat16 as its uint16 bit pattern
  viewed as torch.bfloat16, since numpy has no bfloat16 torch understands). torch does no
  conversion of its own.
- kept (1-D norms, integer tensors, ...): the stored array, bit for bit, in its own dtype; a
  bfloat16 kept tensor never passes through float32.
- then `.to(device)` (a copy only when the device is not the CPU).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .loader import ArchiveReader

_TORCH_NAMES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}


def _code(dtype: Any) -> str | None:
    """torch.bfloat16, 'bfloat16', np.float16, ... as a safetensors code (None: original dtypes)."""
    if dtype is None:
        return None
    name = str(dtype).removeprefix("torch.")
    return _TORCH_NAMES.get(name, name)


def to_tensor(array: np.ndarray) -> Any:
    """A numpy array (bfloat16 from ml_dtypes included) as a CPU torch tensor sharing its memory
    when it can (a read-only array, such as a kept tensor read from the file, is copied once)."""
    import torch

    if not array.flags.writeable:
        array = array.copy()
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def load_state_dict(path: str, dtype: Any = None, device: Any = "cpu") -> dict[str, Any]:
    """{name: torch.Tensor} for `model.load_state_dict(...)`: each tensor in its original dtype or,
    for float tensors, in `dtype` (a torch dtype or its name), on `device`.

    One tensor is decoded at a time; peak memory is the state dict plus one tensor's float32
    reconstruction."""
    import torch  # noqa: F401  (fails here, with torch's own message, when it is not installed)

    out = {}
    with ArchiveReader(path, _code(dtype)) as reader:
        for name in reader.keys():
            out[name] = to_tensor(reader[name]).to(device)
    return out
