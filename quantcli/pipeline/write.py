"""The encode pipeline: load and encode each planned tensor, measure its error, and write the
archive in ONE loop (used by plain quantizing and by the planner), plus the dry-run plan."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from functools import partial
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import numpy as np

from ..archive import original as original_file
from ..archive.container import ArchiveTensor, ArchiveWriter
from ..archive.storage import Stored, store
from ..errors import ConfigError, InputError, NonFiniteError, QuantError
from ..methods import KEEP, Encoding, get_method
from ..methods.base import to_float32
from ..calibration.importance import PARAM as IMPORTANCE_PARAM, Importance, TensorImportance
from ..metrics import ZERO, ErrorStats, measure
from . import parallel
from .parallel import Spilled, Workers
from ..reports import ImportanceUse, PlanReport, QuantizeReport, TensorReport
from .selection import PlanItem
from ..archive.sizing import Sized, header_bytes, metrics_doc
from ..io.sources import Sources, TensorRef
from ..spec import Spec

# progress(done_bytes, total_bytes, tensor_name)
Progress = Callable[[int, int, str], None]


def all_finite(x: np.ndarray) -> bool:
    """One pass: NaN and Inf propagate into a sum, so a finite sum proves every value finite; only
    a non-finite sum (or an overflow of huge but finite values) needs the exact check."""
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(x.sum(dtype=np.float32)):
            return True
    return bool(np.isfinite(x.min()) and np.isfinite(x.max()))


def load_float32(ref: TensorRef) -> np.ndarray:
    """The tensor as float32; InputError (naming it) with the count when it holds NaN or Inf."""
    xf = to_float32(ref.load())
    if not all_finite(xf):
        raise NonFiniteError(int(np.count_nonzero(~np.isfinite(xf))), path=ref.path, tensor=ref.name)
    return xf


def nonfinite_error(ref: TensorRef, count: int) -> InputError:
    return InputError(f"holds {count} NaN or Inf values; fix the weights or pass --keep-nonfinite to keep "
                      f"such tensors as they are", path=ref.path, tensor=ref.name)


def nonfinite_note(count: int) -> str:
    return f"kept: {count} NaN/Inf values (--keep-nonfinite)"


def encode_tensor(ref: TensorRef, spec: Spec | None, note: str, keep_nonfinite: bool = False,
                  importance: Importance | None = None) -> tuple[Encoding, ErrorStats | None, str]:
    """Load and encode one tensor (spec None: keep it as it is): (encoding, error stats or None
    when kept, note). With `importance` holding statistics for it, the method chooses for the
    weighted error and the stats carry the weighted sums too."""
    if spec is None or spec.method == KEEP:  # stored as it is, in its own dtype
        return get_method(KEEP).encode(ref.load(), spec or Spec()), None, note
    imp = None
    if importance is not None and weighted_by(importance, ref, spec):
        imp = importance.for_tensor(ref.name, tuple(ref.shape))
    try:
        with np.errstate(all="ignore"):  # values near float32's limit: what overflows is refused below
            if imp is not None:
                assert importance is not None
                enc, err = encode_weighted(load_float32(ref), spec, ref, imp, importance.record)
            elif get_method(spec.method).reads_narrow_floats:
                enc, err = encode_and_measure(ref.load(), spec, ref)  # widened chunk by chunk inside
            else:
                enc, err = encode_and_measure(load_float32(ref), spec, ref)
    except NonFiniteError as e:
        if keep_nonfinite:
            return get_method(KEEP).encode(ref.load(), Spec()), None, nonfinite_note(e.count)
        raise nonfinite_error(ref, e.count) from None
    try:  # what the reader would refuse is never written: its params (ecsq's grid within float32), and
        get_method(enc.method).layout(tuple(ref.shape), enc.params)
        if not math.isfinite(err.max_abs):  # an error beyond float32 (values near its limit)
            raise InputError(f"{spec.method} cannot quantize values this close to float32's limit (the error "
                             "overflows float32); keep this tensor or use --method lossless")
    except QuantError as e:
        raise type(e)(e.message, path=ref.path, tensor=ref.name) from None
    return enc, err, ""


def encode_and_measure(x: np.ndarray, spec: Spec, ref: TensorRef) -> tuple[Encoding, ErrorStats]:
    """Encode float32 `x` and measure its error (the method measures while encoding where it
    can); errors name the tensor."""
    try:
        return get_method(spec.method).encode_measured(x, spec)
    except NonFiniteError as e:
        raise NonFiniteError(e.count, path=ref.path, tensor=ref.name) from None
    except QuantError as e:
        raise type(e)(e.message, path=ref.path, tensor=ref.name) from None


def encode_weighted(x: np.ndarray, spec: Spec, ref: TensorRef, imp: TensorImportance, record: str
                    ) -> tuple[Encoding, ErrorStats]:
    """Encode float32 `x` for the importance-weighted error (`Method.encode_importance`), record
    the statistics' digest in its params, and measure both errors on the decoded values."""
    method = get_method(spec.method)
    try:
        enc = method.encode_importance(x, spec, imp)
    except QuantError as e:
        raise type(e)(e.message, path=ref.path, tensor=ref.name) from None
    recon = method.decode(enc, tuple(x.shape))
    err = measure(x, recon)
    err = replace(err, output_signal=imp.weighted_sum(x), output_error=imp.weighted_sum(x - recon))
    return Encoding(enc.method, {**enc.params, IMPORTANCE_PARAM: record}, enc.arrays), err


