"""Calibration statistics (`--importance FILE`): which weights matter for a layer's output.

A weight W [out, in] used as y = x @ W.T changes the output by dW @ x, whose mean square over
calibration tokens is sum_i dW_i G dW_i^T with G = mean(x x^T). The diagonal of G alone (the mean
of x_j^2, what llama.cpp's imatrix holds) weights column j of the error by G_jj; for a lookup
table (an embedding), row i is read by a fraction r_i of the tokens, so its error counts r_i
times. The file (docs/IMPORTANCE.md) is safetensors with, per weight NAME:

    NAME        [in]      mean x_j^2
    NAME.gram   [in, in]  mean x x^T (symmetric, positive semi-definite; enables compensation)
    NAME.rows   [out]     fraction of tokens reading each row (lookup tables)
    NAME.sensitivity  []  the model output's relative change per unit of NAME's relative error
                          (any tensor of 2 or more dimensions; `quant collect-importance --sensitivity`)

Everything is validated when the file is opened (one entry in memory at a time), so a malformed
file is refused before anything is encoded. Weights are normalised to a mean of 1, so a weighted
squared error is in the units of the plain one and figures of different tensors add up.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from ..errors import InputError
from ..io.safetensors import FLOAT_CODES, SafetensorsFile

FORMAT = "quant-importance"
PARAM = "importance"  # the param recording, per tensor, the digest of the statistics it was encoded with
SUFFIXES = (".gram", ".rows")
SENSITIVITY = ".sensitivity"
SYMMETRY_TOLERANCE = 1e-4  # |G - G^T| <= this x max|G|: float32 accumulation noise, not asymmetry
DIAGONAL_TOLERANCE = 1e-3  # NAME and the diagonal of NAME.gram must agree to this relative error


@dataclass(frozen=True)
class TensorImportance:
    """One tensor's statistics, float64, each normalised to a mean of 1 (None: not given).

    cols [in]: the weight of each column's squared error (the Gram diagonal when a Gram is given);
    gram [in, in]: the full second moment, scaled like cols; rows [out]: the weight of each row."""

    cols: np.ndarray | None
    gram: np.ndarray | None
    rows: np.ndarray | None

    def element_weights(self, shape: tuple[int, ...]) -> np.ndarray:
        """float32 [rows, cols] of the tensor's matrix view: row weight x column weight."""
        r, c = shape
        rw = np.ones(r) if self.rows is None else self.rows
        cw = np.ones(c) if self.cols is None else self.cols
        return np.outer(rw, cw).astype(np.float32)

    def weighted_sum(self, d: np.ndarray) -> float:
        """The weighted squared size of the 2-D d: sum_i r_i d_i G d_i^T with a
        Gram, else sum_ij r_i c_j d_ij^2. For an error, the mean square output error it causes
        (in units normalised as the class says)."""
        m = np.asarray(d, np.float64)
        if self.gram is not None:
            per_row = np.einsum("ij,ij->i", m @ self.gram, m)
        elif self.cols is not None:
            per_row = (m * m) @ self.cols
        else:
            per_row = np.einsum("ij,ij->i", m, m)
        if self.rows is not None:
            per_row = per_row * self.rows
        return float(max(per_row.sum(), 0.0))  # a PSD form is >= 0; rounding may dip below

    @property
    def kind(self) -> str:
        """What the statistics hold, for reports: 'gram', 'diag', 'rows' or 'diag+rows'."""
        parts = ["gram" if self.gram is not None else "diag" if self.cols is not None else "",
                 "rows" if self.rows is not None else ""]
        return "+".join(p for p in parts if p)


def _positive_semidefinite(gram: np.ndarray) -> bool:
    """Whether a symmetric matrix is positive semi-definite up to float32 accumulation noise: its
    Cholesky factorisation exists once 1e-5 of its largest diagonal entry is added."""
    top = float(np.abs(np.diagonal(gram)).max(initial=0.0))
    try:
        np.linalg.cholesky(gram + np.eye(len(gram)) * (1e-5 * top if top > 0 else 1.0))
    except np.linalg.LinAlgError:
        return False
    return True


def _normalised(v: np.ndarray) -> np.ndarray:
    return v / v.mean()


