"""Parallel encoding: worker processes with spill files (`Workers`) for the archive writer, and
an ordered thread map for the planner's measuring. Encoding itself is passed in (`EncodeFn`), so
this module knows nothing of methods or selection policy."""

from __future__ import annotations

import glob
import hashlib
import multiprocessing
import os
import select
import signal
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

import numpy as np

from ..archive.storage import store
from ..errors import WorkError
from ..methods import Encoding
from ..metrics import ErrorStats
from ..io.output import temp_prefix
from ..io.safetensors import dtype_code
from .selection import PlanItem
from ..io.sources import Sources, TensorRef
from ..spec import Spec

# encode(ref, spec or None (keep), note, keep_nonfinite) -> (encoding, error or None when kept, note);
# a module-level function, so that worker processes can be handed it
EncodeFn = Callable[[TensorRef, "Spec | None", str, bool], tuple[Encoding, "ErrorStats | None", str]]
_T = TypeVar("_T")
_R = TypeVar("_R")


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# --jobs runs worker processes: numpy releases the GIL inside each array operation, but the many
# operations per tensor still serialise threads on it (measured: 2 threads 1.2x, 2 processes 1.8x
# on 4096x11008 bf16 tensors). Starting the workers costs ~0.4 s: all-MiniLM-L6-v2 (91 MB) took
# 1.04 s with two workers and 0.70 s in-process, so below this much input there are none.
PARALLEL_MIN_BYTES = 256 * 10**6


_worker: dict[str, Any] = {}  # per worker process: its tensor refs and its spill file


PARENT_POLL = 0.5  # seconds between checks that the parent lives, where no pidfd can wait for it


def _exit_with(parent: int) -> None:
    """End this worker when `parent` ends, however it ends (SIGKILL and the OOM killer leave it no
    chance to stop us, and the other workers hold our task pipe open, so no EOF would ever come):
    a daemon thread waits on a pidfd (Linux), else polls. getppid() cannot tell: the forkserver,
    not the parent, forks the workers; the forkserver itself ends once its workers have."""
    try:
        fd: int | None = os.pidfd_open(parent)
    except (AttributeError, OSError):  # not Linux 5.3+, or the parent is already gone
        fd = None

    def watch() -> None:
        if fd is not None:
            select.select([fd], [], [])  # readable when the process has ended
        else:
            while True:
                try:
                    os.kill(parent, 0)
                except OSError:  # ESRCH; EPERM: the pid now belongs to someone else
                    break
                time.sleep(PARENT_POLL)
        os._exit(1)

    threading.Thread(target=watch, name="quant-parent-watch", daemon=True).start()


def _worker_start(inputs: list[str], spill_dir: str, spill_prefix: str, encode: EncodeFn, parent: int) -> None:
    """In each worker: reopen the inputs (headers only) and make a spill file beside the output;
    end with the parent. Ctrl-C is the parent's to handle."""
    _exit_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker["encode"] = encode
    sources = Sources(inputs)  # kept open for the worker's lifetime; the OS closes it at exit
    _worker["refs"] = {r.name: r for r in sources.refs}
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent terminates workers; they just stop
    _worker["spill"] = tempfile.NamedTemporaryFile(dir=spill_dir, prefix=spill_prefix, suffix=".spill", delete=False)


@dataclass(frozen=True)
class Spilled:
    """A tensor a worker process encoded: its stored arrays are in the worker's spill file at
    `path`, role -> (dtype code, shape, offset, nbytes), hashed by the worker."""

    method: str
    params: dict[str, Any]
    pieces: dict[str, tuple[str, tuple[int, ...], int, int]]
    sha256: str
    path: str
    codecs: dict[str, dict[str, Any]]  # arrays stored with a recorded codec (storage.py)

    @property
    def nbytes(self) -> int:
        return sum(n for _, _, _, n in self.pieces.values())


def _worker_encode(name: str, spec: Spec | None, note: str, keep_nonfinite: bool, codec: str
                   ) -> tuple[Spilled, ErrorStats | None, str]:
    """Encode one tensor in a worker, write its stored arrays (codecs applied) to the worker's
    spill file and hash them there, and send back only where they are: the parent splices them
    into the archive with copy_file_range instead of receiving, unpickling and writing them again."""
    ref = _worker["refs"][name]
    enc, err, note = _worker["encode"](ref, spec, note, keep_nonfinite)
    return spill_encoding(_worker["spill"], enc, tuple(ref.shape), codec), err, note


def spill_encoding(spill: Any, enc: Encoding, shape: tuple[int, ...], codec: str) -> Spilled:
    """Store `enc` (codecs applied) at the end of the open file `spill`, hashed on the way."""
    stored, codecs = store(enc, shape, codec)
    digest = hashlib.sha256()
    pieces = {}
    spill.seek(0, os.SEEK_END)
    for role in sorted(stored):
        a = np.require(stored[role], requirements="C")  # keeps 0-d arrays 0-d
        raw = a.reshape(-1).view(np.uint8).data if a.size else memoryview(b"")
        digest.update(raw)
        offset = spill.tell()
        try:
            spill.write(raw)
        except OSError as e:
            raise WorkError(f"cannot write: {e.strerror or e}", path=spill.name) from None
        pieces[role] = (dtype_code(a.dtype), tuple(a.shape), offset, a.nbytes)
    spill.flush()
    return Spilled(enc.method, enc.params, pieces, digest.hexdigest(), spill.name, codecs)


