"""Lossless codec for any array, tuned for floats: the bits split into streams, each stored raw,
rANS- or zstd-coded.

Why this layout (numbers in docs/BENCHMARKS.md section 7 and docs/BENCHMARKS-lossless.md): in
trained weights nearly all the redundancy is in the exponent. Rotating a float's bits left by one
(sign to bit 0) puts the exponent at the top of the word. Two layouts follow from there:

* `rotl1h10` (float32, float16, bfloat16; what the encoder writes): the rotated word's top 10 bits
  (for float32 and bfloat16 the exponent and the two top mantissa bits) are one symbol of a 1024-letter
  alphabet, rANS-coded (entropy.py); the next 6 bits are a stream of 6-bit values, bit-packed; the
  rest are byte planes. Within one binade a bell-shaped distribution's density falls, so the top
  mantissa bits depend on the exponent: coded jointly with it they save 0.068 bit per value on
  MiniLM, where the whole top mantissa byte coded on its own (a second rANS pass) saves 0.029.
* `rotl1` (float64, any float whose top 10 bits do not compress, and every archive written before
  `rotl1h10`): byte planes of the rotated word; the top plane holds the exponent's high bits.

The low mantissa bytes are near-uniform: stored raw, unless zstd level 1 (which also finds repeats,
e.g. in embedding tables) or rANS makes them smaller. Every bit is kept, NaN payloads and
subnormals included: decode(encode(a)) has a's exact bits. Layout: docs/FORMAT.md section 6.4;
params = {"transform": "rotl1h10" | "rotl1" | "none", "planes": [one dict per stream]}.

Speed: the split and merge are one pass each (kernels/lossless.py, numba, imported on first use).
The split also counts every stream's histogram; the decoder reads raw streams as views of the
archive's bytes and merges them, the bit-packed residual included, straight into the output words.
What remains is mostly the rANS coder (entropy.py): docs/BENCHMARKS-lossless.md.
"""

from __future__ import annotations

from types import ModuleType
from typing import Union

import numpy as np

from .bitpack import packed_nbytes
from . import entropy
from .errors import CodecError

try:  # zstd planes need it to decode; without it the encoder only writes raw and rans planes
    import zstandard
except ImportError:  # pragma: no cover - zstandard is a declared dependency
    zstandard = None  # type: ignore[assignment]

ZSTD_LEVEL = 1  # level 1: measured best ratio on weight byte planes and fastest (level 3 is worse)
# A plane of n bytes must be stored in at least n / MAX_RATIO bytes, whatever its codec: the rANS
# coder cannot do better (<= 1410 codes per 4-byte word), and zstd planes are held to the same bound,
# so a forged stream never makes the decoder allocate more than MAX_RATIO times its size.
MAX_RATIO = 352
RANS_MAX_FRACTION = 0.97  # a plane whose order-0 estimate is below this is rANS-coded, zstd not tried
SKIP_FRACTION = 0.995  # rANS-code a plane only if its estimate saves >= 0.5 %: it costs encode time
HEAD, HEAD_BITS, RES_BITS = "rotl1h10", 10, 6  # top 10 bits as one symbol, the next 6 bit-packed
# which codecs a stream of each bit width may use: the head is always rANS (a float whose head does
# not compress is written as `rotl1` instead), zstd only for byte planes
TRY_BOTH = 1 << 16  # below this many elements both float layouts are tried: the head's larger table
# (~250-600 bytes) can outweigh what it saves, and encoding twice costs little
STREAM_CODECS = {8: ("raw", "rans", "zstd"), RES_BITS: ("raw", "rans"), HEAD_BITS: ("rans",)}

Buffer = Union[bytes, memoryview]  # a stream before the join: raw planes stay views of their array
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _is_float(dt: np.dtype) -> bool:
    """float16/32/64 or ml_dtypes' bfloat16 (recognised by name: whoever made a bfloat16 array has
    imported ml_dtypes already, so this module does not have to)."""
    return dt.kind == "f" or dt.name == "bfloat16"


