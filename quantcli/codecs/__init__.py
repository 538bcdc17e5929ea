"""Codecs: how a stored array's logical values become bytes, and back. Nothing imports this yet.

Each codec is an object in CODECS, looked up by the name an archive records next to the array:

    codec = get(name)
    data, params = codec.encode(array, **options)   # bytes and a JSON-serialisable dict
    n = codec.max_decoded_nbytes(params, shape)      # check before decoding: raises CodecError
    array = codec.decode(data, params, dtype, shape) # exactly `shape`, or CodecError

Contract every codec keeps (so the archive can treat them alike):
- encode is deterministic: the same array (and options) gives the same bytes and params.
- params hold plain ints, strings, lists and dicts, including the stored byte count(s), so
  `max_decoded_nbytes(params, shape)` can tell from the params alone whether `shape` is justified:
  it raises CodecError when the bytes cannot hold that many values (every codec bounds its
  expansion: see MAX_RATIO / MAX_CODES_PER_WORD) and otherwise returns the bytes of the decoded
  values in the codec's natural dtype (decode's peak use is at most twice that plus the result).
- decode validates params and the byte length against `shape` before allocating from `shape`,
  and raises CodecError (a ValueError and an ArchiveError) for anything malformed.

Codecs here:
  rans      order-0 interleaved rANS for integer codes 0 <= c < alphabet <= 2**16 (entropy.py);
            encode option `alphabet` (default max(code) + 1, at least 2).
  crans     context-modelled rANS for the integer codes of a matrix (context.py): contexts from the
            DQ state and the row's scale so far; encode options `alphabet`, `offset`, `dq`.
  lossless  byte planes for any 1/2/4/8-byte dtype, floats rotated so the exponent has its own
            plane; each plane raw, rANS or zstd (lossless.py). Bit-exact, NaN payloads included.
A `bitpack` codec (today's quantcli.codecs.bitpack) plugs in by subclassing Codec and calling register().
Byte layouts: docs/FORMAT.md section 6.
"""

from __future__ import annotations

import math
from typing import Any
from abc import ABC, abstractmethod

import numpy as np

from . import bounds, context, entropy, lossless
from .errors import CodecError

__all__ = ["Codec", "CodecError", "CODECS", "get", "register", "RansCodec", "CransCodec", "LosslessCodec"]


def _count(shape) -> int:
    """Element count of a shape given as a tuple/list of non-negative ints (0-d: 1)."""
    if not isinstance(shape, (tuple, list)) or not all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise CodecError(f"shape must be a tuple of non-negative integers, got {shape!r}")
    return math.prod(int(d) for d in shape)


def _nbytes(data) -> int:
    return memoryview(data).cast("B").nbytes


class Codec(ABC):
    """One way of turning an array into bytes; see the module docstring for the contract."""

    name: str

    @abstractmethod
    def encode(self, array: np.ndarray, **options: Any) -> tuple[bytes, dict]:
        """(bytes, params) for `array` in C order."""

    @abstractmethod
    def decode(self, data, params: dict, dtype, shape) -> np.ndarray:
        """The array of `dtype` and `shape` that `data` encodes; CodecError if it does not."""

    @abstractmethod
    def max_decoded_nbytes(self, params: dict, shape) -> int:
        """Bytes of the decoded values for `shape`; CodecError if the params cannot justify it."""


class RansCodec(Codec):
    """Integer codes through entropy.py; params = entropy params plus the stored `nbytes`."""

    name = "rans"

    def encode(self, array: np.ndarray, **options: Any) -> tuple[bytes, dict]:
        """options: `alphabet` (default max(code) + 1, at least 2)."""
        alphabet = options.get("alphabet")
        arr = np.asarray(array)
        if alphabet is None:
            alphabet = max(2, int(arr.max()) + 1) if arr.size else 2
        data, params = entropy.encode(arr, alphabet)
        return data, {**params, "nbytes": len(data)}

    def _split(self, params: dict) -> tuple[dict, int]:
        if not isinstance(params, dict) or "nbytes" not in params:
            raise CodecError("rans params need nbytes")
        inner = {k: v for k, v in params.items() if k != "nbytes"}
        nbytes = params["nbytes"]
        if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
            raise CodecError(f"rans nbytes must be a non-negative integer, got {nbytes!r}")
        return inner, nbytes

    def max_decoded_nbytes(self, params: dict, shape) -> int:
        inner, nbytes = self._split(params)
        count = _count(shape)
        if count > entropy.max_decoded_count(nbytes, inner):
            raise CodecError(f"{count} codes exceed what {nbytes} bytes of rans stream can hold")
        bounds.check_lanes(inner["lanes"], count, entropy.CODES_PER_LANE)
        return count * entropy.output_dtype(inner["alphabet"]).itemsize

    def decode(self, data, params: dict, dtype, shape) -> np.ndarray:
        inner, nbytes = self._split(params)
        dtype = np.dtype(dtype)
        if dtype.kind not in "ui" or np.iinfo(dtype).max < inner.get("alphabet", 0) - 1:
            raise CodecError(f"dtype {dtype} cannot hold codes of alphabet {inner.get('alphabet')}")
        if _nbytes(data) != nbytes:
            raise CodecError(f"rans stream has {_nbytes(data)} bytes, params say {nbytes}")
        self.max_decoded_nbytes(params, shape)
        return entropy.decode(data, inner, _count(shape)).astype(dtype, copy=False).reshape(tuple(shape))


