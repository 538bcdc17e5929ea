"""The library facade: paths in, dataclass reports out. No printing, no exiting."""

from __future__ import annotations

import glob
import hashlib
import json
import multiprocessing
import os
import re
import signal
import tempfile
import time
import zipfile
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from .archive import Archive, ArchiveTensor, ArchiveWriter, is_archive, manifest_metadata
from .errors import ConfigError, InputError, NonFiniteError, QuantError, WorkError
from .methods import Encoding, get_method
from .methods.base import to_float32
from .metrics import ZERO, ErrorStats, bits_per_weight, measure
from .output import SafetensorsWriter, atomic_output, predict_header
from .recipe import Recipe, load_recipe
from .safetensors_io import DTYPES, FLOAT_CODES, dtype_code
from .sources import Sources, TensorRef
from .spec import Spec

# progress(done_bytes, total_bytes, tensor_name)
Progress = Callable[[int, int, str], None]


@dataclass
class TensorReport:
    """One tensor's outcome: what was done and what it cost, all overhead counted."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    method: str
    label: str
    params: dict[str, Any]
    elements: int
    original_bytes: int
    stored_bytes: int
    mse: float
    sqnr_db: float
    max_abs_err: float
    note: str = ""

    @property
    def quantized(self) -> bool:
        return self.method != "keep"

    @property
    def bits_per_weight(self) -> float:
        return bits_per_weight(self.stored_bytes, self.elements)


@dataclass
class QuantizeReport:
    output: str
    inputs: list[str]
    tensors: list[TensorReport]
    input_bytes: int
    archive_bytes: int
    seconds: float
    quantized: ErrorStats = ZERO

    @property
    def quantized_elements(self) -> int:
        return sum(t.elements for t in self.tensors if t.quantized)

    @property
    def quantized_stored_bytes(self) -> int:
        return sum(t.stored_bytes for t in self.tensors if t.quantized)

    @property
    def bits_per_weight(self) -> float:
        """Bits per quantized weight: codes, scales, zero points and codebooks of quantized tensors."""
        return bits_per_weight(self.quantized_stored_bytes, self.quantized_elements)

    @property
    def ratio(self) -> float:
        """Archive bytes (headers and kept tensors included) over input file bytes."""
        return self.archive_bytes / self.input_bytes if self.input_bytes else 0.0

    @property
    def overall_sqnr_db(self) -> float:
        return self.quantized.sqnr_db


@dataclass
class DequantizeReport:
    output: str
    archive: str
    tensors: list[tuple[str, str, tuple[int, ...]]]  # name, dtype code written, shape
    output_bytes: int
    seconds: float


@dataclass
class Selection:
    """Which tensors get quantized. By default: float tensors of 2 or more dimensions, and any
    float .npy file the user names. `only`/`skip` are regular expressions searched in the full name."""

    only: str | None = None
    skip: str | None = None
    include_1d: bool = False
    _only: re.Pattern[str] | None = field(default=None, init=False, repr=False)
    _skip: re.Pattern[str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        for attr in ("only", "skip"):
            pattern = getattr(self, attr)
            if pattern is not None:
                try:
                    setattr(self, f"_{attr}", re.compile(pattern))
                except re.error as e:
                    raise ConfigError(f"--{attr} {pattern!r} is not a valid regular expression: {e}") from None

    def reason_to_keep(self, ref: TensorRef) -> str:
        """Why `ref` is kept as it is, or '' when it is to be quantized."""
        if not ref.is_float:
            return f"kept: {ref.code} is not a float type"
        if len(ref.shape) < 2 and not ref.named_file and not self.include_1d:
            return "kept: 1-D (bias or norm); --include-1d quantizes it"
        if self._only is not None and not self._only.search(ref.name):
            return "kept: not matched by --only"
        if self._skip is not None and self._skip.search(ref.name):
            return "kept: matched by --skip"
        if ref.size == 0:
            return "kept: empty"
        return ""


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


def refuse_archives(sources: Sources) -> None:
    """Quantizing an archive would treat its codes and scales as weights: say what to do instead."""
    for path in sources.archives:
        raise InputError("is already a quant archive; dequantize it first to re-quantize", path=path)


def all_finite(x: np.ndarray) -> bool:
    """One pass: NaN and Inf propagate into a sum, so a finite sum proves every value finite; only
    a non-finite sum (or an overflow of huge but finite values) needs the exact check."""
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(x.sum(dtype=np.float32)):
            return True
    return bool(np.isfinite(x.min()) and np.isfinite(x.max()))


def encode_tensor(ref: TensorRef, spec: Spec, keep_reason: str, keep_nonfinite: bool = False
                  ) -> tuple[Encoding, ErrorStats | None, str]:
    """Load and encode one tensor: (encoding, error stats or None when kept, note)."""
    x = ref.load()
    if keep_reason or spec.method == "keep":  # verbatim in its own dtype (widening would break its layout)
        return get_method("keep").encode(x, spec), None, keep_reason
    try:
        if get_method(spec.method).reads_narrow_floats:
            enc, err = encode_and_measure(x, spec, ref)  # widened chunk by chunk inside
        else:
            xf = to_float32(x)
            del x
            if not all_finite(xf):
                raise NonFiniteError(int(np.count_nonzero(~np.isfinite(xf))))
            enc, err = encode_and_measure(xf, spec, ref)
    except NonFiniteError as e:
        if keep_nonfinite:
            return get_method("keep").encode(ref.load(), spec), None, f"kept: {e.count} NaN/Inf values (--keep-nonfinite)"
        raise InputError(f"holds {e.count} NaN or Inf values; fix the weights or pass --keep-nonfinite to keep "
                         f"such tensors as they are", path=ref.path, tensor=ref.name) from None
    return enc, err, ""


def encode_and_measure(x: np.ndarray, spec: Spec, ref: TensorRef) -> tuple[Encoding, ErrorStats]:
    """Encode float32 `x` and measure its error, using what the method measured or reconstructed
    while encoding, else decoding the encoding; errors name the tensor."""
    method = get_method(spec.method)
    try:
        enc = method.encode(x, spec)
    except NonFiniteError as e:
        raise NonFiniteError(e.count, path=ref.path, tensor=ref.name) from None
    except QuantError as e:
        raise type(e)(e.message, path=ref.path, tensor=ref.name) from None
    err, enc.error = enc.error, None
    if err is None:
        recon = enc.reconstruction if enc.reconstruction is not None else method.decode(enc, tuple(x.shape))
        err = measure(x, recon, consume=recon is enc.reconstruction)
    enc.reconstruction = None
    return enc, err


@dataclass
class PlanItem:
    """What will happen to one tensor: its spec (None = kept as it is) and the reason if kept."""

    ref: TensorRef
    spec: Spec | None
    note: str

    @property
    def keep(self) -> bool:
        return self.spec is None


def plan_tensors(refs: list[TensorRef], spec: Spec, selection: Selection,
                 recipe: Recipe | None = None) -> list[PlanItem]:
    """Decide every tensor's method before any data is read: --only/--skip and the default
    policy first, then the recipe (first matching rule wins)."""
    items = []
    for ref in refs:
        reason = selection.reason_to_keep(ref)
        chosen: Spec | None = None if reason else spec
        if not reason and recipe is not None:
            chosen, reason = recipe.spec_for(ref.name, spec)
        if chosen is not None:
            get_method(chosen.method).check_spec(chosen)
        items.append(PlanItem(ref, chosen, reason))
    return items


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _encode_item(item: PlanItem, keep_nonfinite: bool) -> tuple[Encoding, ErrorStats | None, str]:
    return encode_tensor(item.ref, item.spec or Spec(), item.note, keep_nonfinite)


# --jobs runs worker processes: numpy releases the GIL inside each array operation, but the many
# operations per tensor still serialise threads on it (measured: 2 threads 1.2x, 2 processes 1.8x
# on 4096x11008 bf16 tensors). Starting the workers costs ~0.4 s: all-MiniLM-L6-v2 (91 MB) took
# 1.04 s with two workers and 0.70 s in-process, so below this much input there are none.
PARALLEL_MIN_BYTES = 256 * 10**6
_worker: dict[str, Any] = {}  # per worker process: its tensor refs and its spill file


def _worker_start(inputs: list[str], spill_dir: str, spill_prefix: str) -> None:
    """In each worker: reopen the inputs (headers only) and make a spill file beside the output.
    Ctrl-C is the parent's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sources = Sources(inputs)  # kept open for the worker's lifetime; the OS closes it at exit
    _worker["refs"] = {r.name: r for r in sources.refs}
    _worker["spill"] = tempfile.NamedTemporaryFile(dir=spill_dir, prefix=spill_prefix, suffix=".spill", delete=False)


