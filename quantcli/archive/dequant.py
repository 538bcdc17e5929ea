"""dequantize: decode an archive back into weight files: one .safetensors, .npz or .npy, or a
folder of safetensors shards with a Hugging Face index."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import zipfile
from decimal import Decimal
from typing import Callable

import numpy as np

from .container import Archive, open_archive
from .original import restored_problem
from ..methods import KEEP
from ..errors import ArchiveError, ConfigError, InputError
from ..io.output import WEIGHT_FILE, FolderOutput, SafetensorsWriter, atomic_output, check_output
from ..reports import DequantizeReport
from ..io.safetensors import DTYPES, FLOAT_CODES

# progress(done_bytes, total_bytes, tensor_name)
Progress = Callable[[int, int, str], None]

OUTPUT_DTYPES = {"original": None, "float32": "F32", "float16": "F16", "bfloat16": "BF16"}
DTYPE_NAMES = {code: name for name, code in OUTPUT_DTYPES.items() if code}


MAX_SIZE = 2**63 - 1  # bytes: what a file offset can hold

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20,
          "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
    """'2GB' -> 2_000_000_000, '500MiB' -> 524_288_000, '1000' -> 1000 (decimal units, as Hugging Face)."""
    m = re.fullmatch(r"\s*([0-9]{1,30}(?:\.[0-9]{0,30})?|\.[0-9]{1,30})\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).upper() if m else ""
    if not m or unit not in _UNITS:
        raise ConfigError(f"--shard-size {text!r} is not a size like 2GB, 500MB or 1GiB")
    size = int(Decimal(m.group(1)) * _UNITS[unit])  # exact: no float rounding, no overflow
    if size < 1:
        raise ConfigError(f"--shard-size must be positive, got {text!r}")
    if size > MAX_SIZE:
        raise ConfigError(f"--shard-size {text!r} is more than {MAX_SIZE} bytes")
    return size


def _shard_groups(sizes: list[int], shard_size: int) -> list[list[int]]:
    """Tensor indices per shard, in order; a new shard starts when the next tensor would not fit
    (a tensor larger than the shard size gets a shard of its own)."""
    groups: list[list[int]] = [[]]
    used = 0
    for i, n in enumerate(sizes):
        if groups[-1] and used + n > shard_size:
            groups.append([])
            used = 0
        groups[-1].append(i)
        used += n
    return groups


def npz_member(name: str, path: str | None = None) -> str:
    """The zip member an .npz output stores tensor `name` in (`NAME.npy`, as numpy names them), or
    InputError when no member can hold that name faithfully: zip cuts names at NUL and cannot
    encode lone surrogates, and absolute or `..` paths are unsafe where the file is unpacked."""
    member = f"{name}.npy"
    problem = None
    try:
        member.encode("utf-8")
    except UnicodeEncodeError:
        problem = "holds a lone surrogate, which a zip member name cannot encode"
    if problem is None and "\0" in name:
        problem = "holds a NUL character, where zip member names end"
    elif problem is None and (member.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", member)):
        problem = "is an absolute or '..' path, unsafe as a zip member"
    elif problem is None and zipfile.ZipInfo(member).filename != member:
        problem = "is changed by zip's member-name rules"
    if problem:
        raise InputError(f"cannot be written to .npz: its name {problem}; write .safetensors instead",
                         path=path, tensor=name)
    return member


def narrowed(path: str, name: str, source: np.ndarray, out: np.ndarray, target: str,
             original: bool = False) -> np.ndarray:
    """`out` is `source` cast to `target`; a finite value that became infinite means the weights
    do not fit the narrower dtype: refuse (naming the file and tensor) rather than write inf silently.
    `original`: `target` is the dtype the tensor was quantized from, whose finite range held every
    source value, so a decoded value past it is quantization error: it saturates at the range's
    end (which only lowers the error) instead."""
    if out.dtype != source.dtype and target in FLOAT_CODES:  # bfloat16 (ml_dtypes) has kind "V", not "f"
        overflow = np.count_nonzero(np.isinf(out) & np.isfinite(source))
        if overflow and original:
            limit = float(np.finfo(out.dtype).max)
            return np.clip(source, -limit, limit).astype(out.dtype)
        if overflow:
            peak = float(np.max(np.abs(source[np.isfinite(source)])))
            limit = float(np.finfo(out.dtype).max)
            raise InputError(f"{overflow} values exceed {DTYPE_NAMES.get(target, target)}'s range (largest magnitude "
                             f"{peak:.6g} > {limit:.6g}); use a wider dtype or the original", path=path, tensor=name)
    return out


def model_folder_files(folder: str) -> list[str]:
    """The files of a model folder other than weights (configs, tokenizer, `1_Pooling/...`), as
    paths relative to it, sorted; hidden files and folders are skipped, symlinks are followed."""
    if not os.path.isdir(folder):
        raise ConfigError("--like needs the original model's folder", path=folder)
    found = []
    for base, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in files:
            if not f.startswith(".") and not WEIGHT_FILE.fullmatch(f):
                found.append(os.path.relpath(os.path.join(base, f), folder))
    return sorted(found)


def dequantize_file(archive_path: str, output: str, dtype: str = "original",
                    progress: Progress | None = None, shard_size: str | int | None = None,
                    like: str | None = None) -> DequantizeReport:
    """Reconstruct every tensor of an archive into .safetensors, .npz or .npy (written atomically),
    or, when `output` is a folder or `shard_size` is given, into safetensors shards plus a
    `model.safetensors.index.json` in the Hugging Face layout (published as a whole).

    Quantized tensors come back in their original dtype (or `dtype`); kept tensors come back as stored,
    whatever `dtype` says (bit for bit).
    .npy and .npz cannot hold bfloat16, so bfloat16 tensors are written there as float32.
    Values beyond the range of a narrower `dtype` (float16, bfloat16) are refused, never written as inf;
    in the tensor's original dtype they are quantization error and saturate at the range's end.
    An archive that records its input file (every tensor stored exactly: archive/original.py) gives
    that file back byte for byte to an output of its format with `dtype` "original", or refuses
    (nothing written) when the bytes would differ from the recorded sha256.
    With `like` (the original model's folder) and a folder output, the model folder's other files
    (configs, tokenizer, sub-folders: `model_folder_files`) are copied beside the weights, in the
    same all-or-nothing publication, so the folder loads with `from_pretrained`.
    """
    if dtype not in OUTPUT_DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(OUTPUT_DTYPES)}, got {dtype!r}")
    start = time.perf_counter()
    if shard_size is not None and os.path.splitext(output)[1].lower() in (".safetensors", ".npz", ".npy"):
        raise ConfigError("--shard-size writes a folder of shards; name a folder, not a file", path=output)
    to_folder = shard_size is not None or os.path.isdir(output) or output.endswith(os.sep)
    kind = ".safetensors" if to_folder else os.path.splitext(output)[1].lower()
    if kind not in (".safetensors", ".npz", ".npy"):
        raise ConfigError("the output must end in .safetensors, .npz or .npy, or be a folder", path=output)
    limit = parse_size(shard_size) if isinstance(shard_size, str) else (shard_size or 5 * 10**9)
    extra = None
    if like is not None:
        if not to_folder:
            raise ConfigError("--like copies a model folder's files: write to a folder (end the output with /)",
                              path=output)
        extra = model_folder_files(like)
    with open_archive(archive_path) as archive:
        if not to_folder:
            check_output(output, [archive_path])
        if kind == ".npy" and len(archive.tensors) != 1:
            raise ConfigError(f"a .npy file holds one tensor, the archive has {len(archive.tensors)}; "
                              "write .safetensors or .npz", path=output)
        members = [npz_member(t.name, archive_path) for t in archive.tensors] if kind == ".npz" and not to_folder else []
        targets: list[str] = []
        for t in archive.tensors:
            wanted = OUTPUT_DTYPES[dtype]
            target = wanted if t.dtype in FLOAT_CODES and wanted and t.method != KEEP else t.dtype  # kept: as stored
            targets.append("F32" if kind != ".safetensors" and target == "BF16" else target)
        total = sum(t.original_nbytes for t in archive.tensors)
        written: list[tuple[str, str, tuple[int, ...]]] = []
        done = 0

        def values(i: int) -> np.ndarray:
            nonlocal done
            t = archive.tensors[i]
            decoded = archive.decode(t)
            with np.errstate(over="ignore"):
                out = decoded.astype(DTYPES[targets[i]], copy=False)
            out = narrowed(archive_path, t.name, decoded, out, targets[i], original=targets[i] == t.dtype)
            written.append((t.name, targets[i], t.shape))
            done += t.original_nbytes
            if progress:
                progress(done, total, t.name)
            return out

        lay = archive.original
        restore = lay is not None and not to_folder and dtype == "original" and kind == f".{lay.format}"
        if restore:
            assert lay is not None
            with atomic_output(output) as f:  # the input file, byte for byte, or nothing
                digest, size = hashlib.sha256(lay.header), len(lay.header)
                f.write(lay.header)
                for i in range(len(archive.tensors)):
                    piece = lay.tensor_bytes(values(i))
                    f.write(piece)
                    digest.update(piece)
                    size += piece.nbytes
                if restored_problem(lay, digest, size):
                    raise ArchiveError(restored_problem(lay, digest, size), path=archive_path)
        elif to_folder:
            size = _write_shards(archive, archive_path, output, targets, limit, values,
                                 {name: os.path.join(like, name) for name in extra or []} if like else {})
        elif kind == ".safetensors":
            writer = SafetensorsWriter(output)
            try:
                for i, t in enumerate(archive.tensors):
                    writer.add(t.name, values(i))
                size = writer.finish({"format": "pt"})
            except BaseException:
                writer.close()
                raise
        else:
            with atomic_output(output) as f:
                if kind == ".npy":
                    np.lib.format.write_array(f, values(0), allow_pickle=False)
                else:
                    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                        for i, member in enumerate(members):
                            info = zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0))
                            with zf.open(info, "w", force_zip64=True) as out:
                                np.lib.format.write_array(out, values(i), allow_pickle=False)
            size = os.path.getsize(output)
    return DequantizeReport(output, archive_path, written, size, time.perf_counter() - start, extra,
                            lay.sha256 if restore and lay else None)


def _write_shards(archive: Archive, archive_path: str, folder: str, targets: list[str], limit: int,
                  values: Callable[[int], np.ndarray], copies: dict[str, str]) -> int:
    """Shards `model-0000i-of-0000N.safetensors` + `model.safetensors.index.json` (or a single
    `model.safetensors` when everything fits in one shard), and `copies` ({name: source file}),
    published as a whole (`FolderOutput`): a failed run leaves the folder as it was, a finished
    one leaves no file of an older output."""
    sizes = [t.size * DTYPES[c].itemsize for t, c in zip(archive.tensors, targets)]
    groups = _shard_groups(sizes, limit)
    names = (["model.safetensors"] if len(groups) == 1 else
             [f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))])
    files = names + (["model.safetensors.index.json"] if len(groups) > 1 else [])
    out = FolderOutput(folder, files + list(copies), [archive_path, *copies.values()])
    total = 0
    try:
        for name, source in copies.items():
            try:
                shutil.copyfile(source, out.path(name))
            except OSError as e:
                raise InputError(f"cannot copy {name}: {e.strerror or e}", path=source) from None
        weight_map: dict[str, str] = {}
        for name, group in zip(names, groups):
            writer = SafetensorsWriter(out.path(name))
            try:
                for i in group:
                    writer.add(archive.tensors[i].name, values(i))
                    weight_map[archive.tensors[i].name] = name
                total += writer.finish({"format": "pt"})
            except BaseException:
                writer.close()
                raise
        if len(groups) > 1:
            index = {"metadata": {"total_size": sum(sizes)}, "weight_map": dict(sorted(weight_map.items()))}
            with atomic_output(out.path("model.safetensors.index.json")) as f:
                f.write((json.dumps(index, indent=2) + "\n").encode("utf-8"))
        out.publish()
    except BaseException:
        out.abort()
        raise
    return total
