"""The lossless codec's `rotl1h10` layout (10-bit head rANS-coded, 6-bit residual, low byte planes):
golden bytes, the numba kernels equal to their numpy oracles (tests/lossless_oracle.py) bit for bit,
bit-exact round trips on hostile input in both float layouts, old `rotl1` streams still read, forged
params refused before any large allocation, numba imported only when a stream is coded and its
kernels served from the on-disk cache."""

from __future__ import annotations

import hashlib
import tempfile
import tracemalloc

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lossless_oracle as oracle
from quantcli.codecs import CodecError, lossless
from quantcli.kernels import lossless as K

BF16 = np.dtype(ml_dtypes.bfloat16)
F32, F16, F64 = np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.float64)
UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def golden_weights(n: int = 70000) -> np.ndarray:
    """float32 bit patterns from integers only (no RNG, no libm): a peaked exponent, two top mantissa
    bits that lean towards 0 more the larger the exponent (as in a bell curve), hashed low bits."""
    i = np.arange(n, dtype=np.uint64)
    m32 = np.uint64(0xFFFFFFFF)
    h = (i * np.uint64(0x9E3779B1)) & m32
    h = ((h ^ (h >> np.uint64(15))) * np.uint64(0x85EBCA77)) & m32
    h ^= h >> np.uint64(13)
    e = np.searchsorted(np.array([300, 600, 800, 920, 980], np.uint64), h % np.uint64(1000), side="right")
    exp = np.uint64(118) + e.astype(np.uint64)
    lean = (h >> np.uint64(10)) % np.uint64(8) < np.uint64(2) + e.astype(np.uint64)  # top bit 0 more often
    top = np.where(lean, np.uint64(0), (h >> np.uint64(20)) % np.uint64(4))
    low = (h * np.uint64(2654435761) >> np.uint64(7)) % np.uint64(1 << 21)
    sign = (h >> np.uint64(30)) & np.uint64(1)
    u = (sign << np.uint64(31)) | (exp << np.uint64(23)) | (top << np.uint64(21)) | low
    return u.astype(np.uint32).view(np.float32)


def roundtrip(a: np.ndarray, transform: str | None = None) -> tuple[bytes, dict]:
    data, params = lossless.encode(a, transform)
    back = lossless.decode(data, params, a.dtype, a.size)
    assert back.dtype == a.dtype and back.tobytes() == np.ascontiguousarray(a).tobytes()
    return data, params


def test_golden_rotl1h10():
    w = golden_weights()
    data, params = roundtrip(w)
    assert params["transform"] == "rotl1h10"
    assert [p["codec"] for p in params["planes"]] == ["raw", "raw", "raw", "rans"]
    assert params["planes"][2]["nbytes"] == 6 * w.size // 8  # the 6-bit residual, bit-packed
    assert len(data) < 0.997 * len(lossless.encode(w, "rotl1")[0])  # two mantissa bits joined to the exponent
    assert params["planes"][3] == {"codec": "rans", "nbytes": 33888, "lanes": 3, "table_nbytes": 48}
    assert hashlib.sha256(data).hexdigest() == "1f8a1f50baca761ea94be986da9f1e4a11ed9137e3ef9df60c0af8596eb30b90"


def test_old_rotl1_streams_still_decode():
    """What quant wrote before rotl1h10 (pinned in test_codecs' golden test) reads back exactly."""
    w = golden_weights()
    data, params = lossless.encode(w, "rotl1")
    assert params["transform"] == "rotl1" and [p["codec"] for p in params["planes"]] == ["raw", "raw", "rans", "rans"]
    assert lossless.decode(data, params, F32, w.size).tobytes() == w.tobytes()
    bf = w.astype(BF16)
    data, params = roundtrip(bf, "rotl1")
    assert params["planes"][1]["codec"] == "rans"


def weights_like(dtype: np.dtype, n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 0.04).astype(dtype)


