"""The lossless codec's `rotl1h10` layout (10-bit head rANS-coded, 6-bit residual, low byte planes):
golden bytes, the same bytes from the numba and numpy paths, bit-exact round trips on hostile
input in both float layouts, old `rotl1` streams still read, forged params refused before any
large allocation."""

from __future__ import annotations

import hashlib
import tracemalloc

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import oracles
from quantcli.codecs import CodecError, lossless
from quantcli.packing import pack_bits, unpack_bits

BF16 = np.dtype(ml_dtypes.bfloat16)
F32, F16, F64 = np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.float64)
UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


@pytest.fixture(params=["numba", "numpy"])
def backend(request, monkeypatch):
    """"numpy": the rANS kernels swapped for their numpy twins (tests/oracles/rans.py)."""
    oracles.use(monkeypatch, "rans", oracle=request.param == "numpy")
    return request.param


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


def test_golden_rotl1h10(backend):
    w = golden_weights()
    data, params = roundtrip(w)
    assert params["transform"] == "rotl1h10"
    assert [p["codec"] for p in params["planes"]] == ["raw", "raw", "raw", "rans"]
    assert params["planes"][2]["nbytes"] == 6 * w.size // 8  # the 6-bit residual, bit-packed
    assert len(data) < 0.997 * len(lossless.encode(w, "rotl1")[0])  # two mantissa bits joined to the exponent
    assert params["planes"][3] == {"codec": "rans", "nbytes": 33888, "lanes": 3, "table_nbytes": 48}
    assert hashlib.sha256(data).hexdigest() == "1f8a1f50baca761ea94be986da9f1e4a11ed9137e3ef9df60c0af8596eb30b90"


def test_old_rotl1_streams_still_decode(backend):
    """What quant wrote before rotl1h10 (pinned in test_codecs' golden test) reads back exactly."""
    w = golden_weights()
    data, params = lossless.encode(w, "rotl1")
    assert params["transform"] == "rotl1" and [p["codec"] for p in params["planes"]] == ["raw", "raw", "rans", "rans"]
    assert lossless.decode(data, params, F32, w.size).tobytes() == w.tobytes()
    bf = w.astype(BF16)
    data, params = roundtrip(bf, "rotl1")
    assert params["planes"][1]["codec"] == "rans"


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 1000, 4097])
def test_pack6_kernel_matches_packing(n):
    res = np.random.default_rng(n).integers(0, 64, n).astype(np.uint8)
    want = pack_bits(res, 6).tobytes()
    got = {}
    for be in ("numba", "numpy"):
        with pytest.MonkeyPatch.context() as mp:
            oracles.use(mp, "rans", oracle=be == "numpy")
            got[be] = lossless._pack_res(res)
            out = np.empty(n, np.uint8)
            lossless._unpack_res(np.frombuffer(want, np.uint8), out)
            assert np.array_equal(out, unpack_bits(np.frombuffer(want, np.uint8), 6, n))
    assert got["numba"] == got["numpy"] == want


def weights_like(dtype: np.dtype, n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 0.04).astype(dtype)


@pytest.mark.parametrize("dtype", [F32, BF16, F16], ids=str)
@pytest.mark.parametrize("n", [5, 4099, 70001])
def test_numba_and_numpy_write_and_read_the_same_bytes(dtype, n, monkeypatch):
    a = weights_like(dtype, n, seed=n)
    out = {}
    for be in ("numba", "numpy"):
        oracles.use(monkeypatch, "rans", oracle=be == "numpy")
        out[be] = roundtrip(a, "rotl1h10")
    assert out["numba"] == out["numpy"]
    if n >= lossless.TRY_BOTH:
        assert out["numba"][1]["transform"] == "rotl1h10"
    for be in ("numba", "numpy"):  # and each reads the other's
        oracles.use(monkeypatch, "rans", oracle=be == "numpy")
        assert lossless.decode(*out["numba"], dtype, n).tobytes() == a.tobytes()


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
def test_hostile_inputs_bit_exact_in_every_layout(dtype, backend):
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


def test_golden_rotl1h10_archive(tmp_path):
    """`quant quantize --method lossless` of a float32 and a bfloat16 weight: the archive's bytes are
    pinned (a change is a format change), both use rotl1h10, and they decode bit for bit."""
    import json
    import os

    from quantcli import Spec, open_archive, quantize_file
    from quantcli.output import SafetensorsWriter
    from quantcli.safetensors_io import SafetensorsFile
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
    assert digest == "12b0872dac03aa2d20ff3aa30e7f084dcf409c4debc0bf1bb5be18972da035bf"