def transform_for(dtype: np.dtype) -> str:
    """The encoder's first choice: `rotl1h10` for float32 and bfloat16 (8 exponent bits: the head
    adds two mantissa bits), `rotl1` for float16 (its top byte already holds 5 exponent and 3
    mantissa bits; a 10-bit head's larger table cost more than it saved on MiniLM) and float64,
    `none` for anything else."""
    dt = _le(dtype)
    return "none" if not _is_float(dt) else HEAD if dt.itemsize in (2, 4) and dt != np.float16 else "rotl1"


def transforms_for(dtype: np.dtype) -> tuple[str, ...]:
    """Every transform a decoder accepts for `dtype`: both float layouts for any 2 or 4-byte float."""
    dt = _le(dtype)
    return ("none",) if not _is_float(dt) else (HEAD, "rotl1") if dt.itemsize in (2, 4) else ("rotl1",)


def widths(k: int, transform: str) -> list[int]:
    """Bit width of each stream, in stream order: k byte planes, or for `rotl1h10` the k - 2 low
    byte planes, the 6-bit residual and the 10-bit head."""
    return [8] * (k - 2) + [RES_BITS, HEAD_BITS] if transform == HEAD else [8] * k


def _le(dtype: np.dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    return dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype


def _kernels() -> ModuleType:
    """The numba kernels (kernels/lossless.py), imported on first use: numba loads only when a
    lossless stream is encoded or decoded."""
    from ..kernels import lossless as lossless_kernels

    return lossless_kernels


def _flat_uint(arr: np.ndarray) -> np.ndarray:
    """The array's elements as little-endian unsigned integers of its itemsize, C order."""
    dt = _le(arr.dtype)
    return np.ascontiguousarray(arr, dtype=dt).reshape(-1).view(_UINT[dt.itemsize])


def byte_planes(arr: np.ndarray, transform: str) -> tuple[np.ndarray, np.ndarray]:
    """([itemsize, count] uint8 planes, [itemsize, 256] int64 histograms): plane i is byte i
    (little-endian) of each element of `arr`, after the transform (`rotl1` or `none`)."""
    u = _flat_uint(arr)
    planes = np.empty((u.dtype.itemsize, u.size), dtype=np.uint8)
    counts = np.zeros((u.dtype.itemsize, 256), dtype=np.int64)
    _kernels().split_planes(u, transform == "rotl1", tuple(planes), counts)
    return planes, counts


def _pack_res(res: np.ndarray) -> memoryview:
    packed = np.empty(packed_nbytes(res.size, RES_BITS), dtype=np.uint8)
    _kernels().pack6(res, packed)
    return packed.data


def _entropy_bytes(counts: np.ndarray, n: int) -> float:
    """Order-0 estimate of the rANS size of a stream, in bytes (table and lane states ignored)."""
    p = counts[counts > 0] / n
    return float(-(counts[counts > 0] * np.log2(p)).sum() / 8)


def _rans(sym: np.ndarray, width: int, counts: np.ndarray) -> tuple[bytes, dict]:
    data, p = entropy.encode_symbols(sym, 1 << width, counts)
    return data, {"codec": "rans", "nbytes": len(data), "lanes": p["lanes"], "table_nbytes": p["table_nbytes"]}


def _encode_plane(sym: np.ndarray, counts: np.ndarray, width: int = 8) -> tuple[Buffer, dict]:
    """The smallest of raw (bit-packed below 8 bits), rANS (when the order-0 estimate says it
    pays) and, for byte planes, zstd level 1; `counts` is sym's histogram. A raw byte plane is
    returned as a view of `sym`, not a copy."""
    n = sym.size
    raw: Buffer = sym.data if width == 8 else _pack_res(sym)
    best: tuple[Buffer, dict] = (raw, {"codec": "raw", "nbytes": len(raw)})
    if n == 0:
        return best
    est = _entropy_bytes(counts, n)
    if est < RANS_MAX_FRACTION * len(raw) or zstandard is None or width != 8:
        if est < SKIP_FRACTION * len(raw):
            data, p = _rans(sym, width, counts)
            if len(data) < len(raw):
                best = (data, p)
        return best
    frame = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=False, write_content_size=True).compress(raw)
    if len(frame) < len(raw) and n <= MAX_RATIO * len(frame):
        best = (frame, {"codec": "zstd", "nbytes": len(frame)})
    if est < SKIP_FRACTION * len(best[0]):  # zstd found no repeats but the histogram is still skewed
        data, p = _rans(sym, width, counts)
        if len(data) < len(best[0]):
            best = (data, p)
    return best