SIZES = [0, 1, 2, 3, 4, 5, 7, 8, 9, 13, 1000, 4097, 70001]


def words(k: int, n: int, seed: int) -> np.ndarray:
    """Any bit patterns (NaN payloads, subnormals, both zeros included) as k-byte words."""
    return np.random.default_rng(seed).integers(0, 256, n * k, dtype=np.uint8).view(UINT8[k])


UINT8 = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


@pytest.mark.parametrize("k", [1, 2, 4, 8])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("rot", [False, True])
def test_plane_kernels_match_oracle(k, n, rot):
    u = words(k, n, seed=n + k)
    planes, counts = np.empty((k, n), np.uint8), np.zeros((k, 256), np.int64)
    K.split_planes(u, rot, tuple(planes), counts)
    want_planes, want_counts = oracle.split_planes(u, rot)
    assert np.array_equal(planes, want_planes) and np.array_equal(counts, want_counts)
    back = np.empty(n, UINT8[k])
    views = tuple(p for p in planes.copy())  # read-only like the decoder's views of archive bytes
    for v in views:
        v.flags.writeable = False
    K.merge_planes(views, rot, back)
    assert np.array_equal(back, u) and np.array_equal(back, oracle.merge_planes(list(planes), rot, u.dtype))


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("n", SIZES)
def test_head_kernels_match_oracle(k, n):
    assert (K.HEAD_BITS, K.RES_BITS) == (lossless.HEAD_BITS, lossless.RES_BITS)
    u = words(k, n, seed=n)
    low, res, head = np.empty((k - 2, n), np.uint8), np.empty(n, np.uint8), np.empty(n, np.uint16)
    c_low, c_res, c_head = np.zeros((k - 2, 256), np.int64), np.zeros(64, np.int64), np.zeros(1024, np.int64)
    K.split_head(u, low, res, head, c_low, c_res, c_head)
    want = oracle.split_head(u)
    for got, exp in zip((low, res, head, c_low, c_res, c_head), want):
        assert got.dtype == exp.dtype or got.dtype == np.int64
        assert np.array_equal(got, exp)
    p0, p1 = (low[0], low[1]) if k == 4 else (res[:0], res[:0])
    back = np.empty(n, UINT8[k])
    K.merge_head(p0, p1, res, head, back)
    assert np.array_equal(back, u) and np.array_equal(back, oracle.merge_head(list(low), res, head, u.dtype))
    packed = np.empty(lossless.packed_nbytes(n, 6), np.uint8)
    K.pack6(res, packed)
    assert packed.tobytes() == oracle.pack6(res).tobytes()
    assert np.array_equal(oracle.unpack6(packed, n), res)
    back[:] = 0
    K.merge_head_packed(p0, p1, packed, head, back)
    assert np.array_equal(back, u)


@pytest.mark.parametrize("dtype", [F32, BF16, F16], ids=str)
@pytest.mark.parametrize("n", [5, 4099, 70001])
def test_streams_are_the_oracles_streams(dtype, n):
    """The encoder's streams, taken apart by hand: raw planes are the oracle's planes byte for byte,
    and the decoder reads a stream whose planes were made by the oracle."""
    a = weights_like(dtype, n, seed=n)
    data, params = roundtrip(a, "rotl1h10")
    if n >= lossless.TRY_BOTH:
        assert params["transform"] == "rotl1h10"
    if params["transform"] != "rotl1h10":
        return
    low, res, _, *_ = oracle.split_head(a.view(UINT8[dtype.itemsize]))
    start = 0
    for i, p in enumerate(params["planes"][:-1]):
        chunk = data[start:start + p["nbytes"]]
        if p["codec"] == "raw":
            want = low[i] if i < len(low) else oracle.pack6(res)
            assert chunk == want.tobytes()
        start += p["nbytes"]


