"""Writing outputs safely: temp file in the target folder, fsync, rename; never a partial file.

Temp and spill names carry the writing process's id (`.NAME.PID.XXXX.tmp`), so a later run over
the same output removes what a killed run (SIGKILL, power loss) left behind, and never touches the
files of a process that is still alive (`remove_stale`). A folder output (shards and their index)
is written into a temp folder and published as a whole (`FolderOutput`).

`SafetensorsWriter` streams arrays to a spill file as they are produced (memory stays bounded by
one tensor), then writes the header, which needs every array's size and every tensor's checksum,
and copies the arrays behind it, largest alignment first, so every array in the final file is
aligned to its element size.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import numpy as np

from ..errors import ConfigError, WorkError
from .safetensors import DTYPES, dtype_code, header_bytes
from .signals import held

_COPY_CHUNK = 8 * 1024 * 1024


def _work_error(e: OSError, path: str) -> WorkError:
    if e.errno == errno.ENOSPC:
        return WorkError("disk full while writing; nothing was written", path=path)
    return WorkError(f"cannot write: {e.strerror or e}", path=path)


def _create_error(e: OSError, path: str, folder: str | None = None) -> WorkError:
    """Creating a file in `folder` (default: beside `path`) failed: say whether the folder is missing
    or refuses new files (a folder that exists can still fail with ENOENT: /proc, /sys)."""
    if e.errno == errno.ENOSPC:
        return _work_error(e, path)
    if not os.path.isdir(folder or os.path.dirname(os.path.abspath(path))):
        return WorkError("the output folder does not exist", path=path)
    return WorkError(f"cannot create a file in the output folder ({e.strerror or e})", path=path)


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
        return 0o666 & ~_umask()


def temp_prefix(path: str) -> str:
    """`.NAME.PID.`: the start of every temp and spill file name this process makes for `path`."""
    return f".{os.path.basename(os.path.normpath(path))}.{os.getpid()}."


def _alive(pid: int) -> bool:
    """Whether a process with this id exists (on this machine). Unsure counts as alive."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, owned by someone else
        return True
    return True


def remove_stale(path: str) -> list[str]:
    """Remove the temp and spill files (and temp folders) that dead processes left beside `path`
    (named `.NAME.PID.XXXX.tmp` / `.spill`); those of live processes stay. Returns what went."""
    folder = os.path.dirname(os.path.abspath(os.path.normpath(path)))
    name = re.escape(os.path.basename(os.path.normpath(path)))
    pattern = re.compile(rf"\.{name}\.([0-9]+)\.[A-Za-z0-9_]+\.(?:tmp|spill)")
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for entry in entries:
        m = pattern.fullmatch(entry)
        if m is None or _alive(int(m.group(1))):
            continue
        target = os.path.join(folder, entry)
        try:
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            else:
                os.unlink(target)
            removed.append(target)
        except OSError:
            pass  # not ours to remove after all (permissions): leave it
    return removed


def _mkstemp(path: str, suffix: str) -> tuple[int, str]:
    folder = os.path.dirname(os.path.abspath(path))
    try:
        return tempfile.mkstemp(prefix=temp_prefix(path), suffix=suffix, dir=folder)
    except OSError as e:
        raise _create_error(e, path) from None


@contextmanager
def atomic_output(path: str) -> Iterator[BinaryIO]:
    """Yield a file object; on success it replaces `path` atomically, on any failure (signals
    included, from the moment the temp file exists) it vanishes."""
    folder = os.path.dirname(os.path.abspath(path))
    refuse_special(path)
    remove_stale(path)
    tmp = None
    f = None
    try:
        with held():  # a signal between creating the temp file and owning it would leak it
            fd, tmp = _mkstemp(path, ".tmp")
            f = os.fdopen(fd, "wb")
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
        if f is not None:
            f.close()
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        raise


@dataclass
class _Stored:
    name: str
    dtype: str
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
        remove_stale(path)
        try:
            with held():  # unnamed where the OS allows (O_TMPFILE), else created and unlinked at once
                self._spill = tempfile.TemporaryFile(prefix=temp_prefix(path), suffix=".spill", dir=folder)
        except OSError as e:
            raise _create_error(e, path) from None
        self._pos = 0

    def add(self, name: str, array: np.ndarray, digest: "hashlib._Hash | None" = None) -> None:
        """Append one array; feed its bytes to `digest` as well when given."""
        if name in self._arrays:
            raise WorkError(f"two arrays would be stored as {name!r}", path=self.path)
        data = np.require(array, requirements="C")  # ascontiguousarray would make a 0-d array 1-d
        if data.dtype.byteorder == ">":
            data = data.astype(data.dtype.newbyteorder("<"))
        raw = data.reshape(-1).view(np.uint8).data if data.size else memoryview(b"")
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
        head = header_bytes([(s.name, s.dtype, s.shape, s.nbytes) for s in order], metadata, header_size)
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


def same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def refuse_special(path: str) -> None:
    """An output that exists as a device, pipe or socket (/dev/full, /dev/null) is refused: the
    rename that publishes an output would replace the device node itself (as root) with a file."""
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
        raise ConfigError("the output exists and is not a regular file (a device, pipe or socket); name a file",
                          path=path)