def _encode_head(u: np.ndarray) -> tuple[list[Buffer], list[dict]] | None:
    """`rotl1h10` streams of the words `u`, or None when the heads would not compress."""
    n = u.size
    if n == 0:
        return None
    k = u.dtype.itemsize
    planes, res, head = np.empty((k - 2, n), np.uint8), np.empty(n, np.uint8), np.empty(n, np.uint16)
    c_low, c_res, counts = np.zeros((k - 2, 256), np.int64), np.zeros(1 << RES_BITS, np.int64), np.zeros(1 << HEAD_BITS, np.int64)
    _kernels().split_head(u, planes, res, head, c_low, c_res, counts)
    if _entropy_bytes(counts, n) >= SKIP_FRACTION * packed_nbytes(n, HEAD_BITS):
        return None
    coded_head = _rans(head, HEAD_BITS, counts)
    if coded_head[1]["nbytes"] >= packed_nbytes(n, HEAD_BITS):
        return None
    streams = [_encode_plane(p, c) for p, c in zip(planes, c_low)] + [_encode_plane(res, c_res, RES_BITS), coded_head]
    return [d for d, _ in streams], [p for _, p in streams]


def encode(array: np.ndarray, transform: str | None = None) -> tuple[bytes, dict]:
    """Lossless bytes and params for `array` (any numeric dtype and shape, C order). `transform`
    (default: transform_for's choice) may name the other layout the dtype allows, e.g. `rotl1` to
    write what quant wrote before `rotl1h10`."""
    arr = np.asarray(array)
    if arr.dtype.hasobject or arr.dtype.itemsize not in _UINT:
        raise CodecError(f"lossless codec needs a 1, 2, 4 or 8-byte dtype, got {arr.dtype}")
    transform = transform_for(arr.dtype) if transform is None else transform
    if transform not in transforms_for(arr.dtype):
        raise CodecError(f"transform {transform!r} does not fit dtype {arr.dtype}")
    if transform == HEAD:
        coded = _encode_head(_flat_uint(arr))
        if coded is not None:
            data, params = b"".join(coded[0]), {"transform": HEAD, "planes": coded[1]}
            if arr.size >= TRY_BOTH:
                return data, params
            other = encode(arr, "rotl1")
            return (data, params) if len(data) <= len(other[0]) else other
        transform = "rotl1"
    planes, counts = byte_planes(arr, transform)
    parts: list[Buffer] = []
    plane_params = []
    for plane, c in zip(planes, counts):
        stream, p = _encode_plane(plane, c)
        parts.append(stream)
        plane_params.append(p)
    return b"".join(parts), {"transform": transform, "planes": plane_params}


def _check_params(params: dict, dtype: np.dtype) -> list[dict]:
    if not isinstance(params, dict) or set(params) != {"transform", "planes"}:
        raise CodecError("lossless params must be exactly {transform, planes}")
    if params["transform"] not in transforms_for(dtype):
        raise CodecError(f"transform {params['transform']!r} does not match dtype {dtype}")
    planes = params["planes"]
    if not isinstance(planes, list) or len(planes) != dtype.itemsize:
        raise CodecError(f"lossless params need {dtype.itemsize} planes for {dtype}")
    keys = {"raw": {"codec", "nbytes"}, "zstd": {"codec", "nbytes"}, "rans": {"codec", "nbytes", "lanes", "table_nbytes"}}
    for p, w in zip(planes, widths(dtype.itemsize, params["transform"])):
        if not isinstance(p, dict) or p.get("codec") not in STREAM_CODECS[w] or set(p) != keys[p["codec"]]:
            raise CodecError(f"bad lossless plane params {p!r}")
        for key in set(p) - {"codec"}:
            if not isinstance(p[key], int) or isinstance(p[key], bool) or p[key] < 0:
                raise CodecError(f"lossless plane param {key} must be a non-negative integer")
    return planes


