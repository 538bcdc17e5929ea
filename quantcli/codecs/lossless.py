"""Lossless codec for any array, tuned for floats: byte planes, each stored raw, rANS- or zstd-coded.

Why this layout (numbers in docs/BENCHMARKS.md, section 7): in trained weights nearly all the
redundancy is in the exponent. Rotating a float's bits left by one (sign to bit 0) puts the top
eight exponent bits in the most significant byte; grouping that byte over the array gives a stream
of ~2.6 bits/byte order-0 entropy that the rANS coder (entropy.py) codes within ~0.3 % of it, where
zstd's Huffman loses ~12 %. The mantissa bytes are near-uniform: they are stored raw, unless zstd
level 1 (which also finds repeats, e.g. in embedding tables) or rANS makes them smaller.

Every byte is kept, NaN payloads and subnormals included: decode(encode(a)) has a's exact bits.
Layout (docs/FORMAT.md section 6.4): the concatenation of the planes' streams, least significant byte first;
params = {"transform": "rotl1" | "none", "planes": [{"codec": "raw"|"rans"|"zstd", "nbytes": ...,
...}]}. Plane i holds byte i (little-endian) of every element after the transform, in C order.
"""

from __future__ import annotations

import numpy as np

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

try:
    import ml_dtypes

    _BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - ml_dtypes is a declared dependency
    _BF16 = None

_FLOATS = {np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)} | ({_BF16} if _BF16 else set())
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def transform_for(dtype: np.dtype) -> str:
    """`rotl1` for IEEE-style floats of 2, 4 or 8 bytes (incl. bfloat16), `none` for anything else."""
    return "rotl1" if _le(dtype) in _FLOATS else "none"


def _le(dtype: np.dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    return dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype


_kernels: dict = {}


def _load_numba(k: int) -> dict:
    """One-pass split/merge kernels for itemsize k ({} without numba). k is a compile-time constant
    (one pair of kernels per itemsize), so the byte loop unrolls and the element loop vectorises."""
    if k in _kernels:
        return _kernels[k]
    if not entropy._load_numba():
        _kernels[k] = {}
        return _kernels[k]
    import numba

    one, mask8 = np.uint64(1), np.uint64(0xFF)
    top = np.uint64(8 * k - 1)
    full = np.uint64((1 << (8 * k)) - 1)
    shifts = tuple(np.uint64(8 * i) for i in range(k))

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

    def jit(fn):
        try:
            return numba.njit(nogil=True)(fn)  # closures over k: no on-disk cache
        except Exception:  # pragma: no cover
            return fn

    _kernels[k] = {"split": jit(split), "merge": jit(merge)}
    return _kernels[k]


def _to_planes(arr: np.ndarray, transform: str) -> np.ndarray:
    """[itemsize, count] uint8: plane i is byte i (little-endian) of each element after the transform."""
    dt = _le(arr.dtype)
    k = dt.itemsize
    flat = np.ascontiguousarray(arr, dtype=dt).reshape(-1)
    kern = _load_numba(k) if entropy._backend() == "numba" else {}
    if kern:
        planes = np.empty((k, flat.size), dtype=np.uint8)
        kern["split"](flat.view(_UINT[k]), transform == "rotl1", planes)
        return planes
    if transform == "rotl1":
        u = flat.view(_UINT[k])
        u = (u << _UINT[k](1)) | (u >> _UINT[k](8 * k - 1))
        raw = u.view(np.uint8)
    else:
        raw = flat.view(np.uint8)
    return np.ascontiguousarray(raw.reshape(-1, k).T)


def _from_planes(planes: np.ndarray, dtype: np.dtype, transform: str) -> np.ndarray:
    k = planes.shape[0]
    kern = _load_numba(k) if entropy._backend() == "numba" else {}
    if kern:
        u = np.empty(planes.shape[1], dtype=_UINT[k])
        kern["merge"](planes, transform == "rotl1", u)
        return u.view(_le(dtype))
    raw = np.ascontiguousarray(planes.T).reshape(-1)
    if transform == "rotl1":
        u = raw.view(_UINT[k])
        u = (u >> _UINT[k](1)) | (u << _UINT[k](8 * k - 1))
        raw = u.view(np.uint8)
    return raw.view(_le(dtype))


def _entropy_bytes(counts: np.ndarray, n: int) -> float:
    """Order-0 estimate of the rANS size of a plane, in bytes (table and lane states ignored)."""
    p = counts[counts > 0] / n
    return float(-(counts[counts > 0] * np.log2(p)).sum() / 8)


def _encode_plane(plane: np.ndarray) -> tuple[bytes, dict]:
    """The smallest of raw, rANS (when the order-0 estimate says it pays) and zstd level 1."""
    n = plane.size
    best: tuple[bytes, dict] = (plane.tobytes(), {"codec": "raw", "nbytes": n})
    if n == 0:
        return best
    counts = entropy.histogram(plane, 256)
    est = _entropy_bytes(counts, n)
    if est < RANS_MAX_FRACTION * n or zstandard is None:
        if est < SKIP_FRACTION * n:
            data, p = entropy.encode_symbols(plane, 256, counts)
            if len(data) < len(best[0]):
                best = (data, {"codec": "rans", "nbytes": len(data), "lanes": p["lanes"], "table_nbytes": p["table_nbytes"]})
        return best
    frame = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=False, write_content_size=True).compress(best[0])
    if len(frame) < len(best[0]) and n <= MAX_RATIO * len(frame):
        best = (frame, {"codec": "zstd", "nbytes": len(frame)})
    if est < SKIP_FRACTION * len(best[0]):  # zstd found no repeats but the histogram is still skewed
        data, p = entropy.encode_symbols(plane, 256, counts)
        if len(data) < len(best[0]):
            best = (data, {"codec": "rans", "nbytes": len(data), "lanes": p["lanes"], "table_nbytes": p["table_nbytes"]})
    return best