def matrix_view(shape) -> tuple[int, int]:
    """(rows, cols) of a shape as docs/FORMAT.md section 3 views it: s0 x the rest; 1-D (n, 1); 0-d (1, 1)."""
    shape = tuple(int(d) for d in shape)
    if not shape:
        return 1, 1
    return shape[0], math.prod(shape[1:])


class CransCodec(Codec):
    """Codes of a matrix through context.py; params = {"nbytes"} (the rest is in the stream)."""

    name = "crans"

    def encode(self, array: np.ndarray, **options: Any) -> tuple[bytes, dict]:
        """options: `alphabet` (default max(code) + 1, at least 2), `offset` (k = code + offset,
        default 0), `dq` (codes of the DQ trellis: try the quantizer split, default False)."""
        arr = np.asarray(array)
        alphabet = options.get("alphabet")
        if alphabet is None:
            alphabet = max(2, int(arr.max()) + 1) if arr.size else 2
        rows, cols = matrix_view(arr.shape)
        data = context.encode(arr.reshape(rows, cols), alphabet, int(options.get("offset", 0)),
                              bool(options.get("dq", False)))
        return data, {"nbytes": len(data)}

    def _nbytes(self, params: dict) -> int:
        if not isinstance(params, dict) or set(params) != {"nbytes"}:
            raise CodecError("crans params must be exactly {nbytes}")
        nbytes = params["nbytes"]
        if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
            raise CodecError(f"crans nbytes must be a non-negative integer, got {nbytes!r}")
        return nbytes

    def max_decoded_nbytes(self, params: dict, shape) -> int:
        nbytes = self._nbytes(params)
        count = _count(shape)
        if count == 0 or count > context.max_decoded_count(nbytes):
            raise CodecError(f"{count} codes do not fit what {nbytes} bytes of crans stream can hold")
        return count * 2

    def decode(self, data, params: dict, dtype, shape) -> np.ndarray:
        nbytes = self._nbytes(params)
        if _nbytes(data) != nbytes:
            raise CodecError(f"crans stream has {_nbytes(data)} bytes, params say {nbytes}")
        self.max_decoded_nbytes(params, shape)
        dtype = np.dtype(dtype)
        rows, cols = matrix_view(shape)
        bounds.check_lanes(context.parse_header(np.frombuffer(data, np.uint8))[3], rows * cols, context.CODES_PER_LANE,
                           rows)
        codes = context.decode(data, rows, cols)
        if dtype.kind not in "ui" or (codes.size and int(codes.max()) > np.iinfo(dtype).max):
            raise CodecError(f"dtype {dtype} cannot hold the decoded codes")
        return codes.astype(dtype, copy=False).reshape(tuple(shape))


class LosslessCodec(Codec):
    """Any 1/2/4/8-byte dtype, bit-exact, through lossless.py."""

    name = "lossless"

    def encode(self, array: np.ndarray, **options: Any) -> tuple[bytes, dict]:
        return lossless.encode(array)

    def max_decoded_nbytes(self, params: dict, shape) -> int:
        planes = params.get("planes") if isinstance(params, dict) else None
        if not isinstance(planes, list) or len(planes) not in (1, 2, 4, 8):
            raise CodecError("lossless params need 1, 2, 4 or 8 planes")
        count = _count(shape)
        dtype = np.dtype(f"u{len(planes)}") if params.get("transform") == "none" else {
            2: np.dtype(np.float16), 4: np.dtype(np.float32), 8: np.dtype(np.float64)
        }.get(len(planes), np.dtype(np.uint8))
        if count > lossless.max_decoded_count(params, dtype):
            raise CodecError(f"{count} elements exceed what the lossless planes can hold")
        return count * len(planes)

    def decode(self, data, params: dict, dtype, shape) -> np.ndarray:
        return lossless.decode(data, params, dtype, _count(shape)).reshape(tuple(shape))


CODECS: dict[str, Codec] = {}


def register(codec: Codec) -> Codec:
    """Add `codec` under codec.name (replacing one of the same name)."""
    CODECS[codec.name] = codec
    return codec


def get(name: str) -> Codec:
    """The codec recorded as `name`; CodecError for an unknown name."""
    try:
        return CODECS[name]
    except (KeyError, TypeError):
        raise CodecError(f"unknown codec {name!r}; known: {', '.join(sorted(CODECS))}") from None


register(RansCodec())
register(CransCodec())
register(LosslessCodec())
