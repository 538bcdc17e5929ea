"""Storage: how an encoding's logical arrays become the arrays an archive stores, and back.

A method declares LOGICAL arrays (`ArrayLayout(dtype, shape, bits)`, methods/base.py): plain
arrays (scales, codebooks, kept values) and integer codes, one unpacked integer per code, with
an alphabet of 2**bits values. `store` puts every logical array through a codec of quantcli/codecs
(one interface, one registry): the writer takes what `store` returns and nothing else.

Each kind of array has a default codec (codecs.default_for: plain arrays as they are, codes
bit-packed) implied by the layout and recorded nowhere, so an archive that uses only defaults is
byte for byte an archive of format version 1. Any other codec is recorded per array in the
tensor's manifest entry (`codecs`: role -> {"codec": name, ...its params}), which makes the
archive format version 2. Asking for `entropy` storage (`--codec entropy`, and always for
methods that are entropy-coded by design) stores each array with whichever of its default codec,
the codec its method prefers (`Method.storage_hint`) and its kind's entropy codec
(codecs.entropy_for) is smaller, counting the manifest bytes that recording the codec costs, so
entropy storage never costs more than fixed-rate storage.
"""

from __future__ import annotations

import json
import math
from typing import Any, NamedTuple

import numpy as np

from .. import codecs
from ..codecs import CodecError
from ..codecs import entropy
from ..codecs.bounds import check_codes
from ..errors import ArchiveError
from ..methods import Encoding, get_method
from ..methods.base import ArrayLayout, StorageHint
from ..spec import CODECS as STORAGE_CODECS, Codec as Storage

# What the file holds for one array: (numpy dtype, shape).
StoredLayout = tuple[np.dtype, tuple[int, ...]]
FIXED, ENTROPY = Storage.bitpack.value, Storage.entropy.value  # --codec: default codecs only, or entropy storage


class Stored(NamedTuple):
    """What the archive writer takes for one tensor: role -> the array to write, and role ->
    recorded codec entry for the arrays not stored with their default codec."""

    arrays: dict[str, np.ndarray]
    codecs: dict[str, dict[str, Any]]


def _default(a: np.ndarray, lay: ArrayLayout) -> np.ndarray:
    """`a` through its default codec (bit-packed codes, plain arrays as they are)."""
    return np.asarray(codecs.default_for(lay.bits).encode(a, bits=lay.bits)[0])


def _default_nbytes(lay: ArrayLayout) -> int:
    dtype, shape = codecs.default_for(lay.bits).stored({"bits": lay.bits}, lay.dtype, lay.shape, lay.bits)
    return math.prod(shape) * dtype.itemsize


def logical_layout(method: str, shape: tuple[int, ...], params: dict[str, Any]) -> dict[str, ArrayLayout]:
    """The method's declared logical arrays (raises ArchiveError for params out of range).
    A kept tensor's params name its dtype here, as the archive's manifest entry does."""
    return get_method(method).layout(tuple(shape), params)


def stored_layout(method: str, shape: tuple[int, ...], params: dict[str, Any],
                  recorded: dict[str, dict[str, Any]] | None = None) -> dict[str, StoredLayout]:
    """role -> (dtype, shape) of every array the archive holds for a tensor of `shape` encoded
    with `params` (for a kept tensor: params {"dtype": <safetensors code>}); an array stored
    with a recorded codec is what that codec says (uint8 [its params' nbytes])."""
    out: dict[str, StoredLayout] = {}
    for role, lay in logical_layout(method, shape, params).items():
        cp = (recorded or {}).get(role)
        codec = codecs.default_for(lay.bits) if cp is None else codecs.get(str(cp.get("codec")))
        out[role] = codec.stored({"bits": lay.bits} if cp is None else cp, lay.dtype, tuple(lay.shape), lay.bits)
    return out


ENTROPY_MIN_BYTES = 64  # plain arrays smaller than this are not worth a codec's params