def encode(array: np.ndarray) -> tuple[bytes, dict]:
    """Lossless bytes and params for `array` (any numeric dtype and shape, C order)."""
    arr = np.asarray(array)
    if arr.dtype.hasobject or arr.dtype.itemsize not in _UINT:
        raise CodecError(f"lossless codec needs a 1, 2, 4 or 8-byte dtype, got {arr.dtype}")
    transform = transform_for(arr.dtype)
    parts, plane_params = [], []
    for plane in _to_planes(arr, transform):
        data, p = _encode_plane(plane)
        parts.append(data)
        plane_params.append(p)
    return b"".join(parts), {"transform": transform, "planes": plane_params}


def _check_params(params: dict, dtype: np.dtype) -> list[dict]:
    if not isinstance(params, dict) or set(params) != {"transform", "planes"}:
        raise CodecError("lossless params must be exactly {transform, planes}")
    if params["transform"] != transform_for(dtype):
        raise CodecError(f"transform {params['transform']!r} does not match dtype {dtype}")
    planes = params["planes"]
    if not isinstance(planes, list) or len(planes) != dtype.itemsize:
        raise CodecError(f"lossless params need {dtype.itemsize} planes for {dtype}")
    for p in planes:
        keys = {"raw": {"codec", "nbytes"}, "zstd": {"codec", "nbytes"}, "rans": {"codec", "nbytes", "lanes", "table_nbytes"}}
        if not isinstance(p, dict) or p.get("codec") not in keys or set(p) != keys[p["codec"]]:
            raise CodecError(f"bad lossless plane params {p!r}")
        for key in set(p) - {"codec"}:
            if not isinstance(p[key], int) or isinstance(p[key], bool) or p[key] < 0:
                raise CodecError(f"lossless plane param {key} must be a non-negative integer")
    return planes


def max_decoded_count(params: dict, dtype) -> int:
    """The most elements these params can justify: no plane expands more than MAX_RATIO times."""
    dtype = np.dtype(dtype)
    bound = None
    for p in _check_params(params, dtype):
        cap = p["nbytes"] if p["codec"] == "raw" else MAX_RATIO * p["nbytes"]
        bound = cap if bound is None else min(bound, cap)
    return int(bound or 0)


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
    out = np.empty((dtype.itemsize, count), dtype=np.uint8)
    start = 0
    for i, p in enumerate(planes):
        chunk = buf[start : start + p["nbytes"]]
        start += p["nbytes"]
        if p["codec"] == "raw":
            if len(chunk) != count:
                raise CodecError(f"raw plane {i} holds {len(chunk)} bytes, expected {count}")
            out[i] = np.frombuffer(chunk, dtype=np.uint8)
        elif p["codec"] == "rans":
            entropy.decode(chunk, {"alphabet": 256, "lanes": p["lanes"], "table_nbytes": p["table_nbytes"]}, count, out=out[i])
        else:
            out[i] = np.frombuffer(_unzstd(chunk, count, i), dtype=np.uint8)
    return _from_planes(out, dtype, params["transform"]).astype(dtype, copy=False)


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