def tensor_report(t: ArchiveTensor, stored: int, err: ErrorStats | None) -> TensorReport:
    label = "kept" if t.method == KEEP else get_method(t.method).describe(t.params)
    e = err or ErrorStats(t.size, 0.0, 0.0, 0.0)
    return TensorReport(t.name, t.dtype, t.shape, t.method, label, t.params, t.size, t.original_nbytes, stored,
                        e.mse, e.sqnr_db if err else float("inf"), e.max_abs, t.note, e.output_sqnr_db)


def storage_codec(spec: Spec | None, base: Spec) -> str:
    """How a tensor's arrays are stored: entropy-coded for methods that are by design, or when
    its spec (or, for a kept tensor, the run's) asks for it; else fixed-rate (format 1 bytes)."""
    if spec is not None and get_method(spec.method).entropy_coded:
        return "entropy"
    return (spec or base).codec


class Encoded(NamedTuple):
    """One tensor ready for the archive: an encoding in memory (stored with `codec`), or arrays
    a worker process already stored in its spill file (open in this process as `spill_fd`)."""

    ref: TensorRef
    enc: Encoding | Spilled
    err: ErrorStats | None
    note: str
    spill_fd: int | None = None
    codec: str = "bitpack"
    # the stored arrays and recorded codecs when the caller already made them (entropy coding is
    # not free: the planner sizes a tensor from them and the writer takes them as they are)
    stored: tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]] | None = None


def write_archive(output: str, results: Iterable[Encoded], total: int, progress: Progress | None = None,
                  header_size: Callable[[], int] | None = None, original: dict[str, Any] | None = None
                  ) -> tuple[list[TensorReport], ErrorStats, int]:
    """THE archive write loop: add each encoded tensor in order, publish atomically (nothing is
    left behind on failure). `header_size`, when given, fixes the header's length (the planner's
    exact sizes). Returns the per-tensor reports, the summed error and the archive's bytes."""
    writer = ArchiveWriter(output)
    reports: list[TensorReport] = []
    stats = ZERO
    done = 0
    try:
        for r in results:
            ref = r.ref
            if isinstance(r.enc, Spilled):
                assert r.spill_fd is not None
                stored = r.enc.nbytes
                t = writer.add_spilled(ref.name, ref.dtype, ref.shape, r.enc.method, r.enc.params, r.enc.pieces,
                                       r.enc.sha256, r.spill_fd, metrics_doc(r.err), r.note,
                                       r.enc.codecs)
            else:
                s = Stored(*r.stored) if r.stored else store(r.enc, tuple(ref.shape), r.codec)
                stored = sum(int(a.nbytes) for a in s.arrays.values())
                t = writer.add(ref.name, ref.dtype, ref.shape, r.enc.method, r.enc.params, s, metrics_doc(r.err),
                               r.note)
            reports.append(tensor_report(t, stored, r.err))
            if r.err is not None:
                stats = stats + r.err
            done += ref.nbytes
            if progress:
                progress(done, total, ref.name)
        archive_bytes = writer.finish(header_size() if header_size is not None else None, original)
    except BaseException:
        writer.abort()
        raise
    return reports, stats, archive_bytes


def _item_codec(item: PlanItem, base: Spec) -> str:
    return storage_codec(item.spec, base)


def quantize(sources: Sources, inputs: list[str], plan: list[PlanItem], output: str, *, jobs: int,
             keep_nonfinite: bool, progress: Progress | None, base: Spec | None = None,
             importance: Importance | None = None) -> QuantizeReport:
    """Encode `plan` into the archive `output`. With `jobs` > 1 and more than PARALLEL_MIN_BYTES
    to encode, worker processes encode tensors at once; the archive is written in plan order,
    so its bytes do not depend on `jobs`. Memory holds at most 2 x `jobs` tensors' encodings."""
    start = time.perf_counter()
    encoding = [item for item in plan if not item.keep]
    workers = None
    encode = encode_tensor if importance is None else partial(encode_tensor, importance=importance)
    if jobs > 1 and len(encoding) > 1 and sum(i.ref.nbytes for i in encoding) >= parallel.PARALLEL_MIN_BYTES:
        workers = Workers(inputs, output, jobs, keep_nonfinite, encode, partial(_item_codec, base=base or Spec()))

    def results() -> Iterator[Encoded]:
        if workers is None:
            for item in plan:
                yield Encoded(item.ref, *encode(item.ref, item.spec, item.note, keep_nonfinite),
                              codec=storage_codec(item.spec, base or Spec()))
        else:
            for item, (enc, err, note) in workers.run(plan):
                yield Encoded(item.ref, enc, err, note, workers.spill_fd(enc))

    exact = [item.spec is None or get_method(item.spec.method).exact for item in plan]
    original = original_file.record(sources.files, all(exact) and not all(item.keep for item in plan))
    ok = False
    try:
        reports, stats, archive_bytes = write_archive(output, results(), sum(r.nbytes for r in sources.refs),
                                                      progress, original=original)
        ok = True
    finally:
        if workers is not None:
            workers.close(ok)
    return QuantizeReport(output, list(inputs), reports, sources.input_bytes, archive_bytes,
                          time.perf_counter() - start, stats, importance_use(importance, reports),
                          {"format": original["format"], "sha256": original["sha256"]} if original else None)