def _manifest_cost(params: dict[str, Any], lay: ArrayLayout) -> int:
    """Header bytes recording a codec costs (its params are escaped once more inside the header)."""
    return len(json.dumps(json.dumps(params, separators=(",", ":")))) + len(f'"{lay.dtype}":,')


def _coded(a: np.ndarray, codec: codecs.Codec, **options: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """`a` through a recorded codec: (the stored uint8 array, its manifest entry)."""
    data, params = codec.encode(a, **options)
    return np.frombuffer(data, np.uint8), {"codec": codec.name, **params}


def _hinted(a: np.ndarray, lay: ArrayLayout, hint: StorageHint, default_nbytes: int
            ) -> tuple[np.ndarray, dict[str, Any]] | None:
    """Codes through the codec their method prefers (`Method.storage_hint`, e.g. a context model)
    when its bytes stay within the bound the planner relies on (entropy.size_bound of the codes'
    histogram: what the entropy codec for codes could take at most) and, with its manifest bytes,
    below the default codec's."""
    if a.size == 0 or hint.codec is None:
        return None
    alphabet = max(2, int(a.max()) + 1)
    stored, cp = _coded(a, codecs.get(hint.codec), alphabet=alphabet, **hint.options)
    if stored.size + _manifest_cost(cp, lay) >= default_nbytes or \
            stored.size > entropy.size_bound(entropy.histogram(a.reshape(-1), alphabet)):
        return None
    return stored, cp


def _entropy_coded(a: np.ndarray, lay: ArrayLayout, default_nbytes: int) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The array through its kind's entropy codec (codecs.entropy_for) when that is smaller than
    `default_nbytes`, its size under its default codec; else None."""
    if a.size == 0 or (lay.bits is None and a.nbytes < ENTROPY_MIN_BYTES):
        return None
    options = {} if lay.bits is None else {"alphabet": max(2, int(a.max()) + 1)}
    stored, cp = _coded(a, codecs.entropy_for(lay.bits), **options)
    if stored.size + _manifest_cost(cp, lay) >= default_nbytes:
        return None
    return stored, cp


def _encoding_layout(enc: Encoding, shape: tuple[int, ...]) -> dict[str, ArrayLayout]:
    if get_method(enc.method).kept:  # stored as it is, in its own dtype (its params record nothing)
        return {role: ArrayLayout(a.dtype, tuple(a.shape)) for role, a in enc.arrays.items()}
    return logical_layout(enc.method, shape, enc.params)


def store(enc: Encoding, shape: tuple[int, ...], codec: str = FIXED) -> Stored:
    """THE step between a method's encoding of a tensor of `shape` and the archive writer: every
    logical array through its codec. `codec`: "bitpack" (each array's default codec: format
    version 1 bytes) or "entropy" (a recorded codec where that is smaller). Raises ValueError
    when the encoding's arrays are not what its method declares."""
    layout = _encoding_layout(enc, shape)
    if set(layout) != set(enc.arrays):
        raise ValueError(f"{enc.method} encoding holds {sorted(enc.arrays)}, its layout {sorted(layout)}")
    if codec not in STORAGE_CODECS:
        raise ValueError(f"unknown storage codec {codec!r}")
    out: dict[str, np.ndarray] = {}
    recorded: dict[str, dict[str, Any]] = {}
    method = get_method(enc.method)
    for role, lay in layout.items():
        a = enc.arrays[role]
        if a.dtype != lay.dtype or tuple(a.shape) != tuple(lay.shape):
            raise ValueError(f"{enc.method} {role} is {a.dtype}{list(a.shape)}, declared {lay.dtype}{list(lay.shape)}")
        if codec == ENTROPY:  # sized, not packed, first: packing wide codes takes memory
            default_nbytes = _default_nbytes(lay)
            hint = method.storage_hint(role, enc.params)
            coded = _hinted(np.ascontiguousarray(a), lay, hint, default_nbytes) if hint is not None else None
            if coded is None and (hint is None or hint.codec is not None):  # codec None: default only
                coded = _entropy_coded(np.ascontiguousarray(a), lay, default_nbytes)
            if coded is not None:
                out[role], recorded[role] = coded
                continue
        out[role] = _default(a, lay)
    if recorded and _not_worth_recording(out, recorded, layout):
        for role in recorded:
            out[role] = _default(enc.arrays[role], layout[role])
        recorded = {}
    return Stored(out, recorded)


def _not_worth_recording(out: dict[str, np.ndarray], recorded: dict[str, dict[str, Any]],
                         layout: dict[str, ArrayLayout]) -> bool:
    """Whether the entropy-coded arrays of one tensor save fewer bytes than recording them costs in
    the header: the whole `codecs` entry of the manifest (which the header holds as an escaped JSON
    string) and up to 7 bytes of the header's 8-byte alignment. Then the tensor is stored with its
    default codecs, so `--codec entropy` never makes an archive larger than bitpack."""
    saved = sum(_default_nbytes(layout[role]) - out[role].nbytes for role in recorded)
    record = len(json.dumps(json.dumps({"codecs": recorded}, separators=(",", ":")))) + 7
    return saved <= record


def check_codecs(method: str, shape: tuple[int, ...], params: dict[str, Any], recorded: Any) -> None:
    """Validate a manifest's recorded codecs before anything is decoded: registered recorded
    codecs that can store the declared array, and params that justify the logical shape (a
    forged length or model cannot make the decoder allocate more than the stored bytes can
    hold). Raises ArchiveError."""
    if not isinstance(recorded, dict):
        raise ArchiveError("malformed codecs entry")
    layout = logical_layout(method, shape, params)
    for role, cp in recorded.items():
        name = cp.get("codec") if isinstance(cp, dict) else None
        codec = codecs.CODECS.get(name) if isinstance(name, str) else None
        if role not in layout or codec is None or not codec.recorded:
            raise ArchiveError(f"unknown codec entry for array {role!r}")
        lay = layout[role]
        nbytes = cp.get("nbytes")
        if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
            raise ArchiveError(f"its {role} array's codec entry has no valid nbytes")
        if not codec.accepts(lay.bits):
            raise ArchiveError(f"codec {codec.name} cannot store the {role} array")
        try:
            codec.check(_inner(cp), lay.dtype, tuple(lay.shape), lay.bits)
        except CodecError as e:
            raise ArchiveError(f"its {role} array: {e}") from None


def _inner(cp: dict[str, Any]) -> dict[str, Any]:
    """The params a recorded codec entry hands to its codec: all but `codec`."""
    return {k: v for k, v in cp.items() if k != "codec"}


def logical_arrays(method: str, shape: tuple[int, ...], params: dict[str, Any],
                   stored: dict[str, np.ndarray], recorded: dict[str, dict[str, Any]] | None = None
                   ) -> dict[str, np.ndarray]:
    """The logical arrays of stored ones (checked beforehand against `stored_layout` and
    `check_codecs`)."""
    layout = logical_layout(method, shape, params)
    out = {}
    for role, a in stored.items():
        lay = layout[role]
        cp = (recorded or {}).get(role)
        if cp is None:
            out[role] = codecs.default_for(lay.bits).decode(a, {"bits": lay.bits}, lay.dtype, tuple(lay.shape))
            continue
        try:
            out[role] = codecs.get(cp["codec"]).decode(a, _inner(cp), lay.dtype, tuple(lay.shape))
            if lay.bits is not None:
                check_codes(out[role], lay.bits)
        except CodecError as e:
            raise ArchiveError(f"its {role} array: {e}") from None
    return out


def stored_nbytes(enc: Encoding, shape: tuple[int, ...], codec: str = FIXED) -> int:
    """Bytes the archive stores for `enc` (what bits_per_weight counts); with the default codecs
    this packs nothing, with entropy storage it encodes."""
    if codec != FIXED:
        return sum(int(a.nbytes) for a in store(enc, shape, codec).arrays.values())
    return sum(_default_nbytes(lay) for lay in _encoding_layout(enc, shape).values())