def _worker_encode(name: str, spec: Spec | None, note: str, keep_nonfinite: bool
                   ) -> tuple[Encoding, ErrorStats | None, str]:
    """Encode one tensor in a worker, write its arrays to the worker's spill file and hash them
    there, and send back only where they are: the parent splices them into the archive with
    copy_file_range instead of receiving, unpickling and writing them again."""
    enc, err, note = encode_tensor(_worker["refs"][name], spec or Spec(), note, keep_nonfinite)
    spill = _worker["spill"]
    digest = hashlib.sha256()
    spilled = {}
    for role in sorted(enc.arrays):
        a = np.ascontiguousarray(enc.arrays[role])
        raw = memoryview(a.reshape(-1).view(np.uint8)) if a.size else memoryview(b"")
        digest.update(raw)
        offset = spill.tell()
        try:
            spill.write(raw)
        except OSError as e:
            raise WorkError(f"cannot write: {e.strerror or e}", path=spill.name) from None
        spilled[role] = (dtype_code(a.dtype), tuple(a.shape), offset, a.nbytes)
    spill.flush()
    return Encoding(enc.method, enc.params, {}, sha256=digest.hexdigest(), spilled=spilled,
                    spill_path=spill.name), err, note


class _Workers:
    """Encode plan items in `jobs` processes, yielding results in plan order; at most 2 x jobs
    results wait. Arrays stay in the workers' spill files (beside the output, removed as soon as
    the parent has opened them, and on failure); only their places travel back."""

    def __init__(self, inputs: list[str], output: str, jobs: int, keep_nonfinite: bool):
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        self.folder = os.path.dirname(os.path.abspath(output))
        self.prefix = f".{os.path.basename(output)}.{os.getpid()}.w"
        self.spills: dict[str, int] = {}  # worker spill path -> fd open in the parent
        self.pool = multiprocessing.get_context(method).Pool(jobs, _worker_start,
                                                             (list(inputs), self.folder, self.prefix))
        self.window = 2 * jobs
        self.keep_nonfinite = keep_nonfinite

    def spill_fd(self, enc: Encoding) -> int | None:
        """The parent's fd of the spill file holding `enc`'s arrays; opened once, then unlinked."""
        path = enc.spill_path
        if path is None:
            return None
        if path not in self.spills:
            self.spills[path] = os.open(path, os.O_RDONLY)
            os.unlink(path)
        return self.spills[path]

    def run(self, plan: list[PlanItem]) -> Iterator[tuple[PlanItem, tuple[Encoding, ErrorStats | None, str]]]:
        pending: deque[tuple[PlanItem, Any]] = deque()
        for item in plan:
            pending.append((item, self.pool.apply_async(
                _worker_encode, (item.ref.name, item.spec, item.note, self.keep_nonfinite))))
            if len(pending) >= self.window:
                first, result = pending.popleft()
                yield first, result.get()
        while pending:
            first, result = pending.popleft()
            yield first, result.get()

    def close(self, ok: bool) -> None:
        if ok:
            self.pool.close()
        else:
            self.pool.terminate()
        self.pool.join()
        for fd in self.spills.values():
            os.close(fd)
        for leftover in glob.glob(os.path.join(glob.escape(self.folder), glob.escape(self.prefix) + "*.spill")):
            try:
                os.unlink(leftover)
            except FileNotFoundError:
                pass


