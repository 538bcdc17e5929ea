"""inspect and verify: what a weight file or an archive holds, without changing anything."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..reports import Inspection, TensorReport, TensorStats, VerifyReport
from ..io.sources import Sources, TensorRef

if TYPE_CHECKING:
    from .container import Archive

# progress(done_bytes, total_bytes, tensor_name)
Progress = Callable[[int, int, str], None]


def archive_report(archive: Archive) -> list[TensorReport]:
    """Per-tensor figures as recorded at write time (no decoding)."""
    from ..methods import get_method

    out = []
    for t in archive.tensors:
        m = t.metrics
        sq = m.get("sqnr_db", "inf")
        method = get_method(t.method)
        out.append(TensorReport(
            t.name, t.dtype, t.shape, t.method, "kept" if method.kept else method.describe(t.params), t.params, t.size,
            t.original_nbytes, archive.stored_nbytes(t), float(m.get("mse", 0.0)),
            float(sq) if not isinstance(sq, str) else float(sq.replace("inf", "Infinity")),
            float(m.get("max_abs_err", 0.0)), t.note))
    return out


def tensor_stats(ref: TensorRef) -> TensorStats:
    with np.errstate(all="ignore"):  # hostile values (signalling NaN, 1e308) give inf/nan stats, not warnings
        return _tensor_stats(ref)


def _tensor_stats(ref: TensorRef) -> TensorStats:
    x = ref.load()
    n = ref.size
    nan = float("nan")
    if n == 0:
        return TensorStats(ref.name, ref.dtype, ref.shape, 0, ref.nbytes, nan, nan, nan, nan, nan, 0, 0)
    v = x.astype(np.float64) if x.dtype != np.float64 else x
    finite = np.isfinite(v)
    nonfinite = int(n - np.count_nonzero(finite))
    f = v[finite] if nonfinite else v.reshape(-1)
    if f.size == 0:
        return TensorStats(ref.name, ref.dtype, ref.shape, n, ref.nbytes, nan, nan, nan, nan, nan,
                           int(n - np.count_nonzero(x)), nonfinite)
    lo, hi = float(f.min()), float(f.max())
    return TensorStats(ref.name, ref.dtype, ref.shape, n, ref.nbytes, lo, hi, float(f.mean()), float(f.std()),
                       max(abs(lo), abs(hi)), int(n - np.count_nonzero(x)), nonfinite)


def _is_archive(path: str) -> bool:
    from .container import is_archive

    return is_archive(path)


def inspect_paths(paths: list[str], progress: Progress | None = None) -> list[Inspection]:
    """Describe each path: archives show method, params, stored bytes and stored metrics;
    weight files show per-tensor statistics (read one tensor at a time). The archive code (and
    every method) is imported only when a path is a .safetensors file: `quant inspect w.npy` starts quicker."""
    out = []
    for path in paths:
        if os.path.isfile(path) and path.endswith(".safetensors") and _is_archive(path):
            from .container import open_archive

            with open_archive(path) as archive:
                out.append(Inspection(path, os.path.getsize(path), archive=archive_report(archive)))
            continue
        with Sources([path]) as sources:
            total = sum(r.nbytes for r in sources.refs)
            stats, done = [], 0
            for ref in sources.refs:
                stats.append(tensor_stats(ref))
                done += ref.nbytes
                if progress:
                    progress(done, total, ref.name)
            out.append(Inspection(path, sources.input_bytes, tensors=stats))
    return out


def verify_archive(path: str) -> VerifyReport:
    """Check an archive end to end: the container and manifest are validated on open (ArchiveError
    when malformed or when the manifest does not match its checksum), then every tensor's stored
    bytes are hashed and compared with the manifest's SHA-256 and the tensor is decoded (refusing
    what dequantize refuses).

    Example:
        >>> verify_archive("w.qnt.safetensors").ok
        True
    """
    from .container import open_archive

    with open_archive(path) as archive:
        corrupt = archive.verify()
        stored = sum(archive.stored_nbytes(t) for t in archive.tensors)
        return VerifyReport(path, os.path.getsize(path), len(archive.tensors), stored, corrupt)


def verify_archives(paths: list[str]) -> list[VerifyReport]:
    """`verify_archive` of each path; an archive refused on open (exit status 2: malformed, not
    an archive, a manifest that does not match its checksum) is a report with its `error`, so
    that one bad archive does not hide the verdict on the others. Other failures raise."""
    from ..errors import QuantError

    out = []
    for path in paths:
        try:
            out.append(verify_archive(path))
        except QuantError as e:
            if e.exit_code != 2:
                raise
            out.append(VerifyReport(path, 0, 0, 0, [], error=e.message, error_line=e.render()))
    return out
