"""Codecs: how an encoding's logical arrays become the arrays an archive stores, and back.

A method declares LOGICAL arrays (`ArrayLayout(dtype, shape, bits)`, methods/base.py): plain
arrays (scales, codebooks, kept values) and integer codes, one unpacked integer per code, with
an alphabet of 2**bits values. The archive stores every logical array through a codec:

  plain    the array as it is;
  bitpack  codes packed into a little-endian bit stream, `bits` each (quantcli/packing.py):
           stored as uint8 of shape (ceil(count * bits / 8),).

For now the codec is implied by the layout (bits set -> bitpack), so an archive's bytes are
exactly those of format version 1; a later version can name a codec per array.

This is its own module, not part of archive.py, because three places need the same mapping and
only one of them is the archive: the writer and reader (archive.py), worker processes that spill
stored bytes for the parent to splice in, and sizing (--dry-run, the planner), which needs the
stored dtypes and shapes from shapes alone.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from .methods import METHODS, Encoding
from .methods.base import ArrayLayout
from .packing import pack_bits, packed_nbytes, unpack_bits

# What the file holds for one array: (numpy dtype, shape).
StoredLayout = tuple[np.dtype, tuple[int, ...]]


class Codec(ABC):
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


class Plain(Codec):
    name = "plain"

    def stored(self, layout: ArrayLayout) -> StoredLayout:
        return np.dtype(layout.dtype), tuple(layout.shape)

    def encode(self, a: np.ndarray, layout: ArrayLayout) -> np.ndarray:
        return np.ascontiguousarray(a)

    def decode(self, stored: np.ndarray, layout: ArrayLayout) -> np.ndarray:
        return stored


class BitPack(Codec):
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
CODECS: dict[str, Codec] = {c.name: c for c in (PLAIN, BITPACK)}


def codec_for(layout: ArrayLayout) -> Codec:
    """The codec an array is stored with: bitpack for codes, plain for everything else."""
    return PLAIN if layout.bits is None else BITPACK


def logical_layout(method: str, shape: tuple[int, ...], params: dict[str, Any]) -> dict[str, ArrayLayout]:
    """The method's declared logical arrays (raises ArchiveError for params out of range).
    A kept tensor's params name its dtype here, as the archive's manifest entry does."""
    return METHODS[method].layout(tuple(shape), params)


def stored_layout(method: str, shape: tuple[int, ...], params: dict[str, Any]) -> dict[str, StoredLayout]:
    """role -> (dtype, shape) of every array the archive holds for a tensor of `shape` encoded
    with `params` (for `keep`: params {"dtype": <safetensors code>})."""
    return {role: codec_for(lay).stored(lay) for role, lay in logical_layout(method, shape, params).items()}


def _encoding_layout(enc: Encoding, shape: tuple[int, ...]) -> dict[str, ArrayLayout]:
    if enc.method == "keep":  # kept: stored as it is, in its own dtype (its params record nothing)
        return {role: ArrayLayout(a.dtype, tuple(a.shape)) for role, a in enc.arrays.items()}
    return logical_layout(enc.method, shape, enc.params)


def stored_arrays(enc: Encoding, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """role -> the array to write for an in-memory encoding of a tensor of `shape` (codecs
    applied). Raises ValueError when the encoding's arrays are not what its method declares."""
    layout = _encoding_layout(enc, shape)
    if set(layout) != set(enc.arrays):
        raise ValueError(f"{enc.method} encoding holds {sorted(enc.arrays)}, its layout {sorted(layout)}")
    out = {}
    for role, lay in layout.items():
        a = enc.arrays[role]
        if a.dtype != lay.dtype or tuple(a.shape) != tuple(lay.shape):
            raise ValueError(f"{enc.method} {role} is {a.dtype}{list(a.shape)}, declared {lay.dtype}{list(lay.shape)}")
        out[role] = codec_for(lay).encode(a, lay)
    return out


def logical_arrays(method: str, shape: tuple[int, ...], params: dict[str, Any],
                   stored: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The logical arrays of stored ones (checked beforehand against `stored_layout`)."""
    layout = logical_layout(method, shape, params)
    return {role: codec_for(layout[role]).decode(a, layout[role]) for role, a in stored.items()}


def stored_nbytes(enc: Encoding, shape: tuple[int, ...]) -> int:
    """Bytes the archive stores for `enc` (what bits_per_weight counts), without packing anything."""
    layout = _encoding_layout(enc, shape)
    total = 0
    for role, a in enc.arrays.items():
        bits = layout[role].bits
        total += int(a.nbytes) if bits is None else packed_nbytes(a.size, bits)
    return total