def quantize_file(inputs: list[str], output: str, spec: Spec | None = None, *, only: str | None = None,
                  skip: str | None = None, include_1d: bool = False, keep_nonfinite: bool = False,
                  recipe: str | Recipe | None = None, jobs: int | None = 1,
                  progress: Progress | None = None) -> QuantizeReport:
    """Quantize every tensor of `inputs` into one archive at `output` (written atomically).

    With `jobs` > 1 (default: the machine's cores) and more than PARALLEL_MIN_BYTES of tensors to
    encode, `jobs` worker processes encode tensors at once; the archive is written in input order,
    so its bytes do not depend on `jobs`. Memory holds at most `jobs` tensors being encoded.

    Example:
        >>> r = quantize_file(["w.npy"], "w.qnt.safetensors", Spec(bits=4, granularity="group"))
        >>> r.tensors[0].sqnr_db > 15
        True
    """
    spec = spec or Spec()
    get_method(spec.method).check_spec(spec)
    if isinstance(recipe, str):
        recipe = load_recipe(recipe)
    jobs = default_jobs() if jobs is None else jobs
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    selection = Selection(only, skip, include_1d)
    start = time.perf_counter()
    with Sources(inputs) as sources:
        check_output(output, sources.files, ".safetensors")
        refuse_archives(sources)
        plan = plan_tensors(sources.refs, spec, selection, recipe)
        total = sum(r.nbytes for r in sources.refs)
        writer = ArchiveWriter(output)
        reports: list[TensorReport] = []
        stats = ZERO
        done = 0
        encoding = [item for item in plan if not item.keep]
        workers = None
        if jobs > 1 and len(encoding) > 1 and sum(i.ref.nbytes for i in encoding) >= PARALLEL_MIN_BYTES:
            workers = _Workers(inputs, output, jobs, keep_nonfinite)
        ok = False
        try:
            results = (workers.run(plan) if workers is not None else
                       ((item, _encode_item(item, keep_nonfinite)) for item in plan))
            for item, (enc, err, note) in results:
                ref = item.ref
                fd = workers.spill_fd(enc) if workers is not None else None
                t = writer.add(ref.name, ref.code, ref.shape, enc, metrics_doc(err, enc, ref), note, spill_fd=fd)
                reports.append(tensor_report(t, enc.nbytes, err))
                if err is not None:
                    stats = stats + err
                done += ref.nbytes
                if progress:
                    progress(done, total, ref.name)
            archive_bytes = writer.finish()
            ok = True
        except BaseException:
            writer.abort()
            raise
        finally:
            if workers is not None:
                workers.close(ok)
        input_bytes = sources.input_bytes
    return QuantizeReport(output, list(inputs), reports, input_bytes, archive_bytes,
                          time.perf_counter() - start, stats)