def open_importance(path: str | None, sources: Sources) -> Importance | None:
    """The statistics file, validated against every tensor of the inputs (None: not given)."""
    if path is None:
        return None
    return Importance.open(path, {r.name: tuple(r.shape) for r in sources.refs})


def importance_use(importance: Importance | None, reports: list[TensorReport]) -> ImportanceUse | None:
    """What the statistics did, from the archive written: the tensors whose params record them,
    and the quantized 2-D tensors the file has none for (a partial match is reported, not refused)."""
    if importance is None:
        return None
    quantized = [t for t in reports if t.quantized and len(t.shape) == 2]
    return ImportanceUse(importance.path, importance.digest, importance.tokens,
                         [t.name for t in quantized if IMPORTANCE_PARAM in t.params],
                         importance.unmatched([t.name for t in quantized]))


def weighted_by(importance: Importance | None, ref: TensorRef, spec: Spec) -> bool:
    """Whether `importance` acts on this tensor: the file covers it and the method weighs."""
    return importance is not None and ref.name in importance.tensors and get_method(spec.method).weighs_importance


def sized(item: PlanItem, importance: Importance | None = None) -> Sized:
    """How a plan item will be stored, from its shape and spec alone."""
    if item.spec is None:
        return Sized.kept(item.ref, item.note)
    method = get_method(item.spec.method)
    if importance is not None and weighted_by(importance, item.ref, item.spec):
        params = method.params_for(tuple(item.ref.shape), method.importance_spec(item.spec))
        return Sized.stored(item.ref, item.spec.method, {**params, IMPORTANCE_PARAM: importance.record})
    return Sized.stored(item.ref, item.spec.method, method.params_for(tuple(item.ref.shape), item.spec))


def dry_run(sources: Sources, inputs: list[str], plan: list[PlanItem],
            importance: Importance | None = None) -> PlanReport:
    """The per-tensor plan and predicted archive size, from headers alone (no tensor data).
    Entropy-coded sizes depend on the data, so such a plan is refused rather than guessed."""
    for item in plan:
        if item.spec is not None and storage_codec(item.spec, item.spec) == "entropy":
            raise ConfigError("--dry-run predicts sizes from headers alone; entropy-coded sizes depend on the "
                              "data (run quantize: its report gives the exact sizes)", path=item.ref.path,
                              tensor=item.ref.name)
    tensors = [sized(item, importance) for item in plan]
    labels = ["kept" if s.method == KEEP else get_method(s.method).describe(s.params) for s in tensors]
    return PlanReport(list(inputs), plan, labels, [s.nbytes for s in tensors], sources.input_bytes,
                      header_bytes(tensors))


def resolve(plan: list[PlanItem], importance: Importance | None = None) -> list[PlanItem]:
    """Every method's model-wide resolution (`Method.resolve`) over the items it encodes, before
    anything is written: e.g. one common step for all tensors asking for an SQNR."""
    out = list(plan)
    for name in dict.fromkeys(item.spec.method for item in plan if item.spec is not None):
        idx = [i for i, item in enumerate(out) if item.spec is not None and item.spec.method == name]

        def load(k: int, idx: list[int] = idx) -> np.ndarray:
            ref = out[idx[k]].ref
            try:
                return load_float32(ref)
            except NonFiniteError as e:
                raise nonfinite_error(ref, e.count) from None

        def stats(k: int, idx: list[int] = idx) -> TensorImportance | None:
            item = out[idx[k]]
            if importance is None or item.spec is None or not weighted_by(importance, item.ref, item.spec):
                return None
            return importance.for_tensor(item.ref.name, tuple(item.ref.shape))

        with np.errstate(all="ignore"):  # steps that overflow measure as inf error: not chosen, not warned about
            specs = get_method(name).resolve([out[i].spec for i in idx], load, stats)  # type: ignore[misc]
        for i, spec in zip(idx, specs):
            if spec != out[i].spec:
                out[i] = out[i]._replace_spec(spec)
    return out
