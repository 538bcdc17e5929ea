"""The original file of an archive that stores every tensor exactly (lossless and kept tensors):
its header kept verbatim and its SHA-256, so that `dequantize -o FILE` gives the file back byte for
byte (key order, metadata, padding, the .npy header) and proves it.

The manifest records it as "original": {"format": "safetensors" or "npy", "header": base64 of every
byte before the first tensor's data, "bytes": the file's size, "sha256": its hex digest}. The file
is that header followed by each tensor's bytes in the archive's tensor order, which is the order of
the data in the file (safetensors: `data_offsets`; .npy: its one array, in the byte order and C or
Fortran order its header names). No path is recorded: the archive does not depend on where the
input was.

Every field is validated on open against the archive's tensors (a header that lies about a name,
dtype, shape or offset is refused by every command); the digest is checked by `verify` and by
`dequantize`, which refuses to publish bytes that differ from it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from ..errors import ArchiveError
from ..io.safetensors import DTYPES, dtype_code, header_length_problem, parse_header

KEY = "original"
MAX_HEADER = 16 * 1024 * 1024  # bytes of original header an archive records (base64: 4/3 of it in the manifest)
_HEX = re.compile(r"[0-9a-f]{64}")


class Tensor(Protocol):
    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Layout:
    """A validated record: the header bytes, and how each tensor's values become the file's bytes."""

    format: str
    header: bytes
    nbytes: int
    sha256: str
    byte_dtype: np.dtype  # .npy: the header's dtype (byte order included); safetensors: the tensor's own
    fortran: bool = False

    def tensor_bytes(self, values: np.ndarray) -> memoryview:
        """One tensor's decoded values as the file holds them (a view when they already are)."""
        v = values
        if self.format == "npy":
            v = np.asarray(v.T if self.fortran else v).astype(self.byte_dtype, copy=False)
        v = np.ascontiguousarray(v)
        return v.reshape(-1).view(np.uint8).data if v.size else memoryview(b"")


def record(paths: list[str], exact: bool) -> dict[str, Any] | None:
    """The record for an archive of `paths` whose tensors are all stored exactly (`exact`), or None
    when the file cannot be given back byte for byte: several inputs, an .npz, bytes after a .npy's
    data, or a header beyond MAX_HEADER. Reads the file once for its digest."""
    if not exact or len(paths) != 1:
        return None
    path = paths[0]
    kind = os.path.splitext(path)[1].lower()
    with open(path, "rb") as f:
        if kind == ".safetensors":
            head = f.read(8)
            n = int.from_bytes(head, "little")
            fmt, header_len = "safetensors", 8 + n
        elif kind == ".npy":
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            fmt, header_len = "npy", f.tell()
            if header_len + math.prod(shape) * dtype.itemsize != os.fstat(f.fileno()).st_size:
                return None  # trailing bytes the reader ignores: not part of any tensor
        else:
            return None
        if header_len > MAX_HEADER:
            return None
        f.seek(0)
        header = f.read(header_len)
        digest = hashlib.sha256(header)
        size = len(header)
        while chunk := f.read(1 << 22):
            digest.update(chunk)
            size += len(chunk)
    return {"format": fmt, "header": base64.b64encode(header).decode("ascii"), "bytes": size,
            "sha256": digest.hexdigest()}


def layout(doc: Any, tensors: Sequence[Tensor]) -> Layout:
    """The record `doc` checked against the archive's tensors; ArchiveError (the caller adds the
    file) for anything a restored file could not honour."""
    if not isinstance(doc, dict) or set(doc) != {"format", "header", "bytes", "sha256"}:
        raise ArchiveError("malformed original-file record: needs exactly format, header, bytes and sha256")
    fmt, text, nbytes, sha = doc["format"], doc["header"], doc["bytes"], doc["sha256"]
    if fmt not in ("safetensors", "npy") or not isinstance(nbytes, int) or isinstance(nbytes, bool) \
            or not isinstance(sha, str) or not _HEX.fullmatch(sha) or not isinstance(text, str) \
            or len(text) > MAX_HEADER * 4 // 3 + 4:
        raise ArchiveError("malformed original-file record")
    try:
        header = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise ArchiveError("malformed original-file record: its header is not base64") from None

    def fail(message: str, tensor: str | None = None) -> ArchiveError:
        return ArchiveError(f"the original file's recorded header does not match the archive: {message}",
                            tensor=tensor)

    data = sum(math.prod(t.shape) * DTYPES[t.dtype].itemsize for t in tensors)
    if nbytes != len(header) + data:
        raise fail(f"it records a {nbytes}-byte file, the header and tensors make {len(header) + data}")
    if fmt == "npy":
        return _npy_layout(header, nbytes, sha, tensors, fail)
    n = int.from_bytes(header[:8], "little")
    if len(header) < 8 or 8 + n != len(header) or header_length_problem(n):
        raise fail("its length field does not give its size")
    entries, _ = parse_header(header[8:], nbytes, fail)
    if set(entries) != {t.name for t in tensors}:
        extra = sorted(set(entries) ^ {t.name for t in tensors})[0]
        raise fail("the names differ", extra)
    last = 0
    for t in tensors:
        e = entries[t.name]
        if e.dtype != t.dtype or e.shape != tuple(t.shape):
            raise fail(f"it says {e.dtype}{list(e.shape)}, the archive {t.dtype}{list(t.shape)}", t.name)
        if e.start < last:
            raise fail("its data order is not the archive's tensor order", t.name)
        last = e.start
    return Layout(fmt, header, nbytes, sha, np.dtype("u1"))


def _npy_layout(header: bytes, nbytes: int, sha: str, tensors: Sequence[Tensor], fail: Any) -> Layout:
    if len(tensors) != 1:
        raise fail(f"a .npy file holds one tensor, the archive has {len(tensors)}")
    t = tensors[0]
    f = io.BytesIO(header)
    try:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        code = dtype_code(dtype)
    except Exception as e:  # noqa: BLE001 - numpy raises ValueError/SyntaxError/... on a malformed header
        raise fail(f"malformed .npy header ({type(e).__name__}: {e})", t.name) from None
    if f.tell() != len(header):
        raise fail(".npy header length", t.name)
    if code != t.dtype or tuple(shape) != tuple(t.shape):
        raise fail(f"it says {code}{list(shape)}, the archive {t.dtype}{list(t.shape)}", t.name)
    return Layout("npy", header, nbytes, sha, dtype, bool(fortran))


def restored_problem(lay: Layout, digest: "hashlib._Hash", size: int) -> str:
    """Why `size` bytes hashing to `digest` are not the original file, or ''."""
    if size == lay.nbytes and digest.hexdigest() == lay.sha256:
        return ""
    return (f"the restored bytes ({size}, sha256 {digest.hexdigest()[:16]}...) differ from the original file's "
            f"({lay.nbytes}, sha256 {lay.sha256[:16]}...): a stored tensor or the archive's record of the file "
            f"is forged; nothing written")