class Importance:
    """An opened, validated importance file, matched to the tensors of the inputs.

    `for_tensor(name)` reads that tensor's entries again (the file may be large: one tensor's
    statistics in memory at a time), so an Importance is cheap to keep and to send to worker
    processes (it pickles as its path, digest and names)."""

    def __init__(self, path: str, digest: str, tensors: dict[str, tuple[str, ...]], tokens: int | None,
                 sensitivity: dict[str, float] | None = None):
        self.path = path
        self.digest = digest
        self.tensors = tensors  # tensor name -> its entry names in the file (sensitivities apart)
        self.tokens = tokens
        self.sensitivity = sensitivity or {}  # tensor name -> NAME.sensitivity (the planner's objective weights)

    @classmethod
    def open(cls, path: str | os.PathLike[str], shapes: dict[str, tuple[int, ...]]) -> "Importance":
        """Validate `path` against the input tensors' `shapes` (every tensor of the inputs, by
        name): InputError naming the file and the entry for anything malformed or matching no
        tensor. Values are read and checked here, one entry at a time."""
        path = os.fspath(path)
        with SafetensorsFile(path) as f:
            meta = f.metadata
            if meta.get("format", FORMAT) != FORMAT:
                raise InputError(f"__metadata__ format is {meta['format']!r}, not {FORMAT!r}", path=path)
            tokens = _tokens(meta.get("tokens"), path)
            groups: dict[str, list[str]] = {}
            sensitivity: dict[str, float] = {}
            for name in f.entries:
                if name.endswith(SENSITIVITY) and name[:-len(SENSITIVITY)] in shapes:
                    sensitivity[name[:-len(SENSITIVITY)]] = _sensitivity(f, name, shapes[name[:-len(SENSITIVITY)]])
                    continue
                base = next((name[:-len(s)] for s in SUFFIXES if name.endswith(s) and name[:-len(s)] in shapes),
                            name)
                if base not in shapes:
                    raise InputError("names no tensor of the inputs", path=path, tensor=name)
                groups.setdefault(base, []).append(name)
            if not groups and not sensitivity:
                raise InputError("holds no importance entries", path=path)
            for base, names in groups.items():
                with np.errstate(all="ignore"):  # 1e308 overflows to inf: refused as too large, not warned about
                    _load(f, base, shapes[base], names, tokens)  # validates values; the result is dropped
        return cls(path, _sha256(path), {k: tuple(sorted(v)) for k, v in groups.items()}, tokens, sensitivity)

    def for_tensor(self, name: str, shape: tuple[int, ...]) -> TensorImportance | None:
        """The tensor's statistics, or None when the file has none for it."""
        names = self.tensors.get(name)
        if not names:
            return None
        with SafetensorsFile(self.path) as f:
            if any(n not in f.entries for n in names):
                raise InputError("changed since it was opened", path=self.path, tensor=name)
            with np.errstate(all="ignore"):
                return _load(f, name, shape, list(names), self.tokens)

    @property
    def record(self) -> str:
        """What a tensor encoded with these statistics records in its params (reproducibility)."""
        return f"sha256:{self.digest}"

    def unmatched(self, names: Iterable[str]) -> list[str]:
        """Those of `names` the file has no statistics for (reported as a partial match)."""
        return [n for n in names if n not in self.tensors]


