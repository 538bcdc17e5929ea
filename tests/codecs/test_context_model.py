"""The `crans` codec (quantcli/codecs/context.py): round trips, the kernels and their numpy twins
(tests/oracles/crans.py) byte-identical, the division-free bucket of the kernels equal to its
definition, and forged streams refused before anything large is allocated."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import oracles
from quantcli.codecs import CODECS, CodecError, context, entropy
from quantcli.methods import dq


def backend(monkeypatch, name):
    """"numpy": the crans and rans kernels swapped for their numpy twins (tests/oracles/);
    "numba": the compiled kernels."""
    oracles.use(monkeypatch, "crans", oracle=name == "numpy")
    oracles.use(monkeypatch, "rans", oracle=name == "numpy")


def dq_codes(rows, cols, seed=0, step=0.3):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, cols)) * np.exp(rng.standard_normal((rows, 1)))).astype(np.float32)
    k = dq.trellis(x, step, 0.0).astype(np.int64)
    return k - int(k.min()), int(k.min())


@pytest.mark.parametrize("rows,cols", [(1, 1), (1, 7), (7, 1), (7, 13), (40, 64), (300, 50)])
def test_round_trip_both_backends_same_bytes(monkeypatch, rows, cols):
    codes, off = dq_codes(rows, cols, seed=rows * cols)
    alphabet = int(codes.max()) + 2
    streams = []
    for name in ("numba", "numpy"):
        backend(monkeypatch, name)
        data = context.encode(codes, alphabet, off, dq=True)
        out = context.decode(data, rows, cols)
        assert out.dtype == entropy.output_dtype(alphabet) and np.array_equal(out, codes)
        streams.append(data)
    assert streams[0] == streams[1]


def test_every_layout_round_trips_and_kernels_match_the_definition(monkeypatch):
    """Forced layouts with random rho, bucket counts and bases: the kernels compute buckets without
    a division, the numpy twin with `bucket`'s integer log; equal bytes prove them equal."""
    rng = np.random.default_rng(1)
    for trial in range(40):
        rows, cols = int(rng.integers(1, 30)), int(rng.integers(1, 50))
        scale = float(np.exp(rng.uniform(-1, 7)))
        k = np.rint(rng.standard_normal((rows, cols)) * scale).astype(np.int64)
        off = int(k.min())
        codes = k - off
        alphabet = int(codes.max()) + 1 + int(rng.integers(1, 3))
        cfg = (int(rng.integers(0, 2)), int(rng.integers(0, 4)), int(rng.integers(1, 20)), int(rng.integers(0, 60)))
        monkeypatch.setattr(context, "choose_config", lambda *a, cfg=cfg: cfg)
        streams = []
        for name in ("numba", "numpy"):
            backend(monkeypatch, name)
            data = context.encode(codes, alphabet, off, dq=True)
            assert np.array_equal(context.decode(data, rows, cols), codes), (trial, cfg)
            streams.append(data)
        assert streams[0] == streams[1], (trial, cfg)


def test_bucket_definition_values():
    # mean |k| so far = S / j; level = 4 steps an octave of (16 S // j + 16) / 16
    s = np.array([0, 1, 15, 16, 48, 10**6])
    assert list(context._level(s, 16, 2)) == [0, 0, 3, 4, 8, 63]
    assert list(context.bucket(s, 16, 2, 6, 1)) == [1, 1, 3, 4, 5, 5]
    assert list(context.bucket(s, 0, 2, 6, 1)) == [0] * 6  # column 0: no scale known yet
    assert list(context.bucket(s, 16, 2, 1, 0)) == [0] * 6  # one bucket


def test_contexts_split_by_dq_quantizer():
    k = np.array([[1, 0, -3, 2, 5]])
    q = (dq.states(k) >> 1).ravel()
    ctx = context.contexts(k, (1, 2, 1, 0)).ravel()
    assert list(ctx) == list(q)


