"""The archive: one safetensors file holding every tensor's stored arrays and a JSON manifest.

See docs/FORMAT.md for the complete specification. This module never imports a method's math:
encodings hold logical arrays (codes unpacked); storage.py maps them to the arrays the file stores
(`store`, whose `Stored` is the writer's one input) and back, from each method's declared
`layout`, which is also what validates what it reads.
Checksums are over the stored bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import __version__
from . import original as original_file
from .storage import Stored, check_codecs, logical_arrays, stored_layout
from ..errors import ArchiveError, InputError
from ..methods import METHODS, Encoding, get_method
from ..methods.base import ANY, check_values
from ..io.output import SafetensorsWriter
from ..io.safetensors import DTYPES, FLOAT_CODES, SafetensorsFile, dtype_code, json_number_problem, shape_problem, strict_json

FORMAT = "quant-archive"
SUPPORTED_VERSIONS = (1, 2)
# methods that exist only in format 2 (their archives are always version 2)
KEY_FORMAT, KEY_VERSION, KEY_PRODUCER = "quant.format", "quant.version", "quant.producer"
KEY_MANIFEST, KEY_MANIFEST_SHA = "quant.manifest", "quant.manifest.sha256"


def stored_name(tensor: str, role: str, method: str) -> str:
    """Kept tensors keep their own name; a quantized tensor's arrays are `<tensor>/<role>`."""
    return tensor if get_method(method).kept else f"{tensor}/{role}"


def _json_number(value: float) -> float | str:
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")


@dataclass
class ArchiveTensor:
    """One original tensor as the manifest records it."""

    name: str
    dtype: str  # original dtype, safetensors name
    shape: tuple[int, ...]
    method: str
    params: dict[str, Any]
    arrays: dict[str, str]  # role -> stored array name
    sha256: str
    metrics: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    codecs: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> recorded codec (format 2)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def original_nbytes(self) -> int:
        return self.size * DTYPES[self.dtype].itemsize

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape),
                               "method": self.method, "params": self.params, "arrays": self.arrays,
                               "sha256": self.sha256, "metrics": self.metrics}
        if self.note:
            doc["note"] = self.note
        if self.codecs:
            doc["codecs"] = self.codecs
        return doc


def _layout_params(t: ArchiveTensor) -> dict[str, Any]:
    """The params a tensor's layout is read from: a kept tensor's is its own dtype."""
    return {"dtype": t.dtype} if get_method(t.method).kept else t.params


def tensor_digest(arrays: dict[str, np.ndarray]) -> "hashlib._Hash":
    """SHA-256 over the stored bytes of a tensor's arrays, roles in sorted order."""
    h = hashlib.sha256()
    for role in sorted(arrays):
        a = np.ascontiguousarray(arrays[role])
        h.update(a.reshape(-1).view(np.uint8).data if a.size else b"")
    return h


