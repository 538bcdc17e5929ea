"""Storage: how an encoding's logical arrays become the arrays an archive stores, and back.

A method declares LOGICAL arrays (`ArrayLayout(dtype, shape, bits)`, methods/base.py): plain
arrays (scales, codebooks, kept values) and integer codes, one unpacked integer per code, with
an alphabet of 2**bits values. The archive stores every logical array through a codec:

  plain     the array as it is (the default for plain arrays);
  bitpack   codes packed into a little-endian bit stream, `bits` each (quantcli/packing.py):
            stored as uint8 of shape (ceil(count * bits / 8),) (the default for codes);
  rans      integer codes entropy-coded (quantcli/codecs/entropy.py), stored as uint8 [nbytes];
  lossless  any array's bytes split into planes and entropy-coded (quantcli/codecs/lossless.py),
            stored as uint8 [nbytes].

The two defaults are implied by the layout and recorded nowhere, so an archive that uses only
them is byte for byte an archive of format version 1. Any other codec is recorded per array in
the tensor's manifest entry (`codecs`: role -> {"codec": name, ...its params}), which makes the
archive format version 2. Asking for `entropy` storage (`--codec entropy`, and always for
methods that are entropy-coded by design) stores each array with whichever of its default codec
and its entropy codec is smaller, so entropy storage never costs more than fixed-rate storage.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from .codecs import CODECS, CodecError
from .errors import ArchiveError
from .methods import METHODS, Encoding
from .methods.base import ArrayLayout
from .packing import pack_bits, packed_nbytes, unpack_bits

# What the file holds for one array: (numpy dtype, shape).
StoredLayout = tuple[np.dtype, tuple[int, ...]]


class DefaultCodec(ABC):
    name: str

    @abstractmethod
    def stored(self, layout: ArrayLayout) -> StoredLayout:
        """Dtype and shape of the stored array for a logical array of `layout`."""

    @abstractmethod
    def encode(self, a: np.ndarray, layout: ArrayLayout) -> np.ndarray:
        """The stored array (C-contiguous) for logical array `a`."""

    @abstractmethod
    def decode(self, stored: np.ndarray, layout: ArrayLayout) -> np.ndarray:
        """The logical array for a stored one (already checked against `stored(layout)`)."""


class Plain(DefaultCodec):
    name = "plain"

    def stored(self, layout: ArrayLayout) -> StoredLayout:
        return np.dtype(layout.dtype), tuple(layout.shape)

    def encode(self, a: np.ndarray, layout: ArrayLayout) -> np.ndarray:
        return np.ascontiguousarray(a).reshape(a.shape)  # ascontiguousarray makes a 0-d array 1-d

    def decode(self, stored: np.ndarray, layout: ArrayLayout) -> np.ndarray:
        return stored


class BitPack(DefaultCodec):
    name = "bitpack"

    def stored(self, layout: ArrayLayout) -> StoredLayout:
        assert layout.bits is not None
        return np.dtype(np.uint8), (packed_nbytes(math.prod(layout.shape), layout.bits),)

    def encode(self, a: np.ndarray, layout: ArrayLayout) -> np.ndarray:
        bits = layout.bits
        assert bits is not None
        # a code beyond the alphabet would spill into its neighbour's bits: a method's bug, never written
        if bits < 8 * a.dtype.itemsize and a.size and int(a.max()) >> bits:
            raise ValueError(f"code {int(a.max())} does not fit {bits} bits")
        return pack_bits(a, bits)

    def decode(self, stored: np.ndarray, layout: ArrayLayout) -> np.ndarray:
        assert layout.bits is not None
        return unpack_bits(stored, layout.bits, math.prod(layout.shape)).reshape(layout.shape)


PLAIN, BITPACK = Plain(), BitPack()
DEFAULTS: dict[str, DefaultCodec] = {c.name: c for c in (PLAIN, BITPACK)}


def codec_for(layout: ArrayLayout) -> DefaultCodec:
    """The codec an array is stored with: bitpack for codes, plain for everything else."""
    return PLAIN if layout.bits is None else BITPACK


def logical_layout(method: str, shape: tuple[int, ...], params: dict[str, Any]) -> dict[str, ArrayLayout]:
    """The method's declared logical arrays (raises ArchiveError for params out of range).
    A kept tensor's params name its dtype here, as the archive's manifest entry does."""
    return METHODS[method].layout(tuple(shape), params)


def stored_layout(method: str, shape: tuple[int, ...], params: dict[str, Any],
                  codecs: dict[str, dict[str, Any]] | None = None) -> dict[str, StoredLayout]:
    """role -> (dtype, shape) of every array the archive holds for a tensor of `shape` encoded
    with `params` (for `keep`: params {"dtype": <safetensors code>}); an array stored with a
    recorded codec is uint8 [its params' nbytes]."""
    out = {}
    for role, lay in logical_layout(method, shape, params).items():
        if codecs and role in codecs:
            out[role] = (np.dtype(np.uint8), (int(codecs[role].get("nbytes", -1)),))
        else:
            out[role] = codec_for(lay).stored(lay)
    return out


ENTROPY_MIN_BYTES = 64  # plain arrays smaller than this are not worth a codec's params


def _entropy_coded(a: np.ndarray, lay: ArrayLayout, default: np.ndarray) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The array through its entropy codec (rans for codes, lossless for plain arrays) when that
    is smaller than `default`, the array under its default codec; else None."""
    if a.size == 0 or (lay.bits is None and a.nbytes < ENTROPY_MIN_BYTES):
        return None
    if lay.bits is not None:
        data, params = CODECS["rans"].encode(a, alphabet=1 << lay.bits)
        params = {"codec": "rans", **params}
    else:
        data, params = CODECS["lossless"].encode(a)
        params = {"codec": "lossless", **params, "nbytes": len(data)}
    if len(data) >= default.nbytes:
        return None
    return np.frombuffer(data, np.uint8), params


def _encoding_layout(enc: Encoding, shape: tuple[int, ...]) -> dict[str, ArrayLayout]:
    if enc.method == "keep":  # kept: stored as it is, in its own dtype (its params record nothing)
        return {role: ArrayLayout(a.dtype, tuple(a.shape)) for role, a in enc.arrays.items()}
    return logical_layout(enc.method, shape, enc.params)


def stored_arrays(enc: Encoding, shape: tuple[int, ...], codec: str = "bitpack"
                  ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """(role -> the array to write, role -> recorded codec params for arrays not stored with
    their default codec) for an in-memory encoding of a tensor of `shape`. `codec`: "bitpack"
    (fixed-rate: format version 1 bytes) or "entropy" (each array's entropy codec where it is
    smaller). Raises ValueError when the encoding's arrays are not what its method declares."""
    layout = _encoding_layout(enc, shape)
    if set(layout) != set(enc.arrays):
        raise ValueError(f"{enc.method} encoding holds {sorted(enc.arrays)}, its layout {sorted(layout)}")
    if codec not in STORAGE_CODECS:
        raise ValueError(f"unknown storage codec {codec!r}")
    out, codecs = {}, {}
    for role, lay in layout.items():
        a = enc.arrays[role]
        if a.dtype != lay.dtype or tuple(a.shape) != tuple(lay.shape):
            raise ValueError(f"{enc.method} {role} is {a.dtype}{list(a.shape)}, declared {lay.dtype}{list(lay.shape)}")
        out[role] = codec_for(lay).encode(a, lay)
        if codec == "entropy":
            coded = _entropy_coded(np.ascontiguousarray(a), lay, out[role])
            if coded is not None:
                out[role], codecs[role] = coded
    return out, codecs


STORAGE_CODECS = ("bitpack", "entropy")


def check_codecs(method: str, shape: tuple[int, ...], params: dict[str, Any], codecs: Any) -> None:
    """Validate a manifest's recorded codecs before anything is decoded: known codecs on declared
    arrays, and params that justify the logical shape (a forged length or model cannot make the
    decoder allocate more than the stored bytes can hold). Raises ArchiveError."""
    if not isinstance(codecs, dict):
        raise ArchiveError("malformed codecs entry")
    layout = logical_layout(method, shape, params)
    for role, cp in codecs.items():
        if role not in layout or not isinstance(cp, dict) or cp.get("codec") not in ("rans", "lossless"):
            raise ArchiveError(f"unknown codec entry for array {role!r}")
        lay = layout[role]
        if (cp["codec"] == "rans") != (lay.bits is not None):
            raise ArchiveError(f"codec {cp['codec']} cannot store the {role} array")
        inner = {k: v for k, v in cp.items() if k != "codec"}
        try:
            if cp["codec"] == "rans" and inner.get("alphabet") != 1 << lay.bits:  # type: ignore[operator]
                raise CodecError(f"alphabet {inner.get('alphabet')!r}, the array's codes have {1 << lay.bits}")  # type: ignore[operator]
            CODECS[cp["codec"]].max_decoded_nbytes(inner, tuple(lay.shape))
        except CodecError as e:
            raise ArchiveError(f"its {role} array: {e}") from None


def logical_arrays(method: str, shape: tuple[int, ...], params: dict[str, Any],
                   stored: dict[str, np.ndarray], codecs: dict[str, dict[str, Any]] | None = None
                   ) -> dict[str, np.ndarray]:
    """The logical arrays of stored ones (checked beforehand against `stored_layout` and
    `check_codecs`)."""
    layout = logical_layout(method, shape, params)
    out = {}
    for role, a in stored.items():
        lay = layout[role]
        cp = (codecs or {}).get(role)
        if cp is None:
            out[role] = codec_for(lay).decode(a, lay)
            continue
        inner = {k: v for k, v in cp.items() if k != "codec"}
        try:
            out[role] = CODECS[cp["codec"]].decode(a, inner, lay.dtype, tuple(lay.shape))
        except CodecError as e:
            raise ArchiveError(f"its {role} array: {e}") from None
    return out


def stored_nbytes(enc: Encoding, shape: tuple[int, ...], codec: str = "bitpack") -> int:
    """Bytes the archive stores for `enc` (what bits_per_weight counts); with the default codecs
    this packs nothing, with entropy storage it encodes."""
    if codec != "bitpack":
        stored, _ = stored_arrays(enc, shape, codec)
        return sum(int(a.nbytes) for a in stored.values())
    layout = _encoding_layout(enc, shape)
    total = 0
    for role, a in enc.arrays.items():
        bits = layout[role].bits
        total += int(a.nbytes) if bits is None else packed_nbytes(a.size, bits)
    return total
