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
"""

from __future__ import annotations

import numpy as np

from ..packing import pack_bits, packed_nbytes, unpack_bits
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

try:
    import ml_dtypes

    _BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - ml_dtypes is a declared dependency
    _BF16 = None

_FLOATS = {np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)} | ({_BF16} if _BF16 else set())
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def transform_for(dtype: np.dtype) -> str:
    """The encoder's first choice: `rotl1h10` for float32 and bfloat16 (8 exponent bits: the head
    adds two mantissa bits), `rotl1` for float16 (its top byte already holds 5 exponent and 3
    mantissa bits; a 10-bit head's larger table cost more than it saved on MiniLM) and float64,
    `none` for anything else."""
    dt = _le(dtype)
    return "none" if dt not in _FLOATS else HEAD if dt.itemsize in (2, 4) and dt != np.float16 else "rotl1"


def transforms_for(dtype: np.dtype) -> tuple[str, ...]:
    """Every transform a decoder accepts for `dtype`: both float layouts for any 2 or 4-byte float."""
    dt = _le(dtype)
    return ("none",) if dt not in _FLOATS else (HEAD, "rotl1") if dt.itemsize in (2, 4) else ("rotl1",)


def widths(k: int, transform: str) -> list[int]:
    """Bit width of each stream, in stream order: k byte planes, or for `rotl1h10` the k - 2 low
    byte planes, the 6-bit residual and the 10-bit head."""
    return [8] * (k - 2) + [RES_BITS, HEAD_BITS] if transform == HEAD else [8] * k


def _le(dtype: np.dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    return dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype


_kernels: dict = {}


def _load_numba(k: int) -> dict:
    """One-pass split/merge kernels for itemsize k ({} without numba). k is a compile-time constant
    (one set of kernels per itemsize), so the byte loop unrolls and the element loop vectorises."""
    if k in _kernels:
        return _kernels[k]
    if not entropy._load_numba():
        _kernels[k] = {}
        return _kernels[k]
    import numba

    one, mask8, mask6 = np.uint64(1), np.uint64(0xFF), np.uint64((1 << RES_BITS) - 1)
    top = np.uint64(8 * k - 1)
    full = np.uint64((1 << (8 * k)) - 1)
    shifts = tuple(np.uint64(8 * i) for i in range(k))
    hs, rs = np.uint64(max(8 * k - HEAD_BITS, 0)), np.uint64(max(8 * k - HEAD_BITS - RES_BITS, 0))  # k >= 2 only
    low = max(k - 2, 0)

    def split(u, rot, planes):
        for e in range(u.size):
            x = np.uint64(u[e])
            if rot:
                x = ((x << one) | (x >> top)) & full
            for i in range(k):
                planes[i, e] = np.uint8((x >> shifts[i]) & mask8)

    def merge(planes, rot, u):
        for e in range(u.size):
            x = np.uint64(0)
            for i in range(k):
                x |= np.uint64(planes[i, e]) << shifts[i]
            if rot:
                x = (x >> one) | ((x & one) << top)
            u[e] = x

    def split_head(u, planes, res, head):
        for e in range(u.size):
            x = np.uint64(u[e])
            x = ((x << one) | (x >> top)) & full
            head[e] = np.uint16(x >> hs)
            res[e] = np.uint8((x >> rs) & mask6)
            for i in range(low):
                planes[i, e] = np.uint8((x >> shifts[i]) & mask8)

    def merge_head(planes, res, head, u):
        for e in range(u.size):
            x = (np.uint64(head[e]) << hs) | (np.uint64(res[e]) << rs)
            for i in range(low):
                x |= np.uint64(planes[i, e]) << shifts[i]
            u[e] = (x >> one) | ((x & one) << top)

    def jit(fn):
        try:
            return numba.njit(nogil=True)(fn)  # closures over k: no on-disk cache
        except Exception:  # pragma: no cover
            return fn

    _kernels[k] = {"split": jit(split), "merge": jit(merge)}
    if k in (2, 4):
        _kernels[k].update(split_head=jit(split_head), merge_head=jit(merge_head))
    if k == 1:  # the 6-bit residuals: four values in three bytes, least significant bits first
        _kernels[k].update(pack6=jit(_pack6), unpack6=jit(_unpack6))
    return _kernels[k]


def _pack6(res, packed):
    """pack_bits(res, 6) into `packed` (numba kernel: one 24-bit word per four values, then the tail)."""
    n = res.size
    g = n // 4
    for q in range(g):
        w = (np.uint32(res[4 * q]) | (np.uint32(res[4 * q + 1]) << 6) | (np.uint32(res[4 * q + 2]) << 12)
             | (np.uint32(res[4 * q + 3]) << 18))
        packed[3 * q] = w & 0xFF
        packed[3 * q + 1] = (w >> 8) & 0xFF
        packed[3 * q + 2] = w >> 16
    w = np.uint32(0)
    for j in range(n - 4 * g):
        w |= np.uint32(res[4 * g + j]) << (6 * j)
    for b in range(packed.size - 3 * g):
        packed[3 * g + b] = (w >> (8 * b)) & 0xFF


def _unpack6(packed, res):
    """unpack_bits(packed, 6, res.size) into `res` (numba kernel, the inverse of _pack6)."""
    n = res.size
    g = n // 4
    for q in range(g):
        w = np.uint32(packed[3 * q]) | (np.uint32(packed[3 * q + 1]) << 8) | (np.uint32(packed[3 * q + 2]) << 16)
        res[4 * q] = w & 0x3F
        res[4 * q + 1] = (w >> 6) & 0x3F
        res[4 * q + 2] = (w >> 12) & 0x3F
        res[4 * q + 3] = w >> 18
    w = np.uint32(0)
    for b in range(packed.size - 3 * g):
        w |= np.uint32(packed[3 * g + b]) << (8 * b)
    for j in range(n - 4 * g):
        res[4 * g + j] = (w >> (6 * j)) & 0x3F


def _pack_res(res: np.ndarray) -> bytes:
    kern = _kern(1)
    if kern:
        packed = np.empty(packed_nbytes(res.size, RES_BITS), dtype=np.uint8)
        kern["pack6"](res, packed)
        return packed.tobytes()
    return pack_bits(res, RES_BITS).tobytes()


def _unpack_res(buf: np.ndarray, out: np.ndarray) -> None:
    kern = _kern(1)
    if kern:
        kern["unpack6"](buf, out)
    else:
        out[:] = unpack_bits(buf, RES_BITS, out.size)


def _kern(k: int) -> dict:
    return _load_numba(k) if entropy._backend() == "numba" else {}


def _rotl1(u: np.ndarray) -> np.ndarray:
    k = u.dtype.itemsize
    return (u << _UINT[k](1)) | (u >> _UINT[k](8 * k - 1))


def _rotr1(u: np.ndarray) -> np.ndarray:
    k = u.dtype.itemsize
    return (u >> _UINT[k](1)) | (u << _UINT[k](8 * k - 1))


def _flat_uint(arr: np.ndarray) -> np.ndarray:
    """The array's elements as little-endian unsigned integers of its itemsize, C order."""
    dt = _le(arr.dtype)
    return np.ascontiguousarray(arr, dtype=dt).reshape(-1).view(_UINT[dt.itemsize])


def _to_planes(arr: np.ndarray, transform: str) -> np.ndarray:
    """[itemsize, count] uint8: plane i is byte i (little-endian) of each element after the transform."""
    u = _flat_uint(arr)
    k = u.dtype.itemsize
    kern = _kern(k)
    if kern:
        planes = np.empty((k, u.size), dtype=np.uint8)
        kern["split"](u, transform == "rotl1", planes)
        return planes
    raw = (_rotl1(u) if transform == "rotl1" else u).view(np.uint8)
    return np.ascontiguousarray(raw.reshape(-1, k).T)


def _from_planes(planes: np.ndarray, dtype: np.dtype, transform: str) -> np.ndarray:
    k = planes.shape[0]
    kern = _kern(k)
    if kern:
        u = np.empty(planes.shape[1], dtype=_UINT[k])
        kern["merge"](planes, transform == "rotl1", u)
        return u.view(_le(dtype))
    u = np.ascontiguousarray(planes.T).reshape(-1).view(_UINT[k])
    return (_rotr1(u) if transform == "rotl1" else u).view(_le(dtype))


def _to_head_streams(u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(low byte planes [k - 2, n], 6-bit residuals uint8, 10-bit heads uint16) of the rotated words."""
    k, n = u.dtype.itemsize, u.size
    kern = _kern(k)
    planes, res, head = np.empty((k - 2, n), np.uint8), np.empty(n, np.uint8), np.empty(n, np.uint16)
    if kern:
        kern["split_head"](u, planes, res, head)
        return planes, res, head
    r = _rotl1(u)
    head[:] = r >> _UINT[k](8 * k - HEAD_BITS)
    res[:] = (r >> _UINT[k](8 * k - HEAD_BITS - RES_BITS)) & _UINT[k](63)
    planes[:] = r.view(np.uint8).reshape(n, k)[:, : k - 2].T
    return planes, res, head


def _from_head_streams(planes: np.ndarray, res: np.ndarray, head: np.ndarray, dtype: np.dtype) -> np.ndarray:
    k = dtype.itemsize
    u = np.empty(head.size, dtype=_UINT[k])
    kern = _kern(k)
    if kern:
        kern["merge_head"](planes, res, head, u)
        return u.view(_le(dtype))
    U = _UINT[k]
    np.left_shift(head, U(8 * k - HEAD_BITS), out=u, dtype=U)
    u |= res.astype(U) << U(8 * k - HEAD_BITS - RES_BITS)
    for i in range(k - 2):  # two passes for float32 (its low byte planes), none for 2-byte floats
        u |= planes[i].astype(U) << U(8 * i)
    return _rotr1(u).view(_le(dtype))


def _entropy_bytes(counts: np.ndarray, n: int) -> float:
    """Order-0 estimate of the rANS size of a stream, in bytes (table and lane states ignored)."""
    p = counts[counts > 0] / n
    return float(-(counts[counts > 0] * np.log2(p)).sum() / 8)


def _rans(sym: np.ndarray, width: int, counts: np.ndarray) -> tuple[bytes, dict]:
    data, p = entropy.encode_symbols(sym, 1 << width, counts)
    return data, {"codec": "rans", "nbytes": len(data), "lanes": p["lanes"], "table_nbytes": p["table_nbytes"]}


def _encode_plane(sym: np.ndarray, width: int = 8) -> tuple[bytes, dict]:
    """The smallest of raw (bit-packed below 8 bits), rANS (when the order-0 estimate says it
    pays) and, for byte planes, zstd level 1."""
    n = sym.size
    raw = sym.tobytes() if width == 8 else _pack_res(sym)
    best: tuple[bytes, dict] = (raw, {"codec": "raw", "nbytes": len(raw)})
    if n == 0:
        return best
    counts = entropy.histogram(sym, 1 << width)
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


def _encode_head(u: np.ndarray) -> tuple[list[bytes], list[dict]] | None:
    """`rotl1h10` streams of the words `u`, or None when the heads would not compress."""
    n = u.size
    if n == 0:
        return None
    planes, res, head = _to_head_streams(u)
    counts = entropy.histogram(head, 1 << HEAD_BITS)
    if _entropy_bytes(counts, n) >= SKIP_FRACTION * packed_nbytes(n, HEAD_BITS):
        return None
    coded_head = _rans(head, HEAD_BITS, counts)
    if coded_head[1]["nbytes"] >= packed_nbytes(n, HEAD_BITS):
        return None
    streams = [_encode_plane(p) for p in planes] + [_encode_plane(res, RES_BITS), coded_head]
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
    parts, plane_params = [], []
    for plane in _to_planes(arr, transform):
        data, p = _encode_plane(plane)
        parts.append(data)
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


def _decode_plane(chunk: memoryview, p: dict, width: int, count: int, i: int, out: np.ndarray) -> None:
    """Stream i (`width` bits per value) into `out`, exactly `count` values or CodecError."""
    if p["codec"] == "raw":
        if len(chunk) != packed_nbytes(count, width):
            raise CodecError(f"raw plane {i} holds {len(chunk)} bytes, expected {packed_nbytes(count, width)}")
        buf = np.frombuffer(chunk, dtype=np.uint8)
        if width == 8:
            out[:] = buf
        else:
            _unpack_res(buf, out)
    elif p["codec"] == "rans":
        inner = {"alphabet": 1 << width, "lanes": p["lanes"], "table_nbytes": p["table_nbytes"]}
        entropy.decode(chunk, inner, count, out=out)
    else:
        out[:] = np.frombuffer(_unzstd(chunk, count, i), dtype=np.uint8)


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
    if transform == HEAD:
        low = np.empty((k - 2, count), dtype=np.uint8)
        res, head = np.empty(count, dtype=np.uint8), np.empty(count, dtype=np.uint16)
        targets = [*low, res, head]
    else:
        out = np.empty((k, count), dtype=np.uint8)
        targets = list(out)
    start = 0
    for i, (p, w, target) in enumerate(zip(planes, widths(k, transform), targets)):
        _decode_plane(buf[start : start + p["nbytes"]], p, w, count, i, target)
        start += p["nbytes"]
    if transform == HEAD:
        return _from_head_streams(low, res, head, dtype).astype(dtype, copy=False)
    return _from_planes(out, dtype, transform).astype(dtype, copy=False)


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