def _tokens(text: str | None, path: str) -> int | None:
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 19:  # '²' is a digit to str.isdigit
        raise InputError(f"__metadata__ tokens must be a non-negative integer, got {text!r}", path=path)
    return int(text)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read(f: SafetensorsFile, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A float entry of exactly `shape` as float64, finite and (for vectors) non-negative."""
    e = f.entries[name]
    if e.dtype not in FLOAT_CODES:
        raise InputError(f"dtype {e.dtype} is not a float type", path=f.path, tensor=name)
    if tuple(e.shape) != shape:
        raise InputError(f"shape {list(e.shape)} does not fit the tensor (needs {list(shape)})", path=f.path,
                         tensor=name)
    if not math.prod(e.shape):
        raise InputError(f"is empty (shape {list(e.shape)}): statistics need values", path=f.path, tensor=name)
    v = f.read(name).astype(np.float64)
    if not np.isfinite(v).all():
        raise InputError("holds NaN or Inf values", path=f.path, tensor=name)
    return v


def _sensitivity(f: SafetensorsFile, name: str, shape: tuple[int, ...]) -> float:
    """NAME.sensitivity: one finite, non-negative float scalar, for a tensor of 2 or more dimensions."""
    if len(shape) < 2:
        raise InputError(f"a sensitivity is for a tensor of 2 or more dimensions; the tensor has shape {list(shape)}",
                         path=f.path, tensor=name)
    e = f.entries[name]
    if e.dtype not in FLOAT_CODES:
        raise InputError(f"dtype {e.dtype} is not a float type", path=f.path, tensor=name)
    if int(np.prod(e.shape)) != 1 or len(e.shape) > 1:
        raise InputError(f"shape {list(e.shape)} is not one scalar (needs [] or [1])", path=f.path, tensor=name)
    value = float(f.read(name).astype(np.float64).reshape(()))
    if not math.isfinite(value):
        raise InputError("is NaN or Inf", path=f.path, tensor=name)
    if value < 0:
        raise InputError(f"is negative ({value:g}); a sensitivity is >= 0", path=f.path, tensor=name)
    return value


def smoothed_rows(fractions: np.ndarray, tokens: int | None) -> np.ndarray:
    """Row weights from the fractions of tokens reading each row, with half a token added to every
    row (of `tokens` when known, else half the smallest non-zero fraction): a row the calibration
    text never read still weighs something, since other text will read it."""
    if tokens:
        return (fractions * tokens + 0.5) / (tokens + 0.5 * fractions.size)
    return fractions + 0.5 * float(fractions[fractions > 0].min())


def _load(f: SafetensorsFile, base: str, shape: tuple[int, ...], names: list[str],
          tokens: int | None = None) -> TensorImportance:
    """Read and check one tensor's entries (see the module docstring for the rules)."""
    if len(shape) != 2:
        raise InputError(f"importance needs a 2-D weight [out, in]; the tensor has shape {list(shape)}",
                         path=f.path, tensor=base)
    rows, cols = shape
    diag = gram = row_w = None
    if base in names:
        diag = _read(f, base, (cols,))
        if diag.min() < 0:
            raise InputError("holds a negative mean square", path=f.path, tensor=base)
    if base + ".gram" in names:
        gname = base + ".gram"
        gram = _read(f, gname, (cols, cols))
        scale = float(np.abs(gram).max()) if gram.size else 0.0
        if gram.size and float(np.abs(gram - gram.T).max()) > SYMMETRY_TOLERANCE * scale:
            raise InputError("is not symmetric", path=f.path, tensor=gname)
        gram = (gram + gram.T) / 2
        g_diag = np.diagonal(gram).copy()
        if g_diag.min(initial=0.0) < 0:
            raise InputError("has a negative diagonal", path=f.path, tensor=gname)
        if gram.size and not _positive_semidefinite(gram):
            raise InputError("is not positive semi-definite (a mean of x x^T is)", path=f.path, tensor=gname)
        if diag is not None and not np.allclose(diag, g_diag, rtol=DIAGONAL_TOLERANCE,
                                                atol=DIAGONAL_TOLERANCE * float(g_diag.max(initial=0.0))):
            raise InputError(f"disagrees with the diagonal of {gname}", path=f.path, tensor=base)
        diag = g_diag
    if base + ".rows" in names:
        rname = base + ".rows"
        row_w = _read(f, rname, (rows,))
        if row_w.min() < 0:
            raise InputError("holds a negative fraction", path=f.path, tensor=rname)
        if not row_w.max() > 0:
            raise InputError("holds only zeros", path=f.path, tensor=rname)
        row_w = row_w / row_w.max()  # fractions of a whole, without overflowing on the way
        row_w = smoothed_rows(row_w / row_w.sum(), tokens)
        if not (np.isfinite(row_w).all() and row_w.mean() > 0):
            raise InputError("holds values too large to use", path=f.path, tensor=rname)
        row_w = _normalised(row_w)
    if diag is not None:
        mean = float(diag.mean()) if diag.size else 0.0
        if not (mean > 0 and math.isfinite(mean)):
            raise InputError("holds only zeros" if mean == 0 else "holds values too large to use",
                             path=f.path, tensor=base if base in names else base + ".gram")
        diag = diag / mean
        if gram is not None:
            gram = gram / mean
    return TensorImportance(diag, gram, row_w)
