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

`load_model(model, path)` loads into a module the way `safetensors.torch.load_model` does, and
also matches names across a wrapper (a SentenceTransformer holds the archive's `embeddings...` as
`0.auto_model.embeddings...`) and skips buffers the module does not save (`position_ids`).
"""

from __future__ import annotations

from typing import Any, Iterable


from .archive.loader import ArchiveReader, to_tensor

_TORCH_NAMES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}


def _code(dtype: Any) -> str | None:
    """torch.bfloat16, 'bfloat16', np.float16, ... as a safetensors code (None: original dtypes)."""
    if dtype is None:
        return None
    name = str(dtype).removeprefix("torch.")
    return _TORCH_NAMES.get(name, name)


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


def match_names(archive: Iterable[str], model: Iterable[str], unsaved: Iterable[str] = ()
                ) -> tuple[dict[str, str], list[str], list[str]]:
    """({archive name: model name}, missing model names, unexpected archive names).

    Names match as they are, or under the one prefix that makes the most of them match: a
    prefix on the model's side (a wrapper module) or on the archive's (a checkpoint saved from a
    wrapper). Archive names of buffers the model does not save (`unsaved`, such as BERT's
    `embeddings.position_ids`) are neither loaded nor unexpected."""
    names, wanted = list(archive), list(model)
    want = set(wanted)
    skip = set(unsaved)

    def mapping(add: str, strip: str) -> dict[str, str]:
        out = {}
        for n in names:
            if n.startswith(strip) and add + n[len(strip):] in want:
                out[n] = add + n[len(strip):]
        return out

    prefixes = {("", "")}
    for n in names[:64]:  # candidate prefixes: where one name ends another
        for m in wanted:
            if m.endswith("." + n):
                prefixes.add((m[: -len(n)], ""))
            elif n.endswith("." + m):
                prefixes.add(("", n[: -len(m)]))
    best = max((mapping(a, s) for a, s in sorted(prefixes)), key=len)
    missing = sorted(want - set(best.values()))
    unexpected = sorted(n for n in names if n not in best
                        and not any(n == u or n.endswith("." + u) or u.endswith("." + n) for u in skip))
    return best, missing, unexpected


def load_model(model: Any, path: str, strict: bool = True, dtype: Any = None, device: Any = "cpu"
               ) -> tuple[list[str], list[str]]:
    """Load the archive at `path` into `model` (a torch.nn.Module); returns (missing, unexpected)
    names as `safetensors.torch.load_model` does. Names and shapes are checked before anything is
    loaded: with `strict`, a missing or unexpected name is a RuntimeError that lists them, and a
    shape that differs is one in any case; the model is then left as it was. Tensors are decoded
    one at a time (in `dtype`, moved to `device`) and copied into the model's own tensors, which
    keep their dtype and device."""
    import torch

    state = model.state_dict()
    saved = set(state)
    unsaved = [name for name, _ in model.named_buffers() if name not in saved]
    with ArchiveReader(path, _code(dtype)) as reader:
        pairs, missing, unexpected = match_names(reader.keys(), state, unsaved)
        problems = [f"missing ({len(v)}): {', '.join(v[:5])}{' ...' if len(v) > 5 else ''}" if label == "missing"
                    else f"unexpected ({len(v)}): {', '.join(v[:5])}{' ...' if len(v) > 5 else ''}"
                    for label, v in (("missing", missing), ("unexpected", unexpected)) if v and strict]
        problems += [f"{n}: shape {reader.archive.by_name[n].shape} in the archive, {tuple(state[m].shape)} in the model"
                     for n, m in pairs.items() if tuple(reader.archive.by_name[n].shape) != tuple(state[m].shape)]
        if problems:
            raise RuntimeError(f"{path}: cannot load into {type(model).__name__}: " + "; ".join(problems))
        with torch.no_grad():
            for name, target in pairs.items():
                state[target].copy_(to_tensor(reader[name]).to(device))
    return missing, unexpected
