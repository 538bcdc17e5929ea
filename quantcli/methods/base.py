"""The method interface, the encoding record, and the grouping shared by scale-based methods."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, NamedTuple

import ml_dtypes
import numpy as np

from ..codecs import matrix_view
from ..errors import ArchiveError, ConfigError, InputError
from ..calibration.importance import TensorImportance
from ..metrics import ErrorStats, measure
from ..spec import Spec


# What a float array's stored values may be (`Method.value_rules`): the archive reader refuses
# anything else before decoding (`check_values`), so a re-signed archive cannot decode to NaN.
FINITE = "finite"            # no NaN, no Inf: the rule for every float array a method stores
NONNEGATIVE = "nonnegative"  # finite and >= 0: block scales (an absmax, or a range over the grid)
ANY = "any"                  # data stored as it was (kept tensors may hold NaN)


class ArrayLayout(NamedTuple):
    """One logical array of an encoding: what a method's `encode` returns and `decode` reads.

    `bits` is None for a plain array (stored as it is) and the code width for integer codes: an
    alphabet of 2**bits values, one code per element, dtype uint8 (bits <= 8) or uint16. How the
    archive stores an array (a codec of quantcli/codecs) is the business of archive/storage.py.
    """

    dtype: np.dtype
    shape: tuple[int, ...]
    bits: int | None = None


def check_values(arrays: dict[str, np.ndarray], rules: dict[str, str]) -> None:
    """Raise ArchiveError when a float array breaks its rule (`rules[role]`, FINITE when not
    named). One min and one max per array (NaN propagates through both), so no temporary the
    size of the array. Integer arrays (codes, zero points) are bounded by their method's decode."""
    for role, a in arrays.items():
        rule = rules.get(role, FINITE)
        if rule == ANY or not a.size or a.dtype.kind not in "fV":  # V: bfloat16 (ml_dtypes)
            continue
        with np.errstate(invalid="ignore"):
            lo, hi = float(a.min()), float(a.max())
        if rule == NONNEGATIVE and not (math.isfinite(hi) and 0 <= lo):  # NaN fails both
            raise ArchiveError(f"holds a negative or non-finite {role}")
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ArchiveError(f"holds a non-finite {role} value (NaN or Inf)")


def code_dtype(bits: int) -> np.dtype:
    """The dtype of unpacked `bits`-bit codes: uint8 up to 8 bits, else uint16."""
    return np.dtype(np.uint8 if bits <= 8 else np.uint16)


def code_layout(shape: tuple[int, ...], bits: int) -> ArrayLayout:
    """The layout of `bits`-bit integer codes, one per element of `shape`."""
    return ArrayLayout(code_dtype(bits), tuple(int(d) for d in shape), bits)


@dataclass(frozen=True)
class Encoding:
    """What a method makes of one tensor: named LOGICAL arrays (codes unpacked, one integer per
    code) plus JSON-able params. Frozen: a by-product of encoding (the error measured on the way)
    travels beside it, from `Method.encode_measured`."""

    method: str
    params: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def nbytes(self) -> int:
        """Bytes held in memory (logical arrays; the archive's size is `archive.storage.stored_nbytes`)."""
        return sum(int(a.nbytes) for a in self.arrays.values())


ALWAYS_READ = frozenset({"method", "seed", "codec"})  # a seed never hurts; any method's arrays can be coded


