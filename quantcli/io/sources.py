"""Tensor sources: .npy, .npz, .safetensors, a folder, a sharded index, globs.

Everything is opened and validated up front (headers only), and each tensor is read when its
`load()` is called, so memory follows the largest tensor, not the model. Nothing is unpickled:
.npy headers are parsed with numpy's format module and object dtypes are refused.
"""

from __future__ import annotations

import functools
import glob
import json
import math
import os
import struct
import zipfile
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import InputError
from .safetensors import DTYPES, FLOAT_CODES, SafetensorsFile, dtype_code, shape_problem, strict_json

INDEX_SUFFIX = ".safetensors.index.json"
CONFIG_NAME = "config.json"  # a model folder's configuration (Hugging Face's name), read as evidence only
CONFIG_MAX_BYTES = 1 << 20


@dataclass(frozen=True)
class TensorRef:
    """A tensor that can be loaded: name, dtype (the safetensors name: F32, BF16, I64, ...), shape,
    where it lives."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    path: str
    loader: Callable[[], np.ndarray] = field(repr=False, compare=False)
    named_file: bool = False  # a .npy holds one array the user named: quantized whatever its rank

    @property
    def np_dtype(self) -> np.dtype:
        return DTYPES[self.dtype]

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.np_dtype.itemsize

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_CODES

    def load(self) -> np.ndarray:
        return self.loader()


def _npy_header(fp: Any, path: str, member: str | None = None) -> tuple[np.dtype, tuple[int, ...], bool]:
    tensor = member
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise InputError(f"unsupported .npy version {version}", path=path, tensor=tensor)
    except InputError:
        raise
    except Exception as e:  # numpy raises ValueError/SyntaxError/... on a malformed header
        raise InputError(f"malformed .npy header: {e}", path=path, tensor=tensor) from None
    if dtype.hasobject:
        raise InputError("holds Python objects (would need pickle); refused", path=path, tensor=tensor)
    try:
        dtype_code(dtype)
    except InputError:
        raise InputError(f"unsupported dtype {dtype}", path=path, tensor=tensor) from None
    problem = shape_problem(shape)
    if problem:
        raise InputError(f"malformed .npy header: {problem}", path=path, tensor=tensor)
    return dtype, tuple(int(d) for d in shape), bool(fortran)


def _read_npy_body(fp: Any, dtype: np.dtype, shape: tuple[int, ...], fortran: bool, path: str,
                   tensor: str | None) -> np.ndarray:
    count = math.prod(shape)
    out = np.empty(count, dtype=dtype)
    raw = out.view(np.uint8).data if count else memoryview(b"")
    got = 0
    while got < len(raw):
        n = fp.readinto(raw[got:])
        if not n:
            raise InputError(f"truncated: {got} of {len(raw)} data bytes", path=path, tensor=tensor)
        got += n
    out = out.reshape(shape[::-1]).T if fortran else out.reshape(shape)
    out = np.ascontiguousarray(out).reshape(shape)  # a 0-d array stays 0-d
    if out.dtype.byteorder == ">":
        out = out.astype(out.dtype.newbyteorder("<"))
    return out


def _npy_refs(path: str) -> list[TensorRef]:
    with open(path, "rb") as fp:
        dtype, shape, fortran = _npy_header(fp, path)
        data_start = fp.tell()
    need = data_start + math.prod(shape) * dtype.itemsize
    size = os.path.getsize(path)
    if size < need:
        raise InputError(f"truncated: {size} bytes, header promises {need}", path=path)
    name = os.path.splitext(os.path.basename(path))[0]

    def load() -> np.ndarray:
        with open(path, "rb") as fp:
            fp.seek(data_start)
            return _read_npy_body(fp, dtype, shape, fortran, path, None)

    return [TensorRef(name, dtype_code(dtype), shape, path, load, named_file=True)]


# What Python's zipfile raises on a damaged archive (a central directory with bad lengths can
# surface as IndexError or struct.error rather than BadZipFile; an unknown compression method
# number in a member header raises NotImplementedError).
_ZIP_ERRORS = (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, IndexError, KeyError,
               struct.error)


def _npz_refs(path: str) -> list[TensorRef]:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):  # what numpy requires too: no data before the zip
        raise InputError("not a valid .npz archive: it does not start with a zip header", path=path)
    try:
        zf = zipfile.ZipFile(path)
        members = [m for m in zf.infolist() if not m.is_dir()]
    except _ZIP_ERRORS as e:
        raise InputError(f"not a valid .npz archive: {e}", path=path) from None
    refs = []
    for info in members:
        name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        if info.flag_bits & 0x1:  # zipfile would raise RuntimeError asking for a password
            raise InputError("member is encrypted; .npz members must be plain", path=path, tensor=name)
        try:
            with zf.open(info) as fp:
                dtype, shape, fortran = _npy_header(fp, path, name)
                data_start = fp.tell()
        except InputError:
            raise
        except _ZIP_ERRORS as e:
            raise InputError(f"corrupt member: {e}", path=path, tensor=name) from None
        _check_member_size(info, data_start + math.prod(shape) * dtype.itemsize, path, name)

        def load(info: zipfile.ZipInfo = info, name: str = name, dtype: np.dtype = dtype,
                 shape: tuple[int, ...] = shape, fortran: bool = fortran) -> np.ndarray:
            try:
                with zipfile.ZipFile(path) as z, z.open(info) as fp:
                    _npy_header(fp, path, name)
                    return _read_npy_body(fp, dtype, shape, fortran, path, name)
            except InputError:
                raise
            except _ZIP_ERRORS as e:
                raise InputError(f"corrupt member: {e}", path=path, tensor=name) from None

        refs.append(TensorRef(name, dtype_code(dtype), shape, path, load))
    zf.close()
    return refs


# Deflate cannot expand data more than 1032-fold; a member claiming more is a zip bomb or a lie.
MAX_DEFLATE_RATIO = 1032


def _check_member_size(info: zipfile.ZipInfo, need: int, path: str, name: str) -> None:
    """An .npz member's declared sizes must match its .npy header before anything is allocated:
    the uncompressed size exactly, the compressed size within the file and a ratio deflate can reach."""
    if info.file_size != need:
        raise InputError(f"member declares {info.file_size} bytes, its .npy header needs {need}",
                         path=path, tensor=name)
    if info.compress_size > os.path.getsize(path):
        raise InputError(f"member declares {info.compress_size} compressed bytes, more than the file holds",
                         path=path, tensor=name)
    limit = info.compress_size if info.compress_type == zipfile.ZIP_STORED else (
        info.compress_size * MAX_DEFLATE_RATIO + 1024)
    if info.file_size > limit:
        raise InputError(f"member claims {info.file_size} bytes from {info.compress_size} compressed "
                         f"(a zip bomb or a corrupt archive)", path=path, tensor=name)


class Sources:
    """The tensors of one or more inputs, in input order; a context manager that closes files."""

    def __init__(self, paths: list[str]):
        self.refs: list[TensorRef] = []
        self.files: list[str] = []
        self._open: list[SafetensorsFile] = []
        try:
            for path in _expand(paths):
                self._add(path)
            self._check_unique()
        except BaseException:
            self.close()
            raise

    @property
    def input_bytes(self) -> int:
        """Bytes of the input files (all of each file, headers included)."""
        return sum(os.path.getsize(p) for p in self.files)

    @property
    def archives(self) -> list[str]:
        """Inputs that are quant archives (their arrays are codes and scales, not weights)."""
        return [st.path for st in self._open if st.metadata.get("quant.format") == "quant-archive"]

    def _safetensors(self, path: str) -> SafetensorsFile:
        st = SafetensorsFile(path)
        self._open.append(st)
        self.files.append(path)
        return st

    def _add(self, path: str) -> None:
        if os.path.isdir(path):
            index = [f for f in sorted(os.listdir(path)) if f.endswith(INDEX_SUFFIX)]
            if len(index) > 1:
                raise InputError(f"holds {len(index)} index files; name one", path=path)
            if index:
                self._add_index(os.path.join(path, index[0]))
                return
            files = sorted(glob.glob(os.path.join(glob.escape(path), "*.safetensors")))
            if not files:
                raise InputError("folder holds no .safetensors files", path=path)
            for f in files:
                self._add(f)
            return
        if not os.path.exists(path):
            raise InputError("no such file", path=path)
        lower = path.lower()
        if lower.endswith(".index.json"):
            self._add_index(path)
        elif lower.endswith(".npy"):
            self.refs.extend(_npy_refs(path))
            self.files.append(path)
        elif lower.endswith(".npz"):
            self.refs.extend(_npz_refs(path))
            self.files.append(path)
        elif lower.endswith(".safetensors"):
            st = self._safetensors(path)
            self.refs.extend(self._st_refs(st, None))
        else:
            raise InputError("unknown file type: expected .npy, .npz, .safetensors, a folder or an index.json",
                             path=path)

    @staticmethod
    def _st_refs(st: SafetensorsFile, names: list[str] | None) -> list[TensorRef]:
        chosen = names if names is not None else sorted(st.entries, key=lambda n: st.entries[n].start)
        refs = []
        for name in chosen:
            e = st.entries[name]
            refs.append(TensorRef(name, e.dtype, e.shape, st.path, functools.partial(st.read, name)))
        return refs

    def _add_index(self, path: str) -> None:
        """A sharded checkpoint: each tensor comes from the shard its weight_map names, nothing else."""
        try:
            with open(path, "rb") as f:
                doc = strict_json(f.read().decode("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise InputError(f"cannot read index: {e}", path=path) from None
        weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
        if not isinstance(weight_map, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
            raise InputError("index has no weight_map of tensor names to shard files", path=path)
        folder = os.path.dirname(os.path.abspath(path))
        by_shard: dict[str, list[str]] = {}
        for name, shard in weight_map.items():
            if os.path.basename(shard) != shard:
                raise InputError(f"shard {shard!r} is not a file name in the index's folder", path=path,
                                 tensor=name)
            by_shard.setdefault(shard, []).append(name)
        for shard in sorted(by_shard):
            st = self._safetensors(os.path.join(folder, shard))
            missing = [n for n in by_shard[shard] if n not in st.entries]
            if missing:
                raise InputError(f"the index names it, but shard {shard} does not hold it", path=path,
                                 tensor=missing[0])
            names = sorted(by_shard[shard], key=lambda n: st.entries[n].start)
            self.refs.extend(self._st_refs(st, names))

    def _check_unique(self) -> None:
        seen: dict[str, str] = {}
        for ref in self.refs:
            if ref.name in seen:
                raise InputError(f"appears in two inputs ({seen[ref.name]} and {ref.path})", tensor=ref.name)
            seen[ref.name] = ref.path

    def close(self) -> None:
        for st in self._open:
            st.close()
        self._open.clear()

    def __enter__(self) -> "Sources":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _expand(paths: list[str]) -> list[str]:
    """Expand globs the shell did not (quoted patterns); a pattern matching nothing is an error."""
    out: list[str] = []
    for p in paths:
        if not os.path.exists(p) and glob.has_magic(p):
            matches = sorted(glob.glob(p))
            if not matches:
                raise InputError("pattern matches no file", path=p)
            out.extend(matches)
        else:
            out.append(p)
    return out


def model_configs(files: list[str]) -> list[dict[str, Any] | None]:
    """The CONFIG_NAME file in the folder of each input file, one entry per folder (input order):
    its JSON object, or None where there is none, or it is over CONFIG_MAX_BYTES or not a JSON
    object. Evidence for the planner's default (docs/PLANNER.md), never needed: a missing or broken
    config changes no error and stops nothing."""
    out: list[dict[str, Any] | None] = []
    for folder in dict.fromkeys(os.path.dirname(os.path.abspath(f)) for f in files):
        path = os.path.join(folder, CONFIG_NAME)
        if not os.path.isfile(path):  # none, a folder, or a pipe or device that could block or never end
            out.append(None)
            continue
        try:
            with open(path, "rb") as fp:
                raw = fp.read(CONFIG_MAX_BYTES + 1)
            doc = json.loads(raw) if len(raw) <= CONFIG_MAX_BYTES else None
        except (OSError, ValueError, RecursionError):
            doc = None
        out.append(doc if isinstance(doc, dict) else None)
    return out
