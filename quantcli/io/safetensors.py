"""The safetensors container, read and written by hand so every byte is validated and nothing
is loaded before it is asked for.

Layout (the public safetensors format): an 8-byte little-endian header length N, N bytes of JSON
header, then the data buffer. The header maps tensor names to {dtype, shape, data_offsets: [begin,
end)} relative to the buffer, plus an optional "__metadata__" str -> str map. The buffer has no holes
and no overlaps. Used for input weights, for archives and for dequantized outputs.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterator, Mapping

import numpy as np

from ..errors import InputError

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the reference implementation's limit too
MAX_NDIM = 64  # numpy's own limit
MAX_ELEMENTS = 2**56  # product of the non-zero dims: keeps every byte count far from int64 overflow

class _Dtypes(Mapping[str, np.dtype]):
    """safetensors dtype code -> numpy dtype. The bfloat16 and float8 dtypes come from ml_dtypes,
    whose import costs several times numpy's: it happens on the first lookup of one of them, so
    `quant inspect x.npy` and `--help` never pay for it."""

    PLAIN: dict[str, np.dtype] = {
        "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
        "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
        "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
        "BOOL": np.dtype(bool),
    }
    EXTENDED = {"BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}  # ml_dtypes names

    def __getitem__(self, code: str) -> np.dtype:
        if code in self.PLAIN:
            return self.PLAIN[code]
        if code in self.EXTENDED:
            import ml_dtypes

            return np.dtype(getattr(ml_dtypes, self.EXTENDED[code]))
        raise KeyError(code)

    def __iter__(self) -> Iterator[str]:
        return iter([*self.PLAIN, *self.EXTENDED])

    def __len__(self) -> int:
        return len(self.PLAIN) + len(self.EXTENDED)


DTYPES: Mapping[str, np.dtype] = _Dtypes()
_PLAIN_CODES = {dt: code for code, dt in _Dtypes.PLAIN.items()}
_EXTENDED_CODES = {name: code for code, name in _Dtypes.EXTENDED.items()}  # an ml_dtypes dtype by its name
FLOAT_CODES = frozenset({"F64", "F32", "F16", "BF16"})


def dtype_code(dtype: np.dtype) -> str:
    """The safetensors name of a numpy dtype (big-endian input is named by its value type)."""
    dt = np.dtype(dtype)
    key = dt.newbyteorder("<") if dt.byteorder == ">" else dt
    try:
        return _PLAIN_CODES[key] if key in _PLAIN_CODES else _EXTENDED_CODES[key.name if key.kind == "V" else ""]
    except KeyError:
        raise InputError(f"dtype {dt} has no safetensors equivalent") from None


def shape_problem(shape: Any) -> str | None:
    """Why `shape` (as read from a file) is not a usable array shape, or None when it is.

    Dims must be non-negative ints (not bools), at most MAX_NDIM of them, and the product of the
    non-zero dims at most MAX_ELEMENTS, so sizes computed from a hostile shape never overflow and
    numpy never refuses an empty array with absurd dims.
    """
    if not isinstance(shape, (list, tuple)) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        return f"malformed shape {shape!r}"
    if len(shape) > MAX_NDIM:
        return f"shape has {len(shape)} dimensions, more than {MAX_NDIM}"
    if math.prod(d for d in shape if d) > MAX_ELEMENTS:
        return f"shape {list(shape)} is too large (its non-zero dims hold more than {MAX_ELEMENTS} elements)"
    return None


def header_length_problem(n: int) -> str | None:
    """Why a header of `n` bytes (length prefix excluded) is refused, or None: the one limit the
    reader enforces and the writer checks before writing."""
    if n > MAX_HEADER_BYTES:
        return f"header length {n} exceeds {MAX_HEADER_BYTES} (too many or too long tensor names)"
    return None


def name_problem(name: Any) -> str | None:
    """Why `name` cannot be a tensor name or metadata string in a file, or None: it must be a
    string that UTF-8 can encode (a lone surrogate, as from an undecodable file name, cannot be)."""
    if not isinstance(name, str):
        return f"name {name!r} is not a string"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return f"name {name!r} is not valid Unicode (it holds a lone surrogate); safetensors names are UTF-8"
    return None


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def strict_json(text: str | bytes) -> Any:
    """json.loads for untrusted text: duplicate keys and deep nesting are ValueErrors too."""
    try:
        return json.loads(text, object_pairs_hook=_unique_pairs)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


MAX_JSON_INT = 2**63  # integers beyond 64 bits are not numbers other JSON readers (or a float) hold


def json_number_problem(doc: Any) -> str | None:
    """Where a parsed JSON value holds a number JSON cannot carry back out: NaN and +-Infinity
    (json.loads accepts them, json.dumps refuses them) or an integer of 64 bits or more (10**400
    is no float). None when every number is plain; the walk is iterative (depth is bounded by
    strict_json, not by the stack)."""
    stack: list[tuple[str, Any]] = [("", doc)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            return f"{where} is {value}, a number JSON cannot hold"
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= MAX_JSON_INT:
            return f"{where} is an integer of {value.bit_length()} bits, beyond 64"
    return None


@dataclass(frozen=True)
class Entry:
    """One stored array: its dtype, shape and absolute byte range in the file."""

    name: str
    dtype: str  # the safetensors name (F32, BF16, ...)
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def np_dtype(self) -> np.dtype:
        return DTYPES[self.dtype]

    @property
    def nbytes(self) -> int:
        return self.end - self.start


Fail = Callable[..., Exception]  # fail(message, tensor=None): the error to raise, naming the file


def parse_header(raw: bytes, size: int, fail: Fail) -> tuple[dict[str, Entry], dict[str, str]]:
    """Validate the JSON header `raw` of a `size`-byte file (length prefix and `raw` included):
    every entry's dtype, shape and offsets, a buffer without holes, overlaps or trailing bytes.
    The one parser for files on disk and for the original header an archive records."""
    try:
        header = strict_json(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise fail(f"malformed safetensors header: {e}") from None
    if not isinstance(header, dict):
        raise fail("malformed safetensors header: not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise fail("malformed safetensors header: __metadata__ must map strings to strings")
    for text in (*header, *metadata, *metadata.values()):
        if name_problem(text):
            raise fail(f"malformed safetensors header: {name_problem(text)}")
    base = 8 + len(raw)
    entries = {name: _entry(name, info, base, size - base, fail) for name, info in header.items()}
    pos = base
    for start, end, name in sorted((e.start, e.end, e.name) for e in entries.values()):
        if start != pos:
            what = "overlaps another tensor" if start < pos else "leaves a hole before it"
            raise fail(f"malformed: data_offsets {what}", name)
        pos = end
    if pos != size:
        raise fail(f"malformed: {size - pos} bytes after the last tensor" if pos < size else "truncated")
    return entries, dict(metadata)


def _entry(name: str, info: Any, base: int, buffer_len: int, fail: Fail) -> Entry:
    if not isinstance(info, dict):
        raise fail("malformed header entry", name)
    code = info.get("dtype")
    if not isinstance(code, str) or code not in DTYPES:
        raise fail(f"unsupported dtype {code!r}", name)
    shape = info.get("shape")
    problem = shape_problem(shape) if isinstance(shape, list) else f"malformed shape {shape!r}"
    if problem:
        raise fail(problem, name)
    offsets = info.get("data_offsets")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        raise fail(f"malformed data_offsets {offsets!r}", name)
    begin, end = offsets
    if not 0 <= begin <= end:
        raise fail(f"malformed data_offsets {offsets!r}", name)
    if end > buffer_len:
        raise fail(f"truncated: data ends at byte {end} of a {buffer_len}-byte buffer", name)
    assert isinstance(shape, list)  # checked above
    expected = math.prod(shape) * DTYPES[code].itemsize
    if end - begin != expected:
        raise fail(f"holds {end - begin} bytes, but shape {shape} of {code} needs {expected}", name)
    return Entry(name, code, tuple(shape), base + begin, base + end)


class SafetensorsFile:
    """A validated, lazily read safetensors file. Use as a context manager or call close()."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)
        try:
            self._f: BinaryIO = open(self.path, "rb")
        except FileNotFoundError:
            raise InputError("no such file", path=self.path) from None
        except IsADirectoryError:
            raise InputError("is a directory, not a safetensors file", path=self.path) from None
        except OSError as e:
            raise InputError(f"cannot open: {e.strerror}", path=self.path) from None
        try:
            self.entries, self.metadata, self.header_bytes = self._parse()
        except Exception:
            self._f.close()
            raise

    def _fail(self, message: str, tensor: str | None = None) -> InputError:
        return InputError(message, path=self.path, tensor=tensor)

    def _parse(self) -> tuple[dict[str, Entry], dict[str, str], int]:
        size = os.fstat(self._f.fileno()).st_size
        head = self._f.read(8)
        if len(head) < 8:
            raise self._fail(f"not a safetensors file: {size} bytes, too short for a header")
        n = int.from_bytes(head, "little")
        if header_length_problem(n):
            raise self._fail(f"not a safetensors file: {header_length_problem(n)}")
        if 8 + n > size:
            raise self._fail(f"truncated: header says {n} header bytes, file has {size - 8}")
        entries, metadata = parse_header(self._f.read(n), size, self._fail)
        return entries, metadata, n

    def read(self, name: str) -> np.ndarray:
        """The array, read from disk now (a fresh, writable array)."""
        entry = self.entries[name]
        out = np.empty(entry.shape, dtype=entry.np_dtype)
        view = out.reshape(-1).view(np.uint8).data if out.size else memoryview(b"")
        got = 0
        fd = self._f.fileno()
        while got < entry.nbytes:  # positional reads: threads may read tensors of one file at once
            n = os.preadv(fd, [view[got:got + (1 << 30)]], entry.start + got)
            if n <= 0:
                raise self._fail("truncated while reading", name)
            got += n
        return out

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "SafetensorsFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def header_bytes(layout: list[tuple[str, str, tuple[int, ...], int]], metadata: dict[str, str] | None,
                 size: int | None = None) -> bytes:
    """The 8-byte length plus JSON header for arrays stored back to back in `layout` order.

    Each layout row is (name, dtype code, shape, nbytes). The header is padded with spaces to a
    multiple of 8 bytes so the buffer starts 8-byte aligned. Keys are written sorted, so the
    same arrays give the same bytes. `size` (a multiple of 8, length prefix included) pads it with
    more spaces to exactly that many bytes, so a file's size can be fixed before its metrics are
    known (the safetensors format allows trailing spaces in the header).

    Every limit the reader enforces holds here first, with the same message (`shape_problem`,
    `name_problem`, `header_length_problem`): nothing is written that would then be refused.
    """
    header: dict[str, Any] = {}
    for text in (*(metadata or {}), *(metadata or {}).values()):
        if name_problem(text):
            raise InputError(f"cannot write metadata: {name_problem(text)}")
    if metadata:
        header["__metadata__"] = dict(sorted(metadata.items()))
    pos = 0
    entries = {}
    for name, code, shape, nbytes in layout:
        problem = name_problem(name) or shape_problem(list(shape))
        if problem:
            raise InputError(f"cannot write: {problem}", tensor=name if isinstance(name, str) else None)
        entries[name] = {"dtype": code, "shape": list(shape), "data_offsets": [pos, pos + nbytes]}
        pos += nbytes
    header.update(sorted(entries.items()))
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    raw += b" " * (-(len(raw) + 8) % 8)
    if size is not None:
        if size % 8 or size < 8 + len(raw):
            raise ValueError(f"cannot pad a {8 + len(raw)}-byte header to {size} bytes")
        raw += b" " * (size - 8 - len(raw))
    if header_length_problem(len(raw)):
        raise InputError(f"cannot write: {header_length_problem(len(raw))}")
    return len(raw).to_bytes(8, "little") + raw
