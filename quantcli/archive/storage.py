"""Storage: how an encoding's logical arrays become the arrays an archive stores, and back.

A method declares LOGICAL arrays (`ArrayLayout(dtype, shape, bits)`, methods/base.py): plain
arrays (scales, codebooks, kept values) and integer codes, one unpacked integer per code, with
an alphabet of 2**bits values. The archive stores every logical array through a codec:

  plain     the array as it is (the default for plain arrays);
  bitpack   codes packed into a little-endian bit stream, `bits` each (quantcli/packing.py):
            stored as uint8 of shape (ceil(count * bits / 8),) (the default for codes);
  rans      integer codes entropy-coded (quantcli/codecs/entropy.py), stored as uint8 [nbytes];
  crans     ecsq's codes with context models (quantcli/codecs/context.py), stored as uint8 [nbytes];
  lossless  any array's bytes split into planes and entropy-coded (quantcli/codecs/lossless.py),
            stored as uint8 [nbytes].

The two defaults are implied by the layout and recorded nowhere, so an archive that uses only
them is byte for byte an archive of format version 1. Any other codec is recorded per array in
the tensor's manifest entry (`codecs`: role -> {"codec": name, ...its params}), which makes the
archive format version 2. Asking for `entropy` storage (`--codec entropy`, and always for
methods that are entropy-coded by design) stores each array with whichever of its default codec
and its entropy codec is smaller, counting the manifest bytes that recording the codec costs, so
entropy storage never costs more than fixed-rate storage.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from ..codecs import CODECS, CodecError
from ..codecs import entropy
from ..codecs import lossless as lossless_codec
from ..codecs.bounds import check_codes
from ..errors import ArchiveError
from ..methods import KEEP, METHODS, Encoding
from ..methods.base import ArrayLayout, StorageHint
from ..codecs.bitpack import pack_bits, packed_nbytes, unpack_bits

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
        return np.require(a, requirements="C")  # ascontiguousarray would make a 0-d array 1-d

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
    out: dict[str, StoredLayout] = {}
    for role, lay in logical_layout(method, shape, params).items():
        if codecs and role in codecs:
            out[role] = (np.dtype(np.uint8), (int(codecs[role].get("nbytes", -1)),))
        else:
            out[role] = codec_for(lay).stored(lay)
    return out


ENTROPY_MIN_BYTES = 64  # plain arrays smaller than this are not worth a codec's params


def _manifest_cost(params: dict[str, Any], lay: ArrayLayout) -> int:
    """Header bytes recording a codec costs (its params are escaped once more inside the header)."""
    return len(json.dumps(json.dumps(params, separators=(",", ":")))) + len(f'"{lay.dtype}":,')


def _hinted(a: np.ndarray, lay: ArrayLayout, hint: StorageHint, default_nbytes: int
            ) -> tuple[np.ndarray, dict[str, Any]] | None:
    """Codes through the codec their method prefers (`Method.storage_hint`, e.g. a context model)
    when its bytes stay within the bound the planner relies on (entropy.size_bound of the codes'
    histogram: what `rans` could take at most) and, with its manifest bytes, below the default
    codec's."""
    if a.size == 0 or hint.codec is None:
        return None
    alphabet = max(2, int(a.max()) + 1)
    data, cp = CODECS[hint.codec].encode(a, alphabet=alphabet, **hint.options)
    cp = {"codec": hint.codec, **cp}
    if len(data) + _manifest_cost(cp, lay) >= default_nbytes or \
            len(data) > entropy.size_bound(entropy.histogram(a.reshape(-1), alphabet)):
        return None
    return np.frombuffer(data, np.uint8), cp