@dataclass
class PlanReport:
    """`--dry-run`: what would be written, with sizes computed from shapes and params alone."""

    inputs: list[str]
    items: list[PlanItem]
    labels: list[str]
    stored_bytes: list[int]
    input_bytes: int
    header_bytes_estimate: int

    @property
    def predicted_archive_bytes(self) -> int:
        return sum(self.stored_bytes) + self.header_bytes_estimate


def plan_file(inputs: list[str], spec: Spec | None = None, *, only: str | None = None, skip: str | None = None,
              include_1d: bool = False, recipe: str | Recipe | None = None) -> PlanReport:
    """The per-tensor plan and predicted archive size, reading headers only (no tensor data).

    Stored bytes are exact for each tensor's arrays; the header (manifest with metrics) is built
    as the writer builds it with every metric at its longest, so it is an upper bound, close to
    exact. A uniform tensor whose group scales overflow float16 falls back to float32 scales
    when actually encoded, which the plan cannot see without reading the data.
    """
    spec = spec or Spec()
    if isinstance(recipe, str):
        recipe = load_recipe(recipe)
    with Sources(inputs) as sources:
        refuse_archives(sources)
        plan = plan_tensors(sources.refs, spec, Selection(only, skip, include_1d), recipe)
        from .planner import placeholder_entry  # the planner sizes headers the same way

        labels, sizes, entries, arrays = [], [], [], []
        for item in plan:
            ref = item.ref
            if item.spec is None:
                method_name, params, layout, label = "keep", {}, {"values": (ref.dtype, tuple(ref.shape))}, "kept"
            else:
                method = get_method(item.spec.method)
                method_name, params = item.spec.method, method.params_for(ref.shape, item.spec)
                layout, label = method.layout(ref.shape, params), method.describe(params)
            nbytes = sum(int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize for dt, shape in layout.values())
            labels.append(label)
            sizes.append(nbytes)
            entry = placeholder_entry(ref, method_name, params, layout, nbytes, item.note)
            entries.append(entry)
            arrays.extend((entry.arrays[role], layout[role][0], layout[role][1]) for role in sorted(layout))
        header = len(predict_header(arrays, manifest_metadata(entries)))
        return PlanReport(list(inputs), plan, labels, sizes, sources.input_bytes, header)