class ArchiveWriter:
    """Streams encodings into an archive; `finish()` writes the manifest and publishes the file."""

    def __init__(self, path: str):
        self.path = path
        self._out = SafetensorsWriter(path)
        self.tensors: list[ArchiveTensor] = []
        self._names: set[str] = set()

    def _names_for(self, name: str, method: str, roles: list[str]) -> dict[str, str]:
        arrays = {role: stored_name(name, role, method) for role in roles}
        clash = self._names.intersection(arrays.values())
        if clash or name in self._names:
            raise ArchiveError(f"its stored name {sorted(clash or {name})[0]!r} collides with another tensor",
                               tensor=name)
        self._names.update(arrays.values())
        self._names.add(name)
        return arrays

    def _entry(self, name: str, code: str, shape: tuple[int, ...], method: str, params: dict[str, Any],
               arrays: dict[str, str], sha: str, metrics: dict[str, Any] | None, note: str,
               codecs: dict[str, dict[str, Any]]) -> ArchiveTensor:
        clean = {k: _json_number(v) if isinstance(v, float) else v for k, v in (metrics or {}).items()}
        t = ArchiveTensor(name, code, tuple(shape), method, params, arrays, sha, clean, note, codecs)
        self.tensors.append(t)
        return t

    def add(self, name: str, code: str, shape: tuple[int, ...], method: str, params: dict[str, Any],
            stored: Stored, metrics: dict[str, Any] | None = None, note: str = "") -> ArchiveTensor:
        """Add one tensor: its arrays as `storage.store` made them, with their recorded codecs."""
        arrays = self._names_for(name, method, sorted(stored.arrays))
        digest = hashlib.sha256()
        for role in sorted(stored.arrays):
            self._out.add(arrays[role], stored.arrays[role], digest)
        return self._entry(name, code, shape, method, params, arrays, digest.hexdigest(), metrics, note,
                           stored.codecs)

    def add_spilled(self, name: str, code: str, shape: tuple[int, ...], method: str, params: dict[str, Any],
                    pieces: dict[str, tuple[str, tuple[int, ...], int, int]], sha256: str, fd: int,
                    metrics: dict[str, Any] | None = None, note: str = "",
                    codecs: dict[str, dict[str, Any]] | None = None) -> ArchiveTensor:
        """Add one tensor whose stored arrays (`storage.store`'s, in a worker process) are already
        written and hashed into the file open as `fd`: role -> (dtype code, shape, offset, nbytes).
        They are copied where they are, never read back into memory."""
        arrays = self._names_for(name, method, sorted(pieces))
        for role in sorted(pieces):
            dcode, ashape, offset, nbytes = pieces[role]
            self._out.add_spilled(arrays[role], dcode, ashape, fd, offset, nbytes)
        return self._entry(name, code, shape, method, params, arrays, sha256, metrics, note, codecs or {})

    def finish(self, header_size: int | None = None, original: dict[str, Any] | None = None) -> int:
        """Publish the archive; returns its size in bytes. `header_size` pads the header with
        spaces to exactly that many bytes (the planner fixes an archive's size before its metrics exist);
        `original` is the input file's record when every tensor is stored exactly (original.py)."""
        return self._out.finish(manifest_metadata(self.tensors, original), header_size)

    def abort(self) -> None:
        self._out.close()


# safetensors' own `format` key names the framework a file is for ("pt", "tf", "flax", "np", "mlx");
# loaders that check it (transformers' from_pretrained, among others) refuse an archive instead of
# loading its codes and scales as if they were weights.
KEY_SAFETENSORS_FORMAT = "format"
METRIC_DIGITS = 9  # significant digits of a recorded metric: enough to round-trip any float32


def _compact_metric(value: Any) -> Any:
    """A metric as the manifest records it: floats to METRIC_DIGITS significant digits (the data
    measured is float32 or narrower; 17-digit float64 tails made most of a small archive's header)."""
    return float(f"{value:.{METRIC_DIGITS}g}") if isinstance(value, float) else value


def manifest_metadata(tensors: list[ArchiveTensor], original: dict[str, Any] | None = None) -> dict[str, str]:
    """The safetensors metadata of an archive holding `tensors`: format keys, manifest and its checksum."""
    docs = [t.to_json() for t in tensors]
    for doc in docs:
        doc["metrics"] = {k: _compact_metric(v) for k, v in doc["metrics"].items()}
    whole = {"tensors": docs, **({original_file.KEY: original} if original else {})}
    manifest = json.dumps(whole, sort_keys=True, separators=(",", ":"), allow_nan=False)
    version = 2 if any(t.codecs or METHODS[t.method].format_version(t.params) >= 2 for t in tensors) else 1
    return {KEY_SAFETENSORS_FORMAT: FORMAT, KEY_FORMAT: FORMAT, KEY_VERSION: str(version),
            KEY_PRODUCER: f"quantcli {__version__}", KEY_MANIFEST: manifest,
            KEY_MANIFEST_SHA: hashlib.sha256(manifest.encode("utf-8")).hexdigest()}


def is_archive(path: str) -> bool:
    """True when `path` is a safetensors file whose metadata names this archive format."""
    try:
        with SafetensorsFile(path) as st:
            return st.metadata.get(KEY_FORMAT) == FORMAT
    except Exception:
        return False


