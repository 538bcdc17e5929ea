"""Codecs: how a logical array (a method's integer codes, scales, kept values) becomes the array an
archive stores, and back. Every codec is a `Codec` in CODECS, registered at the bottom of this
module, looked up by the name an archive records next to the array:

    data, params = codec.encode(array, **options)        # stored bytes (or array) and a JSON-able dict
    codec.check(params, dtype, shape, bits)               # a recorded entry, before decoding: CodecError
    array = codec.decode(data, params, dtype, shape)      # exactly `shape`, or CodecError

Contract every codec keeps (so storage treats them alike, archive/storage.py):
- encode is deterministic: the same array (and options) gives the same bytes and params.
- params hold plain ints, strings, lists and dicts, including the stored byte count `nbytes`, so
  `max_decoded_nbytes(params, shape)` can tell from the params alone whether `shape` is justified:
  it raises CodecError when the bytes cannot hold that many values (every codec bounds its
  expansion: see MAX_RATIO / MAX_CODES_PER_WORD) and otherwise returns the bytes of the decoded
  values in the codec's natural dtype (decode's peak use is at most twice that plus the result).
- decode validates params and the byte length against `shape` before allocating from `shape`,
  and raises CodecError (a ValueError and an ArchiveError) for anything malformed.

Each codec says what it stores (`stores`: integer codes, plain arrays, or any) and its part in
storage (`role`): the DEFAULT codec of a kind is implied by the logical layout and recorded
nowhere (format version 1 bytes); the ENTROPY codec of a kind is what `--codec entropy` tries
where smaller; a codec with no role is used when a method asks for it (`Method.storage_hint`).

Codecs here:
  plain     the array as it is (default for plain arrays).
  bitpack   codes of `bits` bits packed little-endian, ceil(n * bits / 8) bytes (bitpack.py; default
            for codes; its params {"bits"} come from the layout, never from the file).
  rans      order-0 interleaved rANS for integer codes 0 <= c < alphabet <= 2**16 (entropy.py; the
            entropy codec for codes); encode option `alphabet` (default max(code) + 1, at least 2).
  crans     context-modelled rANS for the integer codes of a matrix (context.py): contexts from the
            DQ state and the row's scale so far; encode options `alphabet`, `offset`, `dq`.
  lossless  byte planes for any 1/2/4/8-byte dtype, floats rotated so the exponent has its own
            plane; each plane raw, rANS or zstd (lossless.py; the entropy codec for plain arrays).
Byte layouts: docs/FORMAT.md section 6.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar
from abc import ABC, abstractmethod

import numpy as np

from . import bitpack, bounds, context, entropy, lossless
from .errors import CodecError

__all__ = ["Codec", "CodecError", "CODECS", "get", "register", "default_for", "entropy_for",
           "PlainCodec", "BitpackCodec", "RansCodec", "CransCodec", "LosslessCodec", "CODES", "PLAIN", "ANY"]

# what a codec stores (`Codec.stores`): integer codes (a logical array with `bits`), plain arrays, or any
CODES, PLAIN, ANY = "codes", "plain", "any"
# its part in storage (`Codec.role`): implied by the layout, or tried by entropy storage where smaller
DEFAULT, ENTROPY = "default", "entropy"


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
    """One way of turning an array into stored bytes; see the module docstring for the contract."""

    name: ClassVar[str]
    stores: ClassVar[str] = ANY   # CODES, PLAIN or ANY
    role: ClassVar[str] = ""      # DEFAULT, ENTROPY or "" (only when a method asks for it)

    def accepts(self, bits: int | None) -> bool:
        """Whether this codec can store a logical array of `bits` (None: a plain array)."""
        return self.stores == ANY or (self.stores == CODES) == (bits is not None)

    @property
    def recorded(self) -> bool:
        """False for a default codec: implied by the layout, so nothing about it is written."""
        return self.role != DEFAULT

    @abstractmethod
    def encode(self, array: np.ndarray, **options: Any) -> tuple[bytes | np.ndarray, dict]:
        """(bytes or the stored array, params) for `array` in C order."""

    @abstractmethod
    def decode(self, data, params: dict, dtype, shape) -> np.ndarray:
        """The array of `dtype` and `shape` that `data` encodes; CodecError if it does not."""

    @abstractmethod
    def max_decoded_nbytes(self, params: dict, shape) -> int:
        """Bytes of the decoded values for `shape`; CodecError if the params cannot justify it."""

    def stored(self, params: dict, dtype, shape, bits: int | None) -> tuple[np.dtype, tuple[int, ...]]:
        """(dtype, shape) of the stored array: uint8 [nbytes] for a recorded codec."""
        nbytes = params.get("nbytes", -1) if isinstance(params, dict) else -1
        return np.dtype(np.uint8), (nbytes if isinstance(nbytes, int) and not isinstance(nbytes, bool) else -1,)

    def check(self, params: dict, dtype, shape, bits: int | None) -> None:
        """Refuse (CodecError) a recorded entry's params that cannot decode to this logical array,
        before anything is decoded (its `nbytes` already checked): by default, the bound on
        what its bytes can hold."""
        self.max_decoded_nbytes(params, shape)


class PlainCodec(Codec):
    """The array as it is: the default for plain arrays (scales, codebooks, kept values)."""

    name, stores, role = "plain", PLAIN, DEFAULT

    def encode(self, array: np.ndarray, **options: Any) -> tuple[bytes | np.ndarray, dict]:
        return np.require(array, requirements="C"), {}  # ascontiguousarray would make a 0-d array 1-d

    def stored(self, params: dict, dtype, shape, bits: int | None) -> tuple[np.dtype, tuple[int, ...]]:
        return np.dtype(dtype), tuple(shape)

    def max_decoded_nbytes(self, params: dict, shape) -> int:
        return 0  # decoding allocates nothing: the stored array, checked against its layout, is the value

    def decode(self, data, params: dict, dtype, shape) -> np.ndarray:
        return data


class BitpackCodec(Codec):
    """Codes of `bits` bits (params {"bits"}, from the layout) packed into a bit stream (bitpack.py):
    the default for codes, so an archive of default codecs is format version 1 byte for byte."""

    name, stores, role = "bitpack", CODES, DEFAULT

    def encode(self, array: np.ndarray, **options: Any) -> tuple[bytes | np.ndarray, dict]:
        bits = int(options["bits"])
        a = np.asarray(array)
        # a code beyond the alphabet would spill into its neighbour's bits: a method's bug, never written
        if bits < 8 * a.dtype.itemsize and a.size and int(a.max()) >> bits:
            raise ValueError(f"code {int(a.max())} does not fit {bits} bits")
        return bitpack.pack_bits(a, bits), {"bits": bits}

    def stored(self, params: dict, dtype, shape, bits: int | None) -> tuple[np.dtype, tuple[int, ...]]:
        return np.dtype(np.uint8), (bitpack.packed_nbytes(_count(shape), int(params["bits"])),)

    def max_decoded_nbytes(self, params: dict, shape) -> int:
        return _count(shape) * (1 if int(params["bits"]) <= 8 else 2)

    def decode(self, data, params: dict, dtype, shape) -> np.ndarray:
        return bitpack.unpack_bits(data, int(params["bits"]), _count(shape)).reshape(tuple(shape))


class RansCodec(Codec):
    """Integer codes through entropy.py; params = entropy params plus the stored `nbytes`."""

    name, stores, role = "rans", CODES, ENTROPY

    def check(self, params: dict, dtype, shape, bits: int | None) -> None:
        alphabet = params.get("alphabet") if isinstance(params, dict) else None
        if not isinstance(alphabet, int) or isinstance(alphabet, bool) or \
                not 2 <= alphabet <= max(2, 1 << (bits or 0)):
            raise CodecError(f"alphabet {alphabet!r} does not fit codes of {bits} bits")
        super().check(params, dtype, shape, bits)

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

    name, stores = "crans", CODES

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
    """Any 1/2/4/8-byte dtype, bit-exact, through lossless.py; params = its planes and transform
    plus the stored `nbytes` (the planes' lengths sum to it)."""

    name, stores, role = "lossless", PLAIN, ENTROPY

    def encode(self, array: np.ndarray, **options: Any) -> tuple[bytes | np.ndarray, dict]:
        data, params = lossless.encode(array)
        return data, {**params, "nbytes": len(data)}

    @staticmethod
    def _inner(params: dict) -> dict:
        """The params lossless.py reads: all but the stored length."""
        if not isinstance(params, dict):
            raise CodecError("lossless params must be a dict")
        return {k: v for k, v in params.items() if k != "nbytes"}

    def check(self, params: dict, dtype, shape, bits: int | None) -> None:
        super().check(params, dtype, shape, bits)
        inner = self._inner(params)
        lossless.max_decoded_count(inner, np.dtype(dtype))  # planes and transform of the declared dtype
        if sum(p["nbytes"] for p in inner["planes"]) != params["nbytes"]:
            raise CodecError(f"nbytes {params['nbytes']} is not the sum of its planes' bytes")

    def max_decoded_nbytes(self, params: dict, shape) -> int:
        params = self._inner(params)
        planes = params.get("planes")
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
        return lossless.decode(data, self._inner(params), dtype, _count(shape)).reshape(tuple(shape))


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


def _with_role(role: str, bits: int | None) -> Codec:
    return next(c for c in CODECS.values() if c.role == role and c.accepts(bits))


def default_for(bits: int | None) -> Codec:
    """The codec a logical array of `bits` (None: plain) is stored with when none is recorded."""
    return _with_role(DEFAULT, bits)


def entropy_for(bits: int | None) -> Codec:
    """The codec entropy storage tries for a logical array of `bits` (None: plain)."""
    return _with_role(ENTROPY, bits)


for _codec in (PlainCodec(), BitpackCodec(), RansCodec(), CransCodec(), LosslessCodec()):
    register(_codec)