def test_row_scale_context_pays_on_rows_of_different_scale():
    """Rows of 4 scales: the encoder picks row-scale buckets and the stream beats order-0 rans."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((256, 384)) * np.repeat([1, 3, 9, 27], 64)[:, None]
    k = np.rint(x).astype(np.int64)
    codes, off = k - k.min(), int(k.min())
    alphabet = int(codes.max()) + 1
    data = context.encode(codes, alphabet, off)
    cfg = context.parse_header(np.frombuffer(data, np.uint8))[0]
    assert cfg[2] > 1
    rans, _ = entropy.encode(codes, alphabet)
    assert len(data) < 0.93 * len(rans)


def test_tables_are_chosen_per_context_precision():
    counts = np.array([0, 5, 100, 1000, 100, 5, 0])
    p, f, bits = context.choose_table(counts)
    assert context.MIN_P <= p <= context.MAX_P and int(f.sum()) == 1 << p
    assert f[0] == 0 and f[-1] == 0 and np.all(f[1:-1] > 0)
    assert context.choose_table(np.zeros(4, np.int64))[:2] == (context.UNUSED, None)
    # a single present symbol gets a neighbour, so no frequency reaches the cap
    f1 = context.quantize_counts_p(np.array([0, 9, 0]), 6)
    assert f1 is not None and int(f1.max()) <= 64 - 1 and int(np.count_nonzero(f1)) == 2


def test_encode_refuses_bad_input():
    with pytest.raises(CodecError):
        context.encode(np.zeros((2, 2), np.int64), 2, 1 << 25)
    with pytest.raises(CodecError):
        context.encode(np.array([[0, 5]]), 4)
    with pytest.raises(CodecError):
        context.encode(np.zeros(3, np.int64), 2)
    with pytest.raises(CodecError):
        context.decode(context.encode(np.zeros((2, 2), np.int64), 2), 0, 2)


def forge(data: bytes, at: int, value: int) -> bytes:
    b = bytearray(data)
    b[at] = value
    return bytes(b)


def test_forged_headers_are_refused():
    codes, off = dq_codes(64, 32)
    data = context.encode(codes, int(codes.max()) + 1, off, dq=True)
    rows, cols = codes.shape
    for at, value, needle in ((0, 2, "layout"), (1, 4, "layout"), (2, 0, "layout"), (2, 33, "layout")):
        with pytest.raises(CodecError, match=needle):
            context.decode(forge(data, at, value), rows, cols)
    with pytest.raises(CodecError):  # more codes than the bytes can hold
        context.decode(data, rows * 10**6, cols)
    with pytest.raises(CodecError):  # lanes above the rows
        context.decode(data, 2, rows * cols // 2)
    with pytest.raises(CodecError):
        context.decode(data[:5], rows, cols)
    with pytest.raises(CodecError, match="canonical"):  # a varint with a redundant zero group
        context.decode(data[:4] + bytes([data[4] | 0x80, 0]) + data[5:], rows, cols)


def test_codec_params_bound_the_count_before_decoding():
    codec = CODECS["crans"]
    codes, off = dq_codes(20, 30)
    data, params = codec.encode(codes, offset=off, dq=True)
    assert params == {"nbytes": len(data)}
    assert codec.max_decoded_nbytes(params, (20, 30)) == 1200
    with pytest.raises(CodecError):
        codec.max_decoded_nbytes(params, (10**9, 30))
    with pytest.raises(CodecError):
        codec.max_decoded_nbytes({"nbytes": len(data), "lanes": 1}, (20, 30))
    with pytest.raises(CodecError):
        codec.decode(data, {"nbytes": len(data) + 1}, np.uint8, (20, 30))
    np.testing.assert_array_equal(codec.decode(data, params, np.uint16, (20, 30)), codes)


@pytest.mark.parametrize("be", ["numba", "numpy"])
def test_mutated_streams_fail_cleanly_and_allocate_little(monkeypatch, be):
    """Random bit flips, byte edits and truncations: a CodecError or the right shape, and the
    decoder's peak memory stays within a small multiple of output + stream."""
    backend(monkeypatch, be)
    codes, off = dq_codes(48, 40, seed=5)
    data = context.encode(codes, int(codes.max()) + 1, off, dq=True)
    rng = np.random.default_rng(7)
    outcomes = {"error": 0, "decoded": 0}
    for _ in range(150):
        b = bytearray(data)
        kind = int(rng.integers(0, 3))
        if kind == 0:
            i = int(rng.integers(0, len(b) * 8))
            b[i // 8] ^= 1 << (i % 8)
        elif kind == 1:
            b[int(rng.integers(0, min(len(b), 64)))] = int(rng.integers(0, 256))
        else:
            b = b[:int(rng.integers(0, len(b)))]
        tracemalloc.start()
        try:
            out = context.decode(bytes(b), 48, 40)
            assert out.shape == (48, 40)
            outcomes["decoded"] += 1
        except CodecError:
            outcomes["error"] += 1
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert peak < 64 * (48 * 40 * 2 + len(data)) + (1 << 21)
    assert outcomes["error"] > 50


# -- issue 22: table sizes bounded by the output, before anything is allocated ----------------------

def _forced_stream(monkeypatch, codes, alphabet, offset, cfg, p=None) -> bytes:
    """A stream the encoder would never write but a forger can: layout `cfg` whatever it costs,
    and (p given) every used context at precision p."""
    with monkeypatch.context() as m:
        m.setattr(context, "choose_config", lambda *a: cfg)
        if p is not None:
            m.setattr(context, "choose_table", lambda c: (p, context.quantize_counts_p(c, p), 0.0) if c.sum()
                      else (context.UNUSED, None, 4.0))
        return context.encode(codes, alphabet, offset)


def _peak(fn):
    tracemalloc.start()
    try:
        return fn(), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("be", ["numba", "numpy"])
def test_many_contexts_of_a_wide_alphabet_cost_memory_of_the_output_only(monkeypatch, be):
    """The red team's case: 64 contexts of a 65,536-symbol alphabet, nearly all unused, in a
    stream of a few hundred bytes decoding to 0.25 MB. The decoder used to allocate its tables as
    [contexts, alphabet] (79 MB of RSS, 313x the output); they are now the spans the stream
    declares, so the peak stays near the output's size."""
    backend(monkeypatch, be)
    codes = np.zeros((512, 256), np.int64)
    codes[::97, ::31] = 2
    data = _forced_stream(monkeypatch, codes, 1 << 16, 0, (1, 2, 32, 0))
    assert len(data) < 4096 and context.parse_header(np.frombuffer(data, np.uint8))[1] == 1 << 16
    out, peak = _peak(lambda: context.decode(data, 512, 256))
    assert out.dtype == np.uint16 and np.array_equal(out, codes)
    assert peak < 3 * out.nbytes + (1 << 18), peak  # was > 100 MB


def test_precisions_beyond_what_the_codes_need_are_refused_before_allocating(monkeypatch):
    """Every used context at P = 16 for 72 codes declares 131,072 slots (as many slot-table
    entries): more than 8 (n + 64) per used context, which the encoder never exceeds."""
    codes = np.arange(72).reshape(6, 12) % 5
    data = _forced_stream(monkeypatch, codes, 5, 0, (1, 2, 1, 0), p=16)
    with pytest.raises(CodecError, match="table precisions declare 131072 slots, more than 72 codes justify"):
        context.decode(data, 6, 12)
    honest = _forced_stream(monkeypatch, codes, 5, 0, (1, 2, 1, 0))
    assert np.array_equal(context.decode(honest, 6, 12), codes)


def test_encoder_precision_keeps_the_slot_bound():
    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 40, 150, 1000, 30000):
        for scale in (0.3, 3.0, 100.0, 3000.0):
            k = np.round(rng.laplace(0, scale, n)).astype(np.int64)
            p, f, _ = context.choose_table(np.bincount(k - k.min()))
            assert 1 << p <= context.max_slots(n) and int(f.sum()) == 1 << p