def metrics_doc(err: ErrorStats | None, enc: Encoding, ref: TensorRef) -> dict[str, Any]:
    if err is None:
        return {}
    return {"mse": err.mse, "sqnr_db": err.sqnr_db, "max_abs_err": err.max_abs,
            "bits_per_weight": bits_per_weight(enc.nbytes, ref.size)}


def tensor_report(t: ArchiveTensor, stored: int, err: ErrorStats | None) -> TensorReport:
    method = get_method(t.method)
    label = "kept" if t.method == "keep" else method.describe(t.params)
    e = err or ErrorStats(t.size, 0.0, 0.0, 0.0)
    return TensorReport(t.name, t.code, t.shape, t.method, label, t.params, t.size, t.original_nbytes, stored,
                        e.mse, e.sqnr_db if err else float("inf"), e.max_abs, t.note)


def open_archive(path: str) -> Archive:
    """Open and validate an archive (raises ArchiveError naming what is wrong)."""
    if not os.path.exists(path):
        raise InputError("no such file", path=path)
    return Archive(path)


def archive_report(archive: Archive) -> list[TensorReport]:
    """Per-tensor figures as recorded at write time (no decoding)."""
    out = []
    for t in archive.tensors:
        m = t.metrics
        sq = m.get("sqnr_db", "inf")
        out.append(TensorReport(
            t.name, t.code, t.shape, t.method,
            "kept" if t.method == "keep" else get_method(t.method).describe(t.params), t.params, t.size,
            t.original_nbytes, archive.stored_nbytes(t), float(m.get("mse", 0.0)),
            float(sq) if not isinstance(sq, str) else float(sq.replace("inf", "Infinity")),
            float(m.get("max_abs_err", 0.0)), t.note))
    return out