def _entropy_coded(a: np.ndarray, lay: ArrayLayout, default_nbytes: int) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The array through its entropy codec (rans for codes, lossless for plain arrays) when that
    is smaller than `default_nbytes`, its size under its default codec; else None."""
    if a.size == 0 or (lay.bits is None and a.nbytes < ENTROPY_MIN_BYTES):
        return None
    if lay.bits is not None:
        data, params = CODECS["rans"].encode(a, alphabet=max(2, int(a.max()) + 1))
        params = {"codec": "rans", **params}
    else:
        data, params = CODECS["lossless"].encode(a)
        params = {"codec": "lossless", **params, "nbytes": len(data)}
    if len(data) + _manifest_cost(params, lay) >= default_nbytes:
        return None
    return np.frombuffer(data, np.uint8), params


def _encoding_layout(enc: Encoding, shape: tuple[int, ...]) -> dict[str, ArrayLayout]:
    if enc.method == KEEP:  # kept: stored as it is, in its own dtype (its params record nothing)
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
    method = METHODS[enc.method]
    for role, lay in layout.items():
        a = enc.arrays[role]
        if a.dtype != lay.dtype or tuple(a.shape) != tuple(lay.shape):
            raise ValueError(f"{enc.method} {role} is {a.dtype}{list(a.shape)}, declared {lay.dtype}{list(lay.shape)}")
        if codec == "entropy":  # sized, not packed, first: packing wide codes takes memory
            default_nbytes = a.nbytes if lay.bits is None else packed_nbytes(a.size, lay.bits)
            hint = method.storage_hint(role, enc.params)
            coded = _hinted(np.ascontiguousarray(a), lay, hint, default_nbytes) if hint is not None else None
            if coded is None and (hint is None or hint.codec is not None):  # codec None: default only
                coded = _entropy_coded(np.ascontiguousarray(a), lay, default_nbytes)
            if coded is not None:
                out[role], codecs[role] = coded
                continue
        out[role] = codec_for(lay).encode(a, lay)
    if codecs and _not_worth_recording(out, codecs, layout):
        for role in codecs:
            out[role] = codec_for(layout[role]).encode(enc.arrays[role], layout[role])
        codecs = {}
    return out, codecs


def _not_worth_recording(out: dict[str, np.ndarray], codecs: dict[str, dict[str, Any]],
                         layout: dict[str, ArrayLayout]) -> bool:
    """Whether the entropy-coded arrays of one tensor save fewer bytes than recording them costs in
    the header: the whole `codecs` entry of the manifest (which the header holds as an escaped JSON
    string) and up to 7 bytes of the header's 8-byte alignment. Then the tensor is stored with its
    default codecs, so `--codec entropy` never makes an archive larger than bitpack."""
    saved = 0
    for role in codecs:
        lay = layout[role]
        default = math.prod(lay.shape) * np.dtype(lay.dtype).itemsize if lay.bits is None else \
            packed_nbytes(math.prod(lay.shape), lay.bits)
        saved += default - out[role].nbytes
    record = len(json.dumps(json.dumps({"codecs": codecs}, separators=(",", ":")))) + 7
    return saved <= record


STORAGE_CODECS = ("bitpack", "entropy")


def codec_params(cp: dict[str, Any]) -> dict[str, Any]:
    """The params a recorded codec entry hands to its codec: all but `codec`, and for lossless also
    but `nbytes` (the stored length, recorded for the reader; the planes' lengths sum to it)."""
    inner = {k: v for k, v in cp.items() if k != "codec"}
    if cp.get("codec") == "lossless":
        nbytes = inner.pop("nbytes", None)
        if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
            raise CodecError(f"lossless nbytes must be a non-negative integer, got {nbytes!r}")
    return inner


def check_codecs(method: str, shape: tuple[int, ...], params: dict[str, Any], codecs: Any) -> None:
    """Validate a manifest's recorded codecs before anything is decoded: known codecs on declared
    arrays, and params that justify the logical shape (a forged length or model cannot make the
    decoder allocate more than the stored bytes can hold). Raises ArchiveError."""
    if not isinstance(codecs, dict):
        raise ArchiveError("malformed codecs entry")
    layout = logical_layout(method, shape, params)
    for role, cp in codecs.items():
        if role not in layout or not isinstance(cp, dict) or cp.get("codec") not in ("rans", "crans", "lossless"):
            raise ArchiveError(f"unknown codec entry for array {role!r}")
        lay = layout[role]
        nbytes = cp.get("nbytes")
        if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
            raise ArchiveError(f"its {role} array's codec entry has no valid nbytes")
        if (cp["codec"] in ("rans", "crans")) != (lay.bits is not None):
            raise ArchiveError(f"codec {cp['codec']} cannot store the {role} array")
        try:
            inner = codec_params(cp)
            alphabet = inner.get("alphabet")
            if cp["codec"] == "rans" and (not isinstance(alphabet, int) or isinstance(alphabet, bool)
                                          or not 2 <= alphabet <= max(2, 1 << lay.bits)):  # type: ignore[operator]
                raise CodecError(f"alphabet {alphabet!r} does not fit codes of {lay.bits} bits")
            CODECS[cp["codec"]].max_decoded_nbytes(inner, tuple(lay.shape))
            if cp["codec"] == "lossless":  # planes and transform of the declared dtype, lengths that add up
                lossless_codec.max_decoded_count(inner, lay.dtype)
                if sum(p["nbytes"] for p in inner["planes"]) != cp["nbytes"]:
                    raise CodecError(f"nbytes {cp['nbytes']} is not the sum of its planes' bytes")
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
        try:
            inner = codec_params(cp)
            out[role] = CODECS[cp["codec"]].decode(a, inner, lay.dtype, tuple(lay.shape))
            if lay.bits is not None:
                check_codes(out[role], lay.bits)
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