def hostile(dtype: np.dtype) -> dict[str, np.ndarray]:
    fi = ml_dtypes.finfo(dtype)
    k = dtype.itemsize
    w = weights_like(dtype, 80000, seed=3)
    outlier = w.copy()
    outlier[123] = fi.max
    inf = int(np.array(np.inf, dtype).view(UINT[k]))
    nan_payloads = np.array([inf + 1, inf + 5, inf | (1 << (fi.nmant - 1)), inf, inf | (1 << (8 * k - 1))],
                            dtype=np.uint64).astype(UINT[k]).view(dtype)
    mixed = w.copy()
    mixed[::97] = np.resize(nan_payloads, mixed[::97].size)
    sub = (np.arange(80000) % 200 - 100).astype(np.float64) * float(fi.smallest_subnormal)
    return {"weights": w, "outlier": outlier, "nan-payloads": mixed, "subnormal": sub.astype(dtype),
            "constant": np.full(80000, 0.37, dtype), "empty": np.zeros(0, dtype), "scalar": np.array(-1.5, dtype),
            "signed-zeros": np.resize(np.array([0.0, -0.0], dtype), 70000)}


@pytest.mark.parametrize("dtype", [F32, BF16, F16, F64], ids=str)
def test_hostile_inputs_bit_exact_in_every_layout(dtype):
    for name, a in hostile(dtype).items():
        for transform in lossless.transforms_for(dtype):
            data, params = roundtrip(a, transform)
            assert params["transform"] in lossless.transforms_for(dtype), name
        if name == "constant":
            assert len(data) < a.nbytes / 50


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["f4", "bf16", "f2"]), st.integers(0, 3), st.binary(min_size=0, max_size=4096))
def test_property_few_exponents_any_low_bits(dt, spread, raw):
    """The head path on arbitrary mantissas and signs: exponents drawn from `spread` + 1 values."""
    dtype = BF16 if dt == "bf16" else np.dtype(dt)
    k = dtype.itemsize
    u = np.frombuffer(raw[: len(raw) // k * k], dtype=UINT[k]).astype(np.uint64)
    mant = 10 if dtype == F16 else 7 if dtype == BF16 else 23
    bias = (1 << (8 * k - 2 - mant)) - 1
    exp = np.uint64(bias) - (u % np.uint64(spread + 1))
    keep = np.uint64((1 << mant) - 1) | np.uint64(1 << (8 * k - 1))
    a = ((u & keep) | (exp << np.uint64(mant))).astype(UINT[k]).view(dtype)
    roundtrip(np.tile(a, 20) if a.size else a)


def test_transform_must_fit_the_dtype():
    with pytest.raises(CodecError, match="does not fit"):
        lossless.encode(np.ones(10, F64), "rotl1h10")
    with pytest.raises(CodecError, match="does not fit"):
        lossless.encode(np.ones(10, np.int32), "rotl1")
    data, params = lossless.encode(weights_like(F32, 100000))
    with pytest.raises(CodecError, match="does not match"):
        lossless.decode(data, params, F64, 100000)


class TestForged:
    def setup_method(self):
        self.a = weights_like(F32, 100000, seed=5)
        self.data, self.params = lossless.encode(self.a)
        assert self.params["transform"] == "rotl1h10"

    def planes(self, i, **change):
        planes = [dict(p) for p in self.params["planes"]]
        planes[i].update(change)
        return {"transform": "rotl1h10", "planes": planes}

    @pytest.mark.parametrize("i, change, needle", [
        (3, {"codec": "raw", "nbytes": 125000}, "bad lossless plane"),  # the head is always rANS
        (2, {"codec": "zstd"}, "bad lossless plane"),  # zstd only on byte planes
        (2, {"nbytes": 75001}, "planes declare"),
        (3, {"table_nbytes": 10**9}, "planes declare|does not fit"),
        (3, {"lanes": 10**6}, "lanes"),
    ])
    def test_bad_stream_params(self, i, change, needle):
        with pytest.raises(CodecError, match=needle):
            lossless.decode(self.data, self.planes(i, **change), F32, self.a.size)

    def test_residual_length_must_match_count(self):
        # move one byte from the residual to plane 0: the residual can no longer hold the count
        params = self.planes(0, nbytes=self.params["planes"][0]["nbytes"] + 1)
        params["planes"][2]["nbytes"] -= 1
        with pytest.raises(CodecError, match="exceeds"):
            lossless.decode(self.data, params, F32, self.a.size)
        with pytest.raises(CodecError, match="raw plane 0 holds"):  # a shorter count: plane 0 is too long
            lossless.decode(self.data, params, F32, self.a.size - 2)

    def test_huge_count_refused_before_allocating(self):
        assert lossless.max_decoded_count(self.params, F32) < 2 * self.a.size
        tracemalloc.start()
        try:
            with pytest.raises(CodecError, match="exceeds"):
                lossless.decode(self.data, self.params, F32, 10**11)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 2**20

    def test_corrupt_head_stream(self):
        bad = bytearray(self.data)
        bad[-9] ^= 0x5A  # inside the head's words
        with pytest.raises(CodecError, match="entropy stream"):
            lossless.decode(bytes(bad), self.params, F32, self.a.size)


def _python(code: str) -> str:
    import os
    import subprocess
    import sys
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_numba_is_imported_only_when_a_stream_is_coded():
    out = _python("""
import sys
import numpy as np
from quantcli.codecs import lossless
print("numba" in sys.modules)
lossless.encode(np.ones(10, np.float32))
print("numba" in sys.modules)
""")
    assert out.split() == ["False", "True"]


def test_kernels_come_from_the_on_disk_cache():
    """A second process compiles nothing: every kernel a round trip uses is a cache hit."""
    code = """
import numpy as np, ml_dtypes
from quantcli.codecs import lossless
from quantcli.kernels import lossless as K
for dt in (np.float32, ml_dtypes.bfloat16, np.float16, np.float64):
    a = (np.arange(70001, dtype=np.float64) * 1e-4).astype(dt)
    data, params = lossless.encode(a)
    assert lossless.decode(data, params, a.dtype, a.size).tobytes() == a.tobytes()
kernels = [K.split_planes, K.merge_planes, K.split_head, K.merge_head, K.merge_head_packed, K.pack6]
print(sum(len(k.stats.cache_misses) for k in kernels), sum(len(k.stats.cache_hits) for k in kernels))
"""
    _python(code)  # fills the cache if this install has not yet
    misses, hits = map(int, _python(code).split())
    assert misses == 0 and hits >= 6


def test_golden_rotl1h10_archive(tmp_path):
    """`quant quantize --method lossless` of a float32 and a bfloat16 weight: the archive's bytes are
    pinned (a change is a format change), both use rotl1h10, and they decode bit for bit."""
    import json
    import os

    from quantcli import Spec, open_archive, quantize_file
    from quantcli.io.output import SafetensorsWriter
    from quantcli.io.safetensors import SafetensorsFile
    w = golden_weights().reshape(350, 200)
    src, out = str(tmp_path / "g.safetensors"), str(tmp_path / "g.qnt.safetensors")
    writer = SafetensorsWriter(src)
    writer.add("w32", w)
    writer.add("w16", w.astype(BF16))
    writer.finish({"format": "pt"})
    quantize_file([src], out, Spec(method="lossless"), jobs=1)
    with SafetensorsFile(out) as st:
        manifest = json.loads(st.metadata["quant.manifest"])
    assert [t["codecs"]["values"]["transform"] for t in manifest["tensors"]] == ["rotl1h10", "rotl1h10"]
    with open_archive(out) as a:
        assert a.decode(a.by_name["w32"]).tobytes() == w.tobytes()
        assert a.decode(a.by_name["w16"]).tobytes() == w.astype(BF16).tobytes()
    digest = hashlib.sha256(open(out, "rb").read()).hexdigest()
    if os.environ.get("QUANT_REPIN"):
        print(f"rotl1h10 archive: {digest}")
        return
    assert digest == "f5f48333c214e52d2558f10c21d0442fc56831472b95fcfa193192e045e44806"  # + the original-file record


def old_archive_inputs() -> dict[str, np.ndarray]:
    """The tensors of tests/golden/lossless-bc1329b.qnt.safetensors, from integers only: golden
    weights in each float dtype with NaN payloads (quiet, signalling, negative), infinities,
    subnormals and both zeros spliced in (these are stored `rotl1`), and plain golden weights in
    float32 and bfloat16 (stored `rotl1h10`)."""
    out = {}
    for name, dt, n in (("f32", F32, 3000), ("bf16", BF16, 3000), ("f16", F16, 3000), ("f64", F64, 300)):
        a = golden_weights(n).astype(dt).reshape(-1, 10)
        k = dt.itemsize
        bits = a.reshape(-1).view(UINT[k])
        exp = {2: 0x7C00 if dt == F16 else 0x7F80, 4: 0x7F800000, 8: 0x7FF0000000000000}[k]
        sign = 1 << (8 * k - 1)
        special = [exp | 1, exp | 5, exp | (exp >> 1 & ~exp), sign | exp | 3, exp, sign | exp, 0, sign, 1, sign | 7]
        bits[:: n // len(special)][: len(special)] = np.array(special, dtype=np.uint64).astype(UINT[k])
        out[name] = a
    out["f32-plain"] = golden_weights(6000).reshape(60, 100)
    out["bf16-plain"] = golden_weights(6000).astype(BF16)
    return out


def test_archive_written_before_the_kernel_rewrite_still_decodes():
    """tests/golden/lossless-bc1329b.qnt.safetensors was written by commit bc1329b (the version
    before the lossless kernels moved to lossless_kernels.py): it decodes bit for bit, and today's
    writer still writes the same bytes."""
    import os

    import json

    from quantcli import Spec, open_archive, quantize_file
    from quantcli.io.output import SafetensorsWriter
    from quantcli.io.safetensors import SafetensorsFile
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    golden = os.path.join(tests, "golden", "lossless-bc1329b.qnt.safetensors")
    want = old_archive_inputs()
    with SafetensorsFile(golden) as st:
        manifest = json.loads(st.metadata["quant.manifest"])
    layouts = {t["name"]: t["codecs"]["values"]["transform"] for t in manifest["tensors"]}
    assert layouts == {"f32": "rotl1", "bf16": "rotl1", "f16": "rotl1", "f64": "rotl1",
                       "f32-plain": "rotl1h10", "bf16-plain": "rotl1h10"}
    with open_archive(golden) as a:
        assert sorted(t.name for t in a.tensors) == sorted(want)
        for name, x in want.items():
            back = a.decode(a.by_name[name])
            assert back.dtype == x.dtype and back.shape == x.shape and back.tobytes() == x.tobytes(), name
    with tempfile.TemporaryDirectory() as tmp:
        src, out = os.path.join(tmp, "src.safetensors"), os.path.join(tmp, "out.qnt.safetensors")
        writer = SafetensorsWriter(src)
        for name, x in want.items():
            writer.add(name, x)
        writer.finish({"format": "pt"})
        quantize_file([src], out, Spec(method="lossless"), include_1d=True, jobs=1)
        with SafetensorsFile(out) as new, SafetensorsFile(golden) as old:  # the same stored arrays and entries;
            today = json.loads(new.metadata["quant.manifest"])         # the input file's record is new (issue 22)
            assert today.pop("original")["format"] == "safetensors"
            assert today == manifest and new.entries.keys() == old.entries.keys()
            assert all(new.read(k).tobytes() == old.read(k).tobytes() for k in old.entries)