class Archive:
    """A validated archive, read lazily. Every stored array is checked against its method's layout
    on open; each tensor's checksum is checked when its arrays are read."""

    def __init__(self, path: str):
        self.path = path
        self.file = SafetensorsFile(path)
        try:
            self.tensors = self._validate()
        except BaseException:
            self.file.close()
            raise
        self.by_name = {t.name: t for t in self.tensors}

    def _fail(self, message: str, tensor: str | None = None) -> ArchiveError:
        return ArchiveError(message, path=self.path, tensor=tensor)

    def _validate(self) -> list[ArchiveTensor]:
        meta = self.file.metadata
        if meta.get(KEY_FORMAT) != FORMAT:
            raise self._fail(f"not a quant archive (no {KEY_FORMAT}={FORMAT} in its metadata)")
        version = meta.get(KEY_VERSION, "")
        self.version = int(version) if version in {str(v) for v in SUPPORTED_VERSIONS} else 0
        if version not in {str(v) for v in SUPPORTED_VERSIONS}:
            raise self._fail(f"archive format version {version!r} is not supported by quantcli {__version__} "
                             f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS))})")
        raw = meta.get(KEY_MANIFEST)
        if raw is None:
            raise self._fail("archive has no manifest")
        if hashlib.sha256(raw.encode("utf-8")).hexdigest() != meta.get(KEY_MANIFEST_SHA):
            raise self._fail("corrupt: the manifest does not match its checksum")
        try:
            doc = strict_json(raw)
        except ValueError as e:
            raise self._fail(f"malformed manifest: {e}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("tensors"), list):
            raise self._fail("malformed manifest: no tensor list")
        tensors = [self._tensor(t) for t in doc["tensors"]]
        names = [t.name for t in tensors]
        if len(set(names)) != len(names):
            raise self._fail("malformed manifest: a tensor is listed twice")
        used = [s for t in tensors for s in t.arrays.values()]
        if len(set(used)) != len(used):
            raise self._fail("malformed manifest: two tensors claim the same stored array")
        extra = set(self.file.entries) - set(used)
        if extra:
            raise self._fail(f"stored array {sorted(extra)[0]!r} belongs to no tensor")
        try:  # the input file's header, when the archive can give the file back byte for byte
            self.original = original_file.layout(doc[original_file.KEY], tensors) if original_file.KEY in doc else None
        except ArchiveError as e:
            raise self._fail(e.message, e.tensor) from None
        return tensors

    def _tensor(self, doc: Any) -> ArchiveTensor:
        if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
            raise self._fail("malformed manifest entry")
        name = doc["name"]
        code, shape, method = doc.get("dtype"), doc.get("shape"), doc.get("method")
        params, arrays, sha = doc.get("params"), doc.get("arrays"), doc.get("sha256")
        if not isinstance(code, str) or code not in DTYPES:
            raise self._fail(f"unknown dtype {code!r}", name)
        problem = shape_problem(shape) if isinstance(shape, list) else f"malformed shape {shape!r}"
        if problem:
            raise self._fail(problem, name)
        if not isinstance(method, str) or method not in METHODS:
            raise self._fail(f"unknown method {method!r} (this quantcli knows {', '.join(sorted(METHODS))})", name)
        if not get_method(method).kept and code not in FLOAT_CODES:
            raise self._fail(f"method {method} needs a float original dtype, not {code}", name)
        if not isinstance(params, dict) or not isinstance(arrays, dict) or not isinstance(sha, str):
            raise self._fail("malformed manifest entry", name)
        metrics = doc.get("metrics", {})
        note = doc.get("note", "")
        if not isinstance(metrics, dict) or not isinstance(note, str):
            raise self._fail("malformed manifest entry", name)
        number = json_number_problem(doc)
        if number:
            raise self._fail(f"malformed manifest: {number}", name)
        for key, value in metrics.items():
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) or value in ("inf", "-inf")):
                raise self._fail(f"malformed metric {key!r}: {value!r}", name)
        assert isinstance(shape, list)  # shape_problem checked it
        codecs = doc.get("codecs", {})
        if codecs and self.version < 2:
            raise self._fail("names array codecs, which format version 1 has not", name)
        t = ArchiveTensor(name, code, tuple(shape), method, params, arrays, sha, metrics, note, codecs)
        try:
            check_codecs(method, t.shape, _layout_params(t), codecs)
            expected = stored_layout(method, t.shape, _layout_params(t), codecs)
        except ArchiveError as e:
            raise self._fail(e.message, name) from None
        if set(arrays) != set(expected):
            raise self._fail(f"stores arrays {sorted(arrays)}, method {method} needs {sorted(expected)}", name)
        for role, (dtype, ashape) in expected.items():
            stored = arrays[role]
            if stored != stored_name(name, role, method) or stored not in self.file.entries:
                raise self._fail(f"its {role} array {stored!r} is missing", name)
            entry = self.file.entries[stored]
            if entry.dtype != dtype_code(dtype) or entry.shape != tuple(ashape):
                raise self._fail(f"its {role} array is {entry.dtype}{list(entry.shape)}, expected "
                                 f"{dtype_code(dtype)}{list(ashape)}", name)
        return t

    def stored_nbytes(self, t: ArchiveTensor) -> int:
        return sum(self.file.entries[s].nbytes for s in t.arrays.values())

    def encoding(self, t: ArchiveTensor, verify: bool = True) -> Encoding:
        """The tensor's encoding with logical arrays (codes unpacked); the checksum is checked
        over the stored bytes first, then the values (a self-consistent, re-signed archive is
        still refused): every float array obeys its method's `value_rules` (finite; scales >= 0)."""
        arrays = {role: self.file.read(stored) for role, stored in t.arrays.items()}
        if verify and tensor_digest(arrays).hexdigest() != t.sha256:
            raise self._fail("corrupt: stored bytes do not match their checksum", t.name)
        try:
            logical = logical_arrays(t.method, t.shape, _layout_params(t), arrays, t.codecs)
            check_values(logical, METHODS[t.method].value_rules)
            return Encoding(t.method, t.params, logical)
        except ArchiveError as e:
            raise self._fail(e.message, t.name) from None

    def decode(self, t: ArchiveTensor) -> np.ndarray:
        """Reconstructed values: float32 for quantized tensors, the stored array for kept ones."""
        enc = self.encoding(t)
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused just below, not warned about
                values = METHODS[t.method].decode(enc, t.shape)
        except ArchiveError as e:
            raise self._fail(e.message, t.name) from None
        if ANY in METHODS[t.method].value_rules.values():  # data as stored (keep, lossless): in its own dtype
            if values.dtype != DTYPES[t.dtype]:  # float32 planes under a float16 tensor would overflow to inf
                raise self._fail(f"stores {values.dtype} values for a {t.dtype} tensor", t.name)
        elif not np.isfinite(values).all():  # finite stored values whose grid or scales overflow float32
            bad = values.size - int(np.isfinite(values).sum())
            raise self._fail(f"decodes to {bad} non-finite values: its stored values overflow float32", t.name)
        return values

    def verify(self) -> list[str]:
        """Names of tensors whose stored bytes do not match their checksum."""
        bad = []
        lay = self.original  # the input file's record: its bytes are hashed as dequantize would write them
        restored = hashlib.sha256(lay.header) if lay else None
        size = len(lay.header) if lay else 0
        for t in self.tensors:
            arrays = {role: self.file.read(stored) for role, stored in t.arrays.items()}
            if tensor_digest(arrays).hexdigest() != t.sha256:
                bad.append(t.name)
            else:  # and the values, as dequantize would (codes in range, finite output): ArchiveError
                values = self.decode(t)
                if lay and restored:
                    piece = lay.tensor_bytes(values)
                    restored.update(piece)
                    size += piece.nbytes
        if lay and restored and not bad and original_file.restored_problem(lay, restored, size):
            raise self._fail(original_file.restored_problem(lay, restored, size))
        return bad

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_archive(path: str) -> Archive:
    """Open and validate an archive (raises ArchiveError naming what is wrong)."""
    if not os.path.exists(path):
        raise InputError("no such file", path=path)
    return Archive(path)