OUTPUT_DTYPES = {"original": None, "float32": "F32", "float16": "F16", "bfloat16": "BF16"}
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20,
          "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
    """'2GB' -> 2_000_000_000, '500MiB' -> 524_288_000, '1000' -> 1000 (decimal units, as Hugging Face)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).upper() if m else ""
    if not m or unit not in _UNITS:
        raise ConfigError(f"--shard-size {text!r} is not a size like 2GB, 500MB or 1GiB")
    size = int(float(m.group(1)) * _UNITS[unit])
    if size < 1:
        raise ConfigError(f"--shard-size must be positive, got {text!r}")
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


def dequantize_file(archive_path: str, output: str, dtype: str = "original",
                    progress: Progress | None = None, shard_size: str | int | None = None) -> DequantizeReport:
    """Reconstruct every tensor of an archive into .safetensors, .npz or .npy (written atomically),
    or, when `output` is a folder or `shard_size` is given, into safetensors shards plus a
    `model.safetensors.index.json` in the Hugging Face layout.

    Quantized tensors come back in their original dtype (or `dtype`); kept tensors come back as stored.
    .npy and .npz cannot hold bfloat16, so bfloat16 tensors are written there as float32.
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
    with open_archive(archive_path) as archive:
        if not to_folder:
            check_output(output, [archive_path])
        if kind == ".npy" and len(archive.tensors) != 1:
            raise ConfigError(f"a .npy file holds one tensor, the archive has {len(archive.tensors)}; "
                              "write .safetensors or .npz", path=output)
        targets = []
        for t in archive.tensors:
            target = OUTPUT_DTYPES[dtype] if t.code in FLOAT_CODES and OUTPUT_DTYPES[dtype] else t.code
            targets.append("F32" if kind != ".safetensors" and target == "BF16" else target)
        total = sum(t.original_nbytes for t in archive.tensors)
        written: list[tuple[str, str, tuple[int, ...]]] = []
        done = 0

        def values(i: int) -> np.ndarray:
            nonlocal done
            t = archive.tensors[i]
            out = archive.decode(t).astype(DTYPES[targets[i]], copy=False)
            written.append((t.name, targets[i], t.shape))
            done += t.original_nbytes
            if progress:
                progress(done, total, t.name)
            return out

        if to_folder:
            size = _write_shards(archive, output, targets, limit, values)
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
                        for i, t in enumerate(archive.tensors):
                            info = zipfile.ZipInfo(f"{t.name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                            with zf.open(info, "w", force_zip64=True) as member:
                                np.lib.format.write_array(member, values(i), allow_pickle=False)
            size = os.path.getsize(output)
    return DequantizeReport(output, archive_path, written, size, time.perf_counter() - start)


def _write_shards(archive: Archive, folder: str, targets: list[str], limit: int,
                  values: Callable[[int], np.ndarray]) -> int:
    """Shards `model-0000i-of-0000N.safetensors` + `model.safetensors.index.json` (or a single
    `model.safetensors` when everything fits in one shard). Each file is written atomically; on
    failure the files this run wrote are removed again."""
    sizes = [t.size * DTYPES[c].itemsize for t, c in zip(archive.tensors, targets)]
    groups = _shard_groups(sizes, limit)
    created_folder = not os.path.exists(folder)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the output folder: {e.strerror}", path=folder) from None
    names = (["model.safetensors"] if len(groups) == 1 else
             [f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))])
    written: list[str] = []
    total = 0
    try:
        weight_map: dict[str, str] = {}
        for name, group in zip(names, groups):
            path = os.path.join(folder, name)
            writer = SafetensorsWriter(path)
            try:
                for i in group:
                    writer.add(archive.tensors[i].name, values(i))
                    weight_map[archive.tensors[i].name] = name
                total += writer.finish({"format": "pt"})
            except BaseException:
                writer.close()
                raise
            written.append(path)
        if len(groups) > 1:
            index = {"metadata": {"total_size": sum(sizes)}, "weight_map": dict(sorted(weight_map.items()))}
            path = os.path.join(folder, "model.safetensors.index.json")
            with atomic_output(path) as f:
                f.write((json.dumps(index, indent=2) + "\n").encode("utf-8"))
            written.append(path)
    except BaseException:
        for path in written:
            try:
                os.unlink(path)
            except OSError:
                pass
        if created_folder:
            try:
                os.rmdir(folder)
            except OSError:
                pass
        raise
    return total