def refuse_inputs(paths: list[str], inputs: list[str]) -> None:
    """No path this run writes, replaces or removes may resolve to an input (symlinks, hard
    links, `d/` vs `d/model.safetensors` all count)."""
    for path in paths:
        for src in inputs:
            if same_file(path, src):
                raise ConfigError("the output is one of the inputs; inputs are never overwritten", path=path)


def check_output(output: str, inputs: list[str], suffix: str | None = None) -> None:
    """Refuse, before any work: an output that is an input, a folder, in a missing folder, or
    (with `suffix`) of another file type."""
    refuse_inputs([output], inputs)
    if os.path.isdir(output):
        raise ConfigError("the output is a folder; name a file", path=output)
    refuse_special(output)
    if not os.path.isdir(os.path.dirname(os.path.abspath(output))):
        raise ConfigError("the output's folder does not exist", path=output)
    if suffix is not None and not output.lower().endswith(suffix):
        raise ConfigError(f"the output must end in {suffix}", path=output)
    if suffix == ".safetensors" and MODEL_FILE.fullmatch(os.path.basename(output)):
        raise ConfigError("an archive under a model file's name would load as a model of random weights in "
                          "frameworks that do not check the format; name it e.g. model.qnt.safetensors", path=output)


# What frameworks load as a model's weights: an archive (the only `.safetensors` output that goes
# through `check_output` with a suffix) must never be written under one of these names.
MODEL_FILE = re.compile(r"(?:model|pytorch_model|diffusion_pytorch_model|adapter_model|consolidated)"
                        r"(?:[-.][0-9]{1,5}(?:-of-[0-9]{1,5})?)?\.safetensors", re.IGNORECASE)
# Weights and weight indexes in a model folder: `dequantize --like` copies every other file.
WEIGHT_FILE = re.compile(r".*\.(?:safetensors|bin|pt|pth|ckpt|h5|msgpack|gguf|onnx|ot|npz|npy|tflite|pb)"
                         r"|.*\.(?:safetensors|bin)\.index\.json", re.IGNORECASE)


# The files a folder output consists of (Hugging Face layout); in an output folder these names
# are ours: a new output replaces them all, and leaves none of an older output's behind.
FOLDER_OUTPUT_FILES = re.compile(r"model(?:-[0-9]{5}-of-[0-9]{5})?\.safetensors|model\.safetensors\.index\.json")


class FolderOutput:
    """A set of files published into `folder` as a whole.

    The files are written into a temp folder (`.NAME.PID.XXXX.tmp`: beside `folder` when it does
    not exist yet, then renamed to it; inside it otherwise, then each file renamed into place with
    signals held) and the files of an older output (`FOLDER_OUTPUT_FILES` not in the new set) are
    removed. A failed or interrupted run removes the temp folder and leaves `folder` as it was.
    """

    def __init__(self, folder: str, names: list[str], inputs: list[str]):
        self.folder = os.path.normpath(folder)
        self.names = list(names)
        if os.path.exists(self.folder) and not os.path.isdir(self.folder):
            raise ConfigError("the output exists and is not a folder", path=folder)
        self.exists = os.path.isdir(self.folder)
        listing = os.listdir(self.folder) if self.exists else []
        self.stale = sorted(n for n in listing if FOLDER_OUTPUT_FILES.fullmatch(n) and n not in self.names)
        refuse_inputs([os.path.join(self.folder, n) for n in self.names + self.stale], inputs)
        parent = os.path.dirname(os.path.abspath(self.folder))
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as e:
            raise _work_error(e, folder) from None
        where = self.folder if self.exists else parent
        remove_stale(os.path.join(where, os.path.basename(self.folder)))
        self.tmp: str | None = None
        try:
            with held():  # created and owned in one step; a signal held meanwhile raises at its end
                self.tmp = tempfile.mkdtemp(prefix=temp_prefix(self.folder), suffix=".tmp", dir=where)
        except OSError as e:
            raise _create_error(e, folder, where) from None
        except BaseException:
            self.abort()
            raise

    def path(self, name: str) -> str:
        """Where to write the file `name` (inside the temp folder; `a/b.json` makes the folder `a`)."""
        assert self.tmp is not None
        path = os.path.join(self.tmp, name)
        if os.sep in name:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def publish(self) -> None:
        """Switch to the new files in one held step: nothing can stop it half-way but an OS error."""
        assert self.tmp is not None
        try:
            with held():
                if not self.exists:
                    os.chmod(self.tmp, 0o777 & ~_umask())
                    os.rename(self.tmp, self.folder)
                    self.tmp = None
                else:
                    for name in sorted(self.names, key=lambda n: n.endswith(".json")):  # the index last
                        if os.sep in name:
                            os.makedirs(os.path.dirname(os.path.join(self.folder, name)), exist_ok=True)
                        os.replace(self.path(name), os.path.join(self.folder, name))
                    for name in self.stale:
                        try:
                            os.unlink(os.path.join(self.folder, name))
                        except FileNotFoundError:
                            pass
                    self.abort()
        except OSError as e:
            raise _work_error(e, self.folder) from None
        _fsync_dir(self.folder)

    def abort(self) -> None:
        """Remove the temp folder and everything in it."""
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