class Method(ABC):
    """A quantization method: pure numpy, no I/O.

    Subclasses set `name` and `options`, implement `_encode`, `decode`, `layout` and `params_for`,
    and may override `check_spec` and `encode_measured`.

    Validation: `check_spec` is the method's whole judgement of a Spec. The pipeline calls it once
    per spec while planning (before any tensor is read). The public entry points `encode` and
    `encode_measured` call it too, through this base class, so a library caller cannot reach a
    method's math with a spec it refuses (a few integer comparisons per tensor); the subclass
    hook `_encode` never validates.
    """

    name: ClassVar[str]
    # the Spec fields this method reads (the CLI, recipes and planner refuse the others)
    options: ClassVar[frozenset[str]] = frozenset()
    # role -> FINITE / NONNEGATIVE / ANY: what the reader accepts in each stored float array
    # (`check_values`); a float array not named must be FINITE (the rule for every method)
    value_rules: ClassVar[dict[str, str]] = {}
    # True: the archive always stores this method's arrays entropy-coded (its codes have no fixed width)
    entropy_coded: ClassVar[bool] = False
    # True: encode takes the tensor in any float dtype and raises NonFiniteError itself, so the
    # pipeline makes no float32 copy and no separate NaN pass (the bytes moved are the cost)
    reads_narrow_floats: ClassVar[bool] = False
    # True: `encode_importance` chooses something for the weighted error (--importance acts here)
    weighs_importance: ClassVar[bool] = False
    # True: the method stores a tensor as it is, under its own name and in its own dtype (its
    # params record nothing; the manifest's dtype is its layout): reports call such tensors kept
    kept: ClassVar[bool] = False
    # True: decode gives back the tensor's own bytes (keep, lossless): an archive of such tensors only
    # records the input file's header, to give the file back byte for byte (archive/original.py)
    exact: ClassVar[bool] = False

    def encode(self, x: np.ndarray, spec: Spec) -> Encoding:
        """Quantize `x` (float32, the tensor's own shape); refuses a spec `check_spec` refuses."""
        self.check_writable(tuple(np.shape(x)), spec)
        return self._encode(x, spec)[0]

    def check_writable(self, shape: tuple[int, ...], spec: Spec) -> None:
        """`check_spec`, then the reader's own limits at write time: the params this spec records
        for `shape` must pass `layout`, whose message the ConfigError repeats (so nothing is
        encoded, let alone written, that the reader would refuse). A few comparisons."""
        self.check_spec(spec)
        try:
            self.layout(tuple(shape), self.params_for(tuple(shape), spec))
        except ArchiveError as e:
            raise ConfigError(e.message) from None

    def encode_measured(self, x: np.ndarray, spec: Spec) -> tuple[Encoding, ErrorStats]:
        """The encoding of `x` and its error against `x` (what the pipeline records).

        By default the reconstruction `_encode` had at hand is measured, else the encoding is
        decoded; a method that measures while encoding (uniform) overrides this.
        """
        self.check_writable(tuple(np.shape(x)), spec)
        enc, recon = self._encode(x, spec)
        if recon is None:
            return enc, measure(x, self.decode(enc, tuple(np.shape(x))))
        return enc, measure(x, recon, consume=True)

    def encode_importance(self, x: np.ndarray, spec: Spec, imp: TensorImportance) -> Encoding:
        """The encoding of float32 `x` [out, in] chosen for the importance-weighted error (the
        layer's output error, importance.py) wherever this method chooses something: clipping
        scales, levels, rounding. A method with nothing to weight encodes as `encode` does."""
        self.check_writable(tuple(np.shape(x)), spec)
        return self._encode_importance(x, spec, imp)

    def _encode_importance(self, x: np.ndarray, spec: Spec, imp: TensorImportance) -> Encoding:
        return self._encode(x, spec)[0]

    def importance_spec(self, spec: Spec) -> Spec:
        """The setting `encode_importance` actually uses (its params are what the archive records)."""
        return spec

    @abstractmethod
    def _encode(self, x: np.ndarray, spec: Spec) -> tuple[Encoding, np.ndarray | None]:
        """(encoding, reconstruction when computed on the way, else None); `spec` is already checked."""

    @abstractmethod
    def decode(self, enc: Encoding, shape: tuple[int, ...]) -> np.ndarray:
        """Reconstruct float32 values of `shape` from an encoding (logical arrays)."""

    @abstractmethod
    def layout(self, shape: tuple[int, ...], params: dict[str, Any]) -> dict[str, ArrayLayout]:
        """The logical arrays an encoding of `shape` with `params` holds.

        Raises ArchiveError when params are out of their legal range.
        """

    @abstractmethod
    def params_for(self, shape: tuple[int, ...], spec: Spec, x: np.ndarray | None = None) -> dict[str, Any]:
        """The params `encode` records for a tensor of `shape`.

        Without `x`: predicted from the shape alone (--dry-run, the planner's sizes): every
        dtype as requested, before any fallback the data may force. With `x` (the whole tensor):
        exactly the params `encode(x, spec)` records, e.g. a float16 scale or codebook dtype that
        falls back to float32 because float16 cannot hold this tensor's values.
        """

    def describe(self, params: dict[str, Any]) -> str:
        """A short human label, e.g. 'int4 asym g64'."""
        return self.name

    def reads(self, spec: Spec) -> frozenset[str]:
        """The options this method reads with `spec`'s other settings (some depend on others:
        --group-size only with --granularity group)."""
        return self.options

    def refuse_unread(self, spec: Spec, given: set[str], where: str = "") -> None:
        """An option given explicitly that this method, so configured, would not read is a
        mistake: ConfigError naming it (`where` says where it was given, e.g. a recipe rule)."""
        ignored = sorted(set(given) - self.reads(spec) - ALWAYS_READ)
        if not ignored:
            return
        name = ignored[0]
        flag = f"--{name.replace('_', '-')}" if not where else f"{name!r}"
        if name in self.options and name == "group_size":
            why = "needs granularity group" if where else "needs --granularity group"
            message = f"{flag} {why}"
        elif name in self.options and name == "granularity":
            message = f"{flag} has no effect with normalize group (its groups are group_size values of a row)"
        elif name in self.options and name == "codebook_rows":
            message = f"{flag} needs granularity group"
        else:
            message = f"{flag} has no effect with {'method' if where else '--method'} {self.name}"
        raise ConfigError(f"{where}: {message}" if where else message)

    def check_spec(self, spec: Spec) -> None:
        """Raise ConfigError when `spec` asks for something this method cannot do (a method
        whose every setting is valid, like the float casts, keeps this default)."""
        return None

    # -- life-cycle hooks beyond encode/decode: what the pipeline, storage, the archive and the
    # planner ask a method instead of naming it

    def storage_hint(self, role: str, params: dict[str, Any]) -> StorageHint | None:
        """How entropy storage should store the logical array `role`: None for the default choice
        (rans for codes, lossless for plain arrays, each only where smaller), `StorageHint(None)`
        for the default fixed-rate codec only, or a codec name and its encode options, tried first."""
        return None

    def format_version(self, params: dict[str, Any]) -> int:
        """The archive format version an encoding with `params` needs (2: its arrays are always
        entropy-coded, so no version-1 reader could decode it)."""
        return 2 if self.entropy_coded else 1

    def resolve(self, specs: list[Spec], load: Callable[[int], np.ndarray],
                importance: Callable[[int], TensorImportance | None]) -> list[Spec]:
        """Model-wide resolution before anything is written: the specs of every tensor this method
        encodes, in plan order, made final (ecsq's --sqnr becomes one step for all of them).
        `load(i)` gives tensor i as float32 (one at a time), `importance(i)` its statistics when
        the method weighs them. The default has nothing to resolve."""
        return specs

    def planner_candidates(self, level: str) -> list[Spec]:
        """The settings of this method the planner measures per tensor at `level` ("fast",
        "default" or "all"); none by default."""
        return []

    def candidate_label(self, spec: Spec) -> str:
        """A candidate's display name, independent of the tensor (e.g. 'int4 asym g64')."""
        return self.describe(self.params_for((1, 1), spec))

    def candidate_family(self, spec: Spec) -> str:
        """The candidate without its bits (one line of a rate-distortion plot)."""
        grouping = f"g{spec.group_size}" if spec.granularity == "group" else spec.granularity
        return f"{self.name} {grouping}"

    def planner_spec(self, spec: Spec, shape: tuple[int, ...], x: np.ndarray) -> Spec:
        """The candidate as it will be encoded on this whole tensor `x`: where the data would
        make `encode` record other params than the shape predicts (float16 scales that overflow),
        the candidate asks for them outright, so a row sample encodes with the same params."""
        if self.params_for(shape, spec, x) != self.params_for(shape, spec):
            return spec.with_options(scale_dtype="float32")
        return spec

    def lookup_codes(self, enc: Encoding, shape: tuple[int, ...]) -> Any:
        """The encoding as quantcli/lut.py's lookup-table products read it (codebooks and codes),
        for the registry's LOOKUP method; ArchiveError for arrays that do not fit `shape`."""
        raise NotImplementedError(f"{self.name} has no lookup-table form")

    def step(self, params: dict[str, Any]) -> float | None:
        """The continuous knob of an encoding with `params` (a grid step), or None for methods
        whose settings are discrete. The planner re-solves such steps across tensors."""
        return None

    def at_step(self, spec: Spec, step: float, fine: bool) -> Spec:
        """`spec` at grid step `step`, with the method's rate-distortion-optimised rounding when
        `fine` (only for methods whose `step` is not None)."""
        raise NotImplementedError(f"{self.name} has no continuous step")