@dataclass
class TensorStats:
    """What `inspect` shows of a plain weight tensor."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    elements: int
    nbytes: int
    min: float
    max: float
    mean: float
    std: float
    absmax: float
    zeros: int
    nonfinite: int


def tensor_stats(ref: TensorRef) -> TensorStats:
    with np.errstate(all="ignore"):  # hostile values (signalling NaN, 1e308) give inf/nan stats, not warnings
        return _tensor_stats(ref)


def _tensor_stats(ref: TensorRef) -> TensorStats:
    x = ref.load()
    n = ref.size
    if n == 0:
        return TensorStats(ref.name, ref.code, ref.shape, 0, ref.nbytes, *([float("nan")] * 5), 0, 0)
    v = x.astype(np.float64) if x.dtype != np.float64 else x
    finite = np.isfinite(v)
    nonfinite = int(n - np.count_nonzero(finite))
    f = v[finite] if nonfinite else v.reshape(-1)
    if f.size == 0:
        return TensorStats(ref.name, ref.code, ref.shape, n, ref.nbytes, *([float("nan")] * 5),
                           int(n - np.count_nonzero(x)), nonfinite)
    lo, hi = float(f.min()), float(f.max())
    return TensorStats(ref.name, ref.code, ref.shape, n, ref.nbytes, lo, hi, float(f.mean()), float(f.std()),
                       max(abs(lo), abs(hi)), int(n - np.count_nonzero(x)), nonfinite)


@dataclass
class Inspection:
    """`inspect` of one path: an archive's contents or a weight file's tensors."""

    path: str
    file_bytes: int
    archive: list[TensorReport] | None = None
    tensors: list[TensorStats] | None = None


def inspect_paths(paths: list[str], progress: Progress | None = None) -> list[Inspection]:
    """Describe each path: archives show method, params, stored bytes and stored metrics;
    weight files show per-tensor statistics (read one tensor at a time)."""
    out = []
    for path in paths:
        if os.path.isfile(path) and path.endswith(".safetensors") and is_archive(path):
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


@dataclass
class VerifyReport:
    """`verify` of one archive: the structure and the manifest checksum held (or opening would have
    raised), and `corrupt` names the tensors whose stored bytes do not match their checksum."""

    path: str
    file_bytes: int
    tensors: int
    stored_bytes: int
    corrupt: list[str]

    @property
    def ok(self) -> bool:
        return not self.corrupt


def verify_archive(path: str) -> VerifyReport:
    """Check an archive end to end without decoding: the container and manifest are validated on
    open (ArchiveError when malformed or when the manifest does not match its checksum), then every
    tensor's stored bytes are hashed and compared with the manifest's SHA-256.

    Example:
        >>> verify_archive("w.qnt.safetensors").ok
        True
    """
    with open_archive(path) as archive:
        corrupt = archive.verify()
        stored = sum(archive.stored_nbytes(t) for t in archive.tensors)
        return VerifyReport(path, os.path.getsize(path), len(archive.tensors), stored, corrupt)


@dataclass
class PQDotReport:
    """`pq-dot`: queries times the PQ-encoded weight rows, computed with lookup tables."""

    archive: str
    tensor: str
    result: np.ndarray  # [b, n], or [n] for a single [d] query
    backend: str
    output: str | None = None
    reference: str | None = None
    relative_error: float | None = None
    lut_ms: float | None = None
    dense_ms: float | None = None

    @property
    def speedup(self) -> float | None:
        return self.dense_ms / self.lut_ms if self.lut_ms and self.dense_ms is not None else None


def _single_tensor(path: str, what: str) -> np.ndarray:
    with Sources([path]) as sources:
        if len(sources.refs) != 1:
            raise InputError(f"{what} must hold exactly one array, it holds {len(sources.refs)}", path=path)
        ref = sources.refs[0]
        if not ref.is_float:
            raise InputError(f"{what} must be a float array, got {ref.code}", path=path, tensor=ref.name)
        x = to_float32(ref.load())
    if x.size and not (np.isfinite(x.min()) and np.isfinite(x.max())):
        raise InputError(f"{what} holds NaN or Inf values", path=path)
    return x


def _median_ms(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm-up: first calls compile kernels and fault pages in
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def pq_dot(archive_path: str, query_path: str, tensor: str | None = None, *, output: str | None = None,
           reference: str | None = None, repeat: int = 7, backend: str | None = None) -> PQDotReport:
    """`Q @ W_hat.T` for a PQ-encoded tensor W, by lookup tables, without reconstructing W.

    `query_path` holds a float array `[d]` or `[b, d]`. With `reference` (the original weights),
    also the exact product's relative error (Frobenius norm), and the LUT path timed against a
    dense float32 matmul of the reconstructed matrix in the same run (medians of `repeat`).

    Example:
        >>> r = pq_dot("m.pq.safetensors", "q.npy", "layer.0.weight", reference="model.safetensors")
        >>> r.result.shape, r.relative_error, r.speedup
    """
    from .lut import lookup_dot, resolve_backend
    from .methods.pq import pq_decode, pq_from_encoding

    if repeat < 1:
        raise ConfigError(f"--repeat must be at least 1, got {repeat}")
    if output is not None:
        check_output(output, [archive_path, query_path] + ([reference] if reference else []), ".npy")
    with open_archive(archive_path) as archive:
        pq_names = [t.name for t in archive.tensors if t.method == "pq"]
        if tensor is None:
            if len(pq_names) != 1:
                listed = ", ".join(pq_names[:5]) + (" ..." if len(pq_names) > 5 else "")
                raise ConfigError(f"the archive has {len(pq_names)} PQ tensors; name one with --tensor"
                                  + (f" ({listed})" if pq_names else ""), path=archive_path)
            tensor = pq_names[0]
        t = archive.by_name.get(tensor)
        if t is None:
            raise ConfigError("no such tensor in the archive", path=archive_path, tensor=tensor)
        if t.method != "pq":
            raise ConfigError(f"is stored with method {t.method}, not pq; pq-dot needs a pq-encode archive",
                              path=archive_path, tensor=tensor)
        pq = pq_from_encoding(archive.encoding(t), t.shape)
    queries = _single_tensor(query_path, "the query file")
    if queries.ndim not in (1, 2) or queries.shape[-1] != pq.d:
        raise InputError(f"queries must be [{pq.d}] or [b, {pq.d}] to match {tensor} "
                         f"({'x'.join(map(str, t.shape))}), got {list(queries.shape)}", path=query_path)
    used = resolve_backend(backend)
    result = lookup_dot(queries, pq, backend=used)
    report = PQDotReport(archive_path, tensor, result, used, output=output, reference=reference)
    if reference is not None:
        with Sources([reference]) as sources:
            refs = {r.name: r for r in sources.refs}
            if tensor not in refs:
                raise InputError("the reference weights have no such tensor", path=reference, tensor=tensor)
            if tuple(refs[tensor].shape) != tuple(t.shape):
                raise InputError(f"the reference tensor is {list(refs[tensor].shape)}, the archive's "
                                 f"{list(t.shape)}", path=reference, tensor=tensor)
            w = to_float32(refs[tensor].load()).reshape(pq.n, pq.d)
        q2 = queries.reshape(-1, pq.d)
        exact = q2.astype(np.float64) @ w.T.astype(np.float64)
        err = result.reshape(exact.shape).astype(np.float64) - exact
        norm = float(np.sqrt((exact ** 2).sum()))
        report.relative_error = float(np.sqrt((err ** 2).sum())) / norm if norm else None  # no scale to relate to
        w_hat = pq_decode(pq)
        report.dense_ms = _median_ms(lambda: q2 @ w_hat.T, repeat)
        report.lut_ms = _median_ms(lambda: lookup_dot(queries, pq, backend=used), repeat)
    if output is not None:
        with atomic_output(output) as f:
            np.lib.format.write_array(f, np.ascontiguousarray(result), allow_pickle=False)
    return report