def max_decoded_count(params: dict, dtype) -> int:
    """The most elements these params can justify: a raw stream holds 8 / width values per byte,
    and no coded one expands more than MAX_RATIO times."""
    dtype = np.dtype(dtype)
    bound = None
    planes = _check_params(params, dtype)
    for p, w in zip(planes, widths(dtype.itemsize, params["transform"])):
        cap = 8 * p["nbytes"] // w if p["codec"] == "raw" else MAX_RATIO * p["nbytes"]
        bound = cap if bound is None else min(bound, cap)
    return int(bound or 0)


def _decode_stream(chunk: memoryview, p: dict, width: int, count: int, i: int) -> np.ndarray:
    """Stream i (`width` bits per value) as an array: exactly `count` values (uint8, or uint16 for
    the head), except a raw residual stream, which stays bit-packed (merge_head_packed reads it);
    a raw stream is a read-only view of `chunk`, not a copy. CodecError on any inconsistency."""
    if p["codec"] == "raw":
        if len(chunk) != packed_nbytes(count, width):
            raise CodecError(f"raw plane {i} holds {len(chunk)} bytes, expected {packed_nbytes(count, width)}")
        return np.frombuffer(chunk, dtype=np.uint8)
    if p["codec"] == "rans":
        inner = {"alphabet": 1 << width, "lanes": p["lanes"], "table_nbytes": p["table_nbytes"]}
        return entropy.decode(chunk, inner, count)
    return np.frombuffer(_unzstd(chunk, count, i), dtype=np.uint8)


def decode(data, params: dict, dtype, count: int) -> np.ndarray:
    """Exactly `count` elements of `dtype` (flat); CodecError for any inconsistency, before allocating."""
    dtype = np.dtype(dtype)
    planes = _check_params(params, dtype)
    buf = memoryview(data).cast("B")
    if not isinstance(count, (int, np.integer)) or count < 0:
        raise CodecError(f"declared count must be a non-negative integer, got {count!r}")
    count = int(count)
    if sum(p["nbytes"] for p in planes) != len(buf):
        raise CodecError(f"lossless planes declare {sum(p['nbytes'] for p in planes)} bytes, stream has {len(buf)}")
    if count > max_decoded_count(params, dtype):
        raise CodecError(f"declared count {count} exceeds what {len(buf)} bytes can hold")
    k, transform = dtype.itemsize, params["transform"]
    streams, start = [], 0
    for i, (p, w) in enumerate(zip(planes, widths(k, transform))):
        streams.append(_decode_stream(buf[start : start + p["nbytes"]], p, w, count, i))
        start += p["nbytes"]
    for s in streams:  # one array type for the kernels' tuple of planes, views of `data` or not
        s.flags.writeable = False
    u = np.empty(count, dtype=_UINT[k])
    kern = _kernels()
    if transform == HEAD:
        p0, p1 = (streams[0], streams[1]) if k == 4 else (streams[0][:0], streams[0][:0])  # unread for k = 2
        merge = kern.merge_head_packed if planes[k - 2]["codec"] == "raw" else kern.merge_head
        merge(p0, p1, streams[k - 2], streams[k - 1], u)
    else:
        kern.merge_planes(tuple(streams), transform == "rotl1", u)
    return u.view(_le(dtype)).astype(dtype, copy=False)


def _unzstd(chunk: memoryview, count: int, i: int) -> bytes:
    """One zstd frame whose header declares exactly `count` bytes, with nothing after it."""
    if zstandard is None:
        raise CodecError("zstd plane needs the zstandard package")
    try:
        if zstandard.frame_content_size(chunk) != count:
            raise CodecError(f"zstd plane {i} does not declare {count} bytes")
        out = zstandard.ZstdDecompressor().decompress(chunk, max_output_size=count, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise CodecError(f"zstd plane {i} is corrupt: {exc}") from None
    if len(out) != count:
        raise CodecError(f"zstd plane {i} decodes to {len(out)} bytes, expected {count}")
    return out