class StorageHint(NamedTuple):
    """A method's wish for one logical array under entropy storage: `codec` None keeps the array
    on its default fixed-rate codec; else that codec (with `options` for its encode) is tried
    first, and the default entropy codec after it."""

    codec: str | None
    options: dict[str, Any] = {}


def param(params: dict[str, Any], key: str, kind: type, *, lo: int | None = None, hi: int | None = None,
          choices: tuple[Any, ...] | None = None) -> Any:
    """Read and check one param from an archive's metadata (never trusted)."""
    if key not in params:
        raise ArchiveError(f"missing param {key!r}")
    value = params[key]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ArchiveError(f"param {key!r} must be an integer, got {value!r}")
    if kind is str and not isinstance(value, str):
        raise ArchiveError(f"param {key!r} must be a string, got {value!r}")
    if kind is bool and not isinstance(value, bool):
        raise ArchiveError(f"param {key!r} must be true or false, got {value!r}")
    if lo is not None and value < lo or hi is not None and value > hi:
        raise ArchiveError(f"param {key!r} = {value!r} is outside {lo}..{hi}")
    if choices is not None and value not in choices:
        raise ArchiveError(f"param {key!r} = {value!r} is not one of {', '.join(map(str, choices))}")
    return value


# ---------------------------------------------------------------------------------------------
# Grouping: channel = rows of the [shape[0], -1] view; groups run along the last axis of that
# view, the last group may be partial (padded with zeros while computing, never stored).


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """The [rows, cols] view of a tensor: rows = shape[0], cols = the rest (a scalar is 1x1); the
    one definition is the codecs' (docs/FORMAT.md section 3), which the context model shares."""
    return matrix_view(shape)