class Spill:
    """In-process twin of `Workers`: encode plan items here, one at a time, into one spill file
    beside the output (unnamed once created), so a caller can hold many tensors' stored arrays
    without holding them in memory."""

    def __init__(self, output: str, keep_nonfinite: bool, encode: EncodeFn, codec: Callable[[PlanItem], str]):
        folder = os.path.dirname(os.path.abspath(output))
        self.file = tempfile.NamedTemporaryFile(dir=folder, prefix=temp_prefix(output) + "p", suffix=".spill")
        self.encode, self.codec, self.keep_nonfinite = encode, codec, keep_nonfinite

    def run(self, plan: list[PlanItem]) -> Iterator[tuple[PlanItem, tuple[Spilled, ErrorStats | None, str]]]:
        for item in plan:
            enc, err, note = self.encode(item.ref, item.spec, item.note, self.keep_nonfinite)
            yield item, (spill_encoding(self.file, enc, tuple(item.ref.shape), self.codec(item)), err, note)

    def spill_fd(self, spilled: Spilled) -> int:
        return self.file.fileno()

    def close(self, ok: bool) -> None:
        self.file.close()


class Workers:
    """Encode plan items in `jobs` processes, yielding results in plan order; at most 2 x jobs
    results wait. Arrays stay in the workers' spill files (beside the output, named with the
    parent's pid, removed as soon as the parent has opened them, and on failure); only their places
    travel back. A worker that dies (killed, out of memory) fails the run with WorkError (exit 1)
    instead of leaving the parent waiting for it forever."""

    def __init__(self, inputs: list[str], output: str, jobs: int, keep_nonfinite: bool, encode: EncodeFn,
                 codec: Callable[[PlanItem], str]):
        self.codec = codec  # how each item's arrays are stored ("bitpack" or "entropy")
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        self.folder = os.path.dirname(os.path.abspath(output))
        self.prefix = temp_prefix(output) + "w"
        self.spills: dict[str, int] = {}  # worker spill path -> fd open in the parent
        self.pool = ProcessPoolExecutor(jobs, multiprocessing.get_context(method), _worker_start,
                                        (list(inputs), self.folder, self.prefix, encode, os.getpid()))
        self.window = 2 * jobs
        self.keep_nonfinite = keep_nonfinite

    def spill_fd(self, spilled: Spilled) -> int:
        """The parent's fd of the spill file holding `spilled`'s arrays; opened once, then unlinked."""
        path = spilled.path
        if path not in self.spills:
            self.spills[path] = os.open(path, os.O_RDONLY)
            os.unlink(path)
        return self.spills[path]

    @staticmethod
    def _result(future: Any) -> tuple[Spilled, ErrorStats | None, str]:
        try:
            return future.result()
        except BrokenProcessPool:
            raise WorkError("a worker process died (killed, perhaps out of memory); nothing was written; "
                            "--jobs 1 encodes in this process") from None

    def run(self, plan: list[PlanItem]) -> Iterator[tuple[PlanItem, tuple[Spilled, ErrorStats | None, str]]]:
        pending: deque[tuple[PlanItem, Any]] = deque()
        for item in plan:
            try:
                future = self.pool.submit(_worker_encode, item.ref.name, item.spec, item.note, self.keep_nonfinite,
                                          self.codec(item))
            except BrokenProcessPool:
                future = None
            if future is None:  # the pool broke before this submit: report it as its result would
                while pending:
                    self._result(pending.popleft()[1])
                raise WorkError("a worker process died (killed, perhaps out of memory); nothing was written; "
                                "--jobs 1 encodes in this process")
            pending.append((item, future))
            if len(pending) >= self.window:
                first, result = pending.popleft()
                yield first, self._result(result)
        while pending:
            first, result = pending.popleft()
            yield first, self._result(result)

    def close(self, ok: bool) -> None:
        """Stop the workers (at once when the run failed or was interrupted) and remove every
        spill file they made."""
        if not ok:
            # no public handle on the processes before Python 3.14's terminate_workers()
            workers = list((getattr(self.pool, "_processes", None) or {}).values())
            self.pool.shutdown(wait=False, cancel_futures=True)
            for p in workers:
                p.terminate()
            for p in workers:
                p.join(10)
        else:
            self.pool.shutdown(wait=True)
        for fd in self.spills.values():
            os.close(fd)
        for leftover in glob.glob(os.path.join(glob.escape(self.folder), glob.escape(self.prefix) + "*.spill")):
            try:
                os.unlink(leftover)
            except FileNotFoundError:
                pass


def ordered_map(fn: Callable[[_T], _R], items: list[_T], jobs: int) -> Iterator[_R]:
    """fn over items in threads, results in input order, at most `jobs` in flight."""
    if jobs <= 1 or len(items) <= 1:
        for item in items:
            yield fn(item)
        return
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="plan") as pool:
        pending: deque[Any] = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= jobs:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
