"""Writing outputs safely: temp file in the target folder, fsync, rename; never a partial file.

`SafetensorsWriter` streams arrays to a spill file as they are produced (memory stays bounded by
one tensor), then writes the header, which needs every array's size and every tensor's checksum,
and copies the arrays behind it, largest alignment first, so every array in the final file is
aligned to its element size.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import numpy as np

from .errors import ConfigError, WorkError
from .safetensors_io import DTYPES, dtype_code, header_bytes

_COPY_CHUNK = 8 * 1024 * 1024


def _work_error(e: OSError, path: str) -> WorkError:
    if e.errno == errno.ENOSPC:
        return WorkError("disk full while writing; nothing was written", path=path)
    return WorkError(f"cannot write: {e.strerror or e}", path=path)


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _target_mode(path: str) -> int:
    """Keep an existing output's permissions; a new file gets 0666 less the umask (mkstemp's 0600
    would surprise anyone sharing the result)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


@contextmanager
def atomic_output(path: str) -> Iterator[BinaryIO]:
    """Yield a file object; on success it replaces `path` atomically, on any failure it vanishes."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    except FileNotFoundError:
        raise WorkError("the output folder does not exist", path=path) from None
    except OSError as e:
        raise _work_error(e, path) from None
    f = os.fdopen(fd, "wb")
    try:
        try:
            os.fchmod(fd, _target_mode(path))
            yield f
            f.flush()
            os.fsync(f.fileno())
            f.close()
            os.replace(tmp, path)
        except OSError as e:
            raise _work_error(e, path) from None
        _fsync_dir(folder)
    except BaseException:
        f.close()
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


@dataclass
class _Stored:
    name: str
    code: str
    shape: tuple[int, ...]
    offset: int  # in the spill file
    nbytes: int
    align: int
    order: int
    source: int | None = None  # fd of another file holding the bytes (a worker's spill), else ours


class SafetensorsWriter:
    """Stream arrays into a safetensors file at `path`; `finish(metadata)` publishes it."""

    def __init__(self, path: str):
        self.path = path
        self._arrays: dict[str, _Stored] = {}
        folder = os.path.dirname(os.path.abspath(path))
        try:
            self._spill = tempfile.TemporaryFile(prefix=f".{os.path.basename(path)}.", suffix=".spill",
                                                 dir=folder)
        except FileNotFoundError:
            raise WorkError("the output folder does not exist", path=path) from None
        except OSError as e:
            raise _work_error(e, path) from None
        self._pos = 0

    def add(self, name: str, array: np.ndarray, digest: "hashlib._Hash | None" = None) -> None:
        """Append one array; feed its bytes to `digest` as well when given."""
        if name in self._arrays:
            raise WorkError(f"two arrays would be stored as {name!r}", path=self.path)
        data = np.ascontiguousarray(array)
        if data.dtype.byteorder == ">":
            data = data.astype(data.dtype.newbyteorder("<"))
        raw = memoryview(data.reshape(-1).view(np.uint8)) if data.size else memoryview(b"")
        if digest is not None:
            digest.update(raw)
        try:
            self._spill.write(raw)
        except OSError as e:
            raise _work_error(e, self.path) from None
        code = dtype_code(data.dtype)
        self._arrays[name] = _Stored(name, code, tuple(data.shape), self._pos, data.nbytes,
                                     data.dtype.itemsize, len(self._arrays))
        self._pos += data.nbytes

    def add_spilled(self, name: str, code: str, shape: tuple[int, ...], fd: int, offset: int, nbytes: int) -> None:
        """Take an array already written to another open file (a worker process's spill):
        only where it is, so the bytes are copied once, in the kernel, when the file is published."""
        if name in self._arrays:
            raise WorkError(f"two arrays would be stored as {name!r}", path=self.path)
        self._arrays[name] = _Stored(name, code, tuple(shape), offset, nbytes, DTYPES[code].itemsize,
                                     len(self._arrays), fd)
        self._pos += nbytes

    def finish(self, metadata: dict[str, str] | None = None, header_size: int | None = None) -> int:
        """Write header + arrays to the final file atomically; returns the file size.
        `header_size` pads the header to exactly that many bytes (see `header_bytes`)."""
        order = sorted(self._arrays.values(), key=lambda s: (-s.align, s.order))
        head = header_bytes([(s.name, s.code, s.shape, s.nbytes) for s in order], metadata, header_size)
        try:
            with atomic_output(self.path) as out:
                out.write(head)
                out.flush()
                self._spill.flush()
                for s in order:
                    self._copy(s.offset, s.nbytes, out, s.source)
        finally:
            self.close()
        return len(head) + self._pos

    def _copy(self, offset: int, count: int, out: BinaryIO, source: int | None = None) -> None:
        """Spill bytes [offset, offset+count) to the end of `out`: in the kernel where it can
        (copy_file_range, no trip through Python), else by reading and writing chunks."""
        src, dst = (self._spill.fileno() if source is None else source), out.fileno()
        if hasattr(os, "copy_file_range"):
            try:
                while count:
                    n = os.copy_file_range(src, dst, count, offset)
                    if n == 0:
                        raise WorkError("spill file was truncated", path=self.path)
                    offset += n
                    count -= n
                return
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
        while count:
            chunk = os.pread(src, min(count, _COPY_CHUNK), offset)
            if not chunk:
                raise WorkError("spill file was truncated", path=self.path)
            view = memoryview(chunk)
            while view:
                view = view[os.write(dst, view):]
            offset += len(chunk)
            count -= len(chunk)

    def close(self) -> None:
        self._spill.close()


def predict_header(arrays: list[tuple[str, np.dtype, tuple[int, ...]]], metadata: dict[str, str] | None) -> bytes:
    """The header `SafetensorsWriter.finish` writes for arrays added in this order (same ordering
    rule: largest alignment first, then insertion order), computed without any data."""
    rows = []
    for i, (name, dtype, shape) in enumerate(arrays):
        dt = np.dtype(dtype)
        rows.append((-dt.itemsize, i, name, dtype_code(dt), tuple(shape),
                     int(np.prod(shape, dtype=np.int64)) * dt.itemsize))
    rows.sort(key=lambda r: (r[0], r[1]))
    return header_bytes([r[2:] for r in rows], metadata)


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output(output: str, inputs: list[str], suffix: str | None = None) -> None:
    """Refuse, before any work: an output that is an input, a folder, in a missing folder, or
    (with `suffix`) of another file type."""
    for src in inputs:
        if _same_file(output, src):
            raise ConfigError("the output is one of the inputs; inputs are never overwritten", path=output)
    if os.path.isdir(output):
        raise ConfigError("the output is a folder; name a file", path=output)
    if not os.path.isdir(os.path.dirname(os.path.abspath(output))):
        raise ConfigError("the output's folder does not exist", path=output)
    if suffix is not None and not output.lower().endswith(suffix):
        raise ConfigError(f"the output must end in {suffix}", path=output)