def group_width(group_size: int, cols: int) -> int:
    """The width of a row's groups: `group_size`, or the row itself when the group is wider. A
    group never extends past its row, so nothing is padded beyond the row (a 1-D tensor, viewed
    as N rows of 1 value, is never blown up to N x group_size) and a huge group_size, legal or
    forged, allocates nothing more than the row."""
    return max(1, min(int(group_size), int(cols)))


def block_grid(shape: tuple[int, ...], granularity: str, group_size: int) -> tuple[int, int]:
    """(number of blocks, block width) for a granularity; the scale array has one entry per block."""
    rows, cols = matrix_shape(shape)
    if granularity == "tensor":
        return 1, rows * cols
    if granularity == "channel":
        return rows, cols
    return rows * (-(-cols // group_size) if cols else 0), min(group_size, cols) if cols else group_size


def scale_shape(shape: tuple[int, ...], granularity: str, group_size: int) -> tuple[int, ...]:
    """Shape of the per-block arrays (scales, zero points): (1,), (rows,) or (rows, groups)."""
    rows, cols = matrix_shape(shape)
    if granularity == "tensor":
        return (1,)
    if granularity == "channel":
        return (rows,)
    return (rows, -(-cols // group_size) if cols else 0)


def to_blocks(x: np.ndarray, granularity: str, group_size: int) -> np.ndarray:
    """A [blocks, width] float32 array: a view when possible, zero-padded when the last group is partial."""
    rows, cols = matrix_shape(x.shape)
    m = x.reshape(rows, cols)
    if granularity == "tensor":
        return m.reshape(1, -1)
    if granularity == "channel":
        return m
    group_size = group_width(group_size, cols)
    groups = -(-cols // group_size)
    width = groups * group_size
    if width != cols:
        padded = np.zeros((rows, width), dtype=m.dtype)
        padded[:, :cols] = m
        m = padded
    return m.reshape(rows * groups, group_size)


def from_blocks(blocks: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of `to_blocks`: drop the padding and give the tensor its shape back."""
    rows, cols = matrix_shape(shape)
    if rows * cols == 0:
        return np.zeros(shape, blocks.dtype)
    m = blocks.reshape(rows, -1)
    if m.shape[1] != cols:
        m = m[:, :cols]
    return np.ascontiguousarray(m).reshape(shape)


def block_min_max(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-block (min, max). numpy reduces short rows slowly (about 2 ns a value for 64-wide
    groups); transposing cache-sized chunks first lets min and max run vectorised across blocks,
    which measured 1.7x faster for group-64 blocks."""
    nblocks, width = blocks.shape
    if width == 0:
        zeros = np.zeros(nblocks, np.float32)
        return zeros, zeros.copy()
    if width >= 512 or nblocks < 64:
        return blocks.min(axis=1), blocks.max(axis=1)
    lo = np.empty(nblocks, blocks.dtype)
    hi = np.empty(nblocks, blocks.dtype)
    step = max(1, (1 << 20) // (width * blocks.itemsize))
    for i in range(0, nblocks, step):  # a loop over ~1 MB chunks, not over values
        chunk = np.ascontiguousarray(blocks[i:i + step].T)
        chunk.min(axis=0, out=lo[i:i + step])
        chunk.max(axis=0, out=hi[i:i + step])
    return lo, hi


_BF16 = np.dtype(ml_dtypes.bfloat16)


def to_float32(x: np.ndarray) -> np.ndarray:
    """float32 values of a float array (float32 input is returned as it is). bfloat16 is the top
    half of a float32, so one shift of its bits is exact and ~10x faster than a generic cast."""
    if x.dtype == np.float32:
        return x
    if x.dtype == _BF16:
        return np.left_shift(x.view(np.uint16), 16, dtype=np.uint32).view(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # float64 beyond float32's range: inf, refused later
        return x.astype(np.float32)


def check_finite_input(x: np.ndarray) -> None:
    """Library entry points called directly (not through the pipeline, which checks first)."""
    if x.size and not (np.isfinite(x.min()) and np.isfinite(x.max())):
        raise InputError("holds NaN or Inf values")