def test_forged_wide_tables_in_a_resigned_archive_decode_in_bounded_memory_or_are_refused(monkeypatch, tmp_path):
    """The same forgeries inside an ecsq archive whose checksums are all recomputed: the wide
    alphabet decodes to the honest values with little memory; precisions beyond the bound are
    one line naming the file and tensor (exit 2), from verify as from dequantize."""
    import fuzzing as fz
    from quantcli import open_archive

    seed = fz.build_seeds(str(tmp_path / "seeds"))["archive-ecsq"]
    honest_path = str(tmp_path / "honest.qnt.safetensors")
    with open(honest_path, "wb") as f:
        f.write(seed.data)
    with open_archive(honest_path) as a:
        t = a.by_name["w"]
        codes = np.asarray(a.encoding(t).arrays["codes"]).astype(np.int64).reshape(6, 12)
        expected = a.decode(t)

    def with_stream(stream):
        def edit(m, arrays, meta):  # the codes stored through crans (format 2), as ecsq's --codec entropy does
            t = next(t for t in m["tensors"] if t["name"] == "w")
            arrays[t["arrays"]["codes"]] = np.frombuffer(stream, np.uint8).copy()
            t["codecs"] = {"codes": {"codec": "crans", "nbytes": len(stream)}}
            meta["quant.version"] = "2"
        return edit

    wide = str(tmp_path / "wide.qnt.safetensors")
    with open(wide, "wb") as f:
        f.write(fz._resign(seed, with_stream(_forced_stream(monkeypatch, codes, 1 << 16, 0, (1, 2, 1, 0)))))
    with open_archive(wide) as a:
        values, peak = _peak(lambda: a.decode(a.by_name["w"]))
    np.testing.assert_array_equal(values, expected)
    assert peak < 1 << 17, peak  # the dense tables were 2 x 65,536 entries: > 2 MB
    sharp = str(tmp_path / "sharp.qnt.safetensors")
    with open(sharp, "wb") as f:
        f.write(fz._resign(seed, with_stream(_forced_stream(monkeypatch, codes, int(codes.max()) + 1, 0, (1, 2, 1, 0),
                                                            p=16))))
    for args in (["verify", sharp], ["dequantize", sharp, "-o", str(tmp_path / "o.safetensors")]):
        fz.one_error(fz.cli(*args), sharp, "tensor 'w'", "more than 72 codes justify")
    assert not (tmp_path / "o.safetensors").exists()
