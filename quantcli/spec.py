"""What to do with one tensor: a frozen, validated set of method options."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from enum import Enum
from typing import Any

from .errors import ConfigError
from .methods import DEFAULT as DEFAULT_METHOD


class Scheme(str, Enum):
    """symmetric: zero maps to zero, no zero point; asymmetric: a zero point per block."""

    symmetric = "symmetric"
    asymmetric = "asymmetric"


class Granularity(str, Enum):
    """One scale per tensor, per output channel (row), or per group of values along a row."""

    tensor = "tensor"
    channel = "channel"
    group = "group"


class Normalize(str, Enum):
    """kmeans: 'group' learns one codebook over values normalised by per-group absmax scales."""

    none = "none"
    group = "group"


class StorageDtype(str, Enum):
    """How scales and codebooks are stored; auto picks per method (docs/METHODS.md)."""

    auto = "auto"
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


class Codec(str, Enum):
    """How codes are stored: bitpack (fixed rate, what LUT kernels read) or entropy (smaller files)."""

    bitpack = "bitpack"
    entropy = "entropy"


class OutputDtype(str, Enum):
    """dequantize: the dtype quantized tensors come back in; original = as before quantizing."""

    original = "original"
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


def values(choices: type[Enum]) -> tuple[str, ...]:
    return tuple(c.value for c in choices)


SCHEMES = values(Scheme)
GRANULARITIES = values(Granularity)
NORMALIZE = values(Normalize)
SCALE_DTYPES = values(StorageDtype)
OUTPUT_DTYPES = values(OutputDtype)
CODECS = values(Codec)


MAX_WHOLE = 2**31 - 1  # group sizes, dims, counts, iterations
MAX_SEED = 2**63 - 1
_STRINGS = {"method", "scheme", "granularity", "scale_dtype", "normalize", "codec"}
_OPTIONAL = {"subvector_dim", "subspaces", "step", "sqnr", "step_rms"}
_FLOATS = {"step", "sqnr", "step_rms"}


@dataclass(frozen=True)
class Spec:
    """Options for one tensor. Each method reads the fields it needs and records them in its params.

    The default is the safe one: 8-bit symmetric uniform, one scale per output channel.
    """

    method: str = DEFAULT_METHOD
    bits: int = 8
    scheme: str = "symmetric"
    granularity: str = "channel"
    group_size: int = 128
    scale_dtype: str = "auto"
    seed: int = 0
    # clustering and product quantization
    vector_dim: int = 4
    subvector_dim: int | None = None
    subspaces: int | None = None
    centroids: int = 256
    iters: int = 25
    scale_search: bool = False
    normalize: str = "none"  # kmeans: "group" learns one codebook over group-absmax-normalised values
    codebook_rows: int = 128  # kmeans --granularity group: rows sharing one codebook
    codec: str = "bitpack"  # how the archive stores codes: bitpack (fixed rate) or entropy
    # ecsq: the grid step, or the SQNR (dB, all quantized tensors together) that chooses one step
    step: float | None = None
    sqnr: float | None = None
    step_rms: float | None = None  # ecsq: the step as a fraction of each tensor's RMS
    trellis: bool = False  # ecsq: dependent quantization (two interleaved grids, a Viterbi search per row)

    def __post_init__(self) -> None:
        self._check_types()
        if not 1 <= self.bits <= 16:
            raise ConfigError(f"--bits must be a whole number from 1 to 16, got {self.bits}")
        if self.scheme not in SCHEMES:
            raise ConfigError(f"--scheme must be one of {', '.join(SCHEMES)}, got {self.scheme!r}")
        if self.granularity not in GRANULARITIES:
            raise ConfigError(
                f"--granularity must be one of {', '.join(GRANULARITIES)}, got {self.granularity!r}"
            )
        if self.group_size < 1:
            raise ConfigError(f"--group-size must be at least 1, got {self.group_size}")
        if self.scale_dtype not in SCALE_DTYPES:
            raise ConfigError(f"--scale-dtype must be one of {', '.join(SCALE_DTYPES)}, got {self.scale_dtype!r}")
        if self.vector_dim < 1:
            raise ConfigError(f"--vector-dim must be at least 1, got {self.vector_dim}")
        if self.subvector_dim is not None and self.subvector_dim < 1:
            raise ConfigError(f"--subvector-dim must be at least 1, got {self.subvector_dim}")
        if self.subspaces is not None and self.subspaces < 1:
            raise ConfigError(f"--subspaces must be at least 1, got {self.subspaces}")
        if self.subspaces is not None and self.subvector_dim is not None:
            raise ConfigError("give --subspaces or --subvector-dim, not both")
        if not 2 <= self.centroids <= 65536:
            raise ConfigError(f"--centroids must be from 2 to 65536, got {self.centroids}")
        if self.iters < 1:
            raise ConfigError(f"--iters must be at least 1, got {self.iters}")
        if self.codebook_rows < 1:
            raise ConfigError(f"--codebook-rows must be at least 1, got {self.codebook_rows}")
        if self.step is not None and self.step <= 0:
            raise ConfigError(f"--step must be positive, got {self.step}")
        if self.step_rms is not None and self.step_rms <= 0:
            raise ConfigError(f"--step-rms must be positive, got {self.step_rms}")
        if sum(v is not None for v in (self.step, self.sqnr, self.step_rms)) > 1:
            raise ConfigError("give one of --step, --step-rms and --sqnr")
        if self.codec not in CODECS:
            raise ConfigError(f"--codec must be one of {', '.join(CODECS)}, got {self.codec!r}")
        if self.normalize not in NORMALIZE:
            raise ConfigError(f"--normalize must be one of {', '.join(NORMALIZE)}, got {self.normalize!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"--seed must be a non-negative whole number, got {self.seed}")

    def _check_types(self) -> None:
        """Every field has its declared type, so recipes (TOML floats, NaN, inf, booleans) and the
        command line meet the same checks: whole numbers are ints (not bools, not 2.0), within
        MAX_WHOLE so that no size computed from them overflows."""
        for f in fields(self):
            value, option = getattr(self, f.name), "--" + f.name.replace("_", "-")
            if f.name in _STRINGS:
                if not isinstance(value, str):
                    raise ConfigError(f"{option} must be a string, got {value!r}")
            elif f.name in _FLOATS:
                if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                          or not math.isfinite(value)):
                    raise ConfigError(f"{option} must be a finite number, got {value!r}")
            elif f.name in ("scale_search", "trellis"):
                if not isinstance(value, bool):
                    raise ConfigError(f"{option} must be true or false, got {value!r}")
            elif value is not None or f.name not in _OPTIONAL:
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ConfigError(f"{option} must be a whole number, got {value!r}")
                limit = MAX_SEED if f.name == "seed" else MAX_WHOLE
                if value > limit:
                    raise ConfigError(f"{option} must be at most {limit}, got {value}")

    def with_options(self, **changes: Any) -> "Spec":
        """A copy with some fields changed (validated again)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(f"unknown option(s): {', '.join(unknown)}")
        return replace(self, **changes)
