"""Issue 12, the methods layer: stored values are validated (not only checksums), sizes taken from
params are bounded by the tensor, memory stays a small multiple of the tensor, and whatever
`quantize` accepts, `verify` and `dequantize` accept and give back in its own shape and dtype."""

from __future__ import annotations

import json
import os
import tracemalloc

import numpy as np
import pytest

import fuzzing as fz
from fuzzing import cli, one_error
from quantcli import ArchiveError, ConfigError, QuantError, Spec, open_archive, quantize_file, verify_archive
from quantcli.methods import METHODS, get_method
from quantcli.methods.base import ANY, FINITE, NONNEGATIVE
from quantcli.io.output import SafetensorsWriter






def write_st(path, tensors: dict[str, np.ndarray]) -> str:
    w = SafetensorsWriter(str(path))
    for name, a in tensors.items():
        w.add(name, a)
    w.finish({"format": "pt"})
    return str(path)


def archive(tmp_path, spec: Spec, x: np.ndarray, name="a", **options) -> str:
    src = write_st(tmp_path / f"{name}.safetensors", {"w": x})
    out = str(tmp_path / f"{name}.qnt.safetensors")
    quantize_file([src], out, spec, **options)
    return out


def resign(path: str, edit) -> str:
    """The archive at `path`, forged by `edit` with every checksum recomputed (fuzzing.resign_file)."""
    return fz.resign_file(path, path.replace(".qnt.", ".forged.qnt."), edit)


def tensor(m, name="w"):
    return next(t for t in m["tensors"] if t["name"] == name)


RNG = np.random.default_rng(12)
W = (RNG.standard_normal((16, 24)) * 0.1).astype(np.float32)

# -- 1. values, not only checksums ----------------------------------------------------------------

FORGED_VALUES = [
    # (spec, role, value, message): every stored float array of every method
    (Spec(method="nf", bits=4, granularity="group", group_size=8), "scale", np.nan, "negative or non-finite scale"),
    (Spec(method="nf", bits=4, granularity="group", group_size=8), "scale", -1.0, "negative or non-finite scale"),
    (Spec(method="nf", bits=4, granularity="group", group_size=8, scale_dtype="bfloat16"), "scale", np.inf,
     "negative or non-finite scale"),
    (Spec(method="log", bits=4), "scale", np.nan, "negative or non-finite scale"),
    (Spec(method="log", bits=4), "scale", -0.5, "negative or non-finite scale"),
    (Spec(bits=4, granularity="group", group_size=8), "scale", -np.inf, "negative or non-finite scale"),
    (Spec(method="kmeans", bits=3, normalize="group", group_size=8), "scale", np.inf, "negative or non-finite scale"),
    (Spec(method="kmeans", bits=3, normalize="group", group_size=8), "scale", -2.0, "negative or non-finite scale"),
    (Spec(method="kmeans", bits=3, normalize="group", group_size=8), "codebook", np.nan, "non-finite codebook"),
    (Spec(method="kmeans", bits=2, granularity="tensor"), "codebook", np.nan, "non-finite codebook"),
    (Spec(method="kmeans", bits=2), "codebook", np.inf, "non-finite codebook"),
    (Spec(method="kmeans", bits=2, granularity="group", codebook_rows=4), "codebook", -np.inf, "non-finite codebook"),
    (Spec(method="vq", bits=4, vector_dim=3), "codebook", np.inf, "non-finite codebook"),
    (Spec(method="vq", bits=4, vector_dim=3, scale_dtype="float16"), "codebook", np.nan, "non-finite codebook"),
    (Spec(method="pq", subvector_dim=3, centroids=5), "codebooks", np.nan, "non-finite codebooks"),
    (Spec(method="fp16"), "values", np.nan, "non-finite values"),
    (Spec(method="fp16"), "values", -np.inf, "non-finite values"),
    (Spec(method="bf16"), "values", np.inf, "non-finite values"),
]


@pytest.mark.parametrize("spec, role, value, message", FORGED_VALUES,
                         ids=[f"{s.method}-{r}-{v}-{i}" for i, (s, r, v, _) in enumerate(FORGED_VALUES)])
def test_forged_float_values_are_refused_before_decoding(tmp_path, spec, role, value, message):
    path = archive(tmp_path, spec, W)

    def edit(m, arrays, meta):
        a = arrays[tensor(m)["arrays"][role]]
        a.reshape(-1)[a.size // 2] = value

    forged = resign(path, edit)
    with pytest.raises(ArchiveError, match=message):  # the checksums are honest: verify checks the values too
        verify_archive(forged)
    with open_archive(forged) as a, pytest.raises(ArchiveError, match=message) as e:
        a.decode(a.by_name["w"])
    assert e.value.tensor == "w"
    out = tmp_path / "o.safetensors"
    one_error(cli("dequantize", forged, "-o", out), "tensor 'w'", message)
    assert not out.exists()


def test_negative_codebook_entries_and_zero_scales_are_legal(tmp_path):
    """The rules are the methods' own: codebooks may be negative, a scale may be 0 (all-zero block)."""
    x = W.copy()
    x[:, :8] = 0  # whole zero groups: scale 0
    for spec in (Spec(method="nf", bits=4, granularity="group", group_size=8),
                 Spec(method="kmeans", bits=3, normalize="group", group_size=8)):
        path = archive(tmp_path, spec, x, name=spec.method)
        with open_archive(path) as a:
            enc = a.encoding(a.by_name["w"])
            assert float(enc.arrays["scale"].astype(np.float32).min()) == 0
            if "codebook" in enc.arrays:
                assert float(enc.arrays["codebook"].min()) < 0
            assert np.isfinite(a.decode(a.by_name["w"])).all()


def test_kept_tensors_are_data_and_may_hold_nan(tmp_path):
    x = W.copy()
    x[0, 0] = np.nan
    src = write_st(tmp_path / "nan.safetensors", {"w": x})
    out = str(tmp_path / "nan.qnt.safetensors")
    quantize_file([src], out, Spec(), keep_nonfinite=True)
    with open_archive(out) as a:
        values = a.decode(a.by_name["w"])
    assert a.by_name["w"].method == "keep" and np.isnan(values[0, 0]) and np.array_equal(values[1:], x[1:])


def test_every_method_declares_rules_the_reader_knows():
    """Every float array is FINITE unless its method names a looser or stricter rule."""
    for method in METHODS.values():
        assert set(method.value_rules.values()) <= {FINITE, NONNEGATIVE, ANY}, method.name
    assert METHODS["keep"].value_rules == {"values": ANY}
    for name in ("uniform", "nf", "log", "kmeans"):
        assert METHODS[name].value_rules["scale"] == NONNEGATIVE


# -- 2. sizes from params bounded by the tensor ----------------------------------------------------

FORGED_GROUPS = [
    # (spec, param set to 10**12): each stored array keeps its shape (one group or codebook per row/tensor)
    Spec(method="nf", bits=4, granularity="group", group_size=32),
    Spec(method="log", bits=3, granularity="group", group_size=32),
    Spec(bits=4, scheme="asymmetric", granularity="group", group_size=32),
    Spec(method="kmeans", bits=4, normalize="group", group_size=32),
    Spec(method="kmeans", bits=4, granularity="group", codebook_rows=64),
]


@pytest.mark.parametrize("spec", FORGED_GROUPS, ids=lambda s: f"{s.method}-{s.normalize}-{s.granularity}")
@pytest.mark.parametrize("huge", [2**31 - 1, 10**12, 2**62])
def test_huge_group_size_decodes_within_the_tensor_size(tmp_path, spec, huge):
    """A ~1 KB archive claiming a huge group: decoded like one group per row (or one codebook for
    all rows), with temporaries a small multiple of the output, never a size taken from params."""
    x = (RNG.standard_normal((64, 24)) * 0.1).astype(np.float32)
    path = archive(tmp_path, spec, x)

    def edit(m, arrays, meta):
        tensor(m)["params"]["group_size"] = huge

    forged = resign(path, edit)
    with open_archive(forged) as a:
        t = a.by_name["w"]
        tracemalloc.start()
        values = a.decode(t)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        with open_archive(path) as honest:
            expected = honest.decode(honest.by_name["w"])
    assert values.shape == x.shape and peak < 16 * x.nbytes + 65536, peak
    np.testing.assert_array_equal(values, expected)  # same as the honest archive: group == row (or all rows)


@pytest.mark.parametrize("spec", FORGED_GROUPS[:4], ids=lambda s: f"{s.method}-{s.normalize}")
def test_group_wider_than_the_row_is_the_row(tmp_path, spec):
    """Decision: --group-size beyond a row's length is clamped to the row (the archive records the
    group size as given); encoding allocates nothing beyond the tensor and decodes exactly as
    group_size = cols."""
    x = (RNG.standard_normal((32, 24)) * 0.1).astype(np.float32)
    method = get_method(spec.method)
    tracemalloc.start()
    huge = method.encode(x, spec.with_options(group_size=2**31 - 1))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    row = method.encode(x, spec.with_options(group_size=24))
    assert peak < 64 * x.nbytes + (1 << 20), peak
    for role in row.arrays:
        np.testing.assert_array_equal(huge.arrays[role], row.arrays[role])
    np.testing.assert_array_equal(method.decode(huge, x.shape), method.decode(row, x.shape))


def test_huge_group_size_on_the_command_line_is_clamped_not_out_of_memory(tmp_path):
    src = write_st(tmp_path / "in.safetensors", {"w": W})
    for args in (["--method", "nf", "--granularity", "group"], ["--method", "kmeans", "--normalize", "group"],
                 ["--granularity", "group"]):
        out = tmp_path / "o.qnt.safetensors"
        run = cli("quantize", src, "-o", out, "-q", "--group-size", 2**31 - 1, *args)
        assert run.exit_code == 0, run.stderr
        assert verify_archive(str(out)).ok
        out.unlink()
    one_error(cli("quantize", src, "-o", tmp_path / "o.qnt.safetensors", "--group-size", 10**12,
                  "--granularity", "group"), "--group-size must be at most 2147483647")


# -- 3. the writer never produces what the reader refuses -----------------------------------------

EDGE_SHAPES = [(), (1,), (5,), (0,), (1, 1), (7, 1), (1, 9), (3, 0), (0, 3), (2, 3, 4)]
EDGE_SPECS = [
    Spec(), Spec(bits=2, scheme="asymmetric", granularity="tensor"),
    Spec(bits=3, granularity="group", group_size=4), Spec(bits=4, granularity="group", group_size=2**31 - 1),
    Spec(method="nf", bits=4, granularity="group", group_size=4), Spec(method="nf", bits=2, scale_search=True),
    Spec(method="log", bits=8, granularity="tensor"),
    Spec(method="kmeans", bits=1), Spec(method="kmeans", bits=8, granularity="tensor"),
    Spec(method="kmeans", bits=3, granularity="group", codebook_rows=2),
    Spec(method="kmeans", bits=2, normalize="group", group_size=3),
    Spec(method="vq", bits=3, vector_dim=2), Spec(method="vq", bits=1, vector_dim=50),
    Spec(method="pq", centroids=3), Spec(method="pq", subspaces=1, centroids=2),
    Spec(method="fp16"), Spec(method="bf16"),
]


def _spec_id(s: Spec) -> str:
    return "-".join(f"{k}={v}" for k, v in vars(s).items() if v != getattr(Spec(), k)) or "default"


@pytest.mark.parametrize("spec", EDGE_SPECS, ids=_spec_id)
def test_whatever_quantize_accepts_verify_and_dequantize_accept(tmp_path, spec):
    """Every method on edge shapes (0-d, empty, one value, one row, one column): if quantize
    accepts them, verify accepts the archive and dequantize gives back every tensor in its shape and dtype,
    to .safetensors and to .npz; if it refuses, it says so in one line (exit 2), writing nothing."""
    tensors = {f"t{i}": (RNG.standard_normal(shape) * 0.1).astype(np.float32) for i, shape in enumerate(EDGE_SHAPES)}
    tensors["half"] = np.asarray(RNG.standard_normal((2, 3)), dtype=np.float16)
    tensors["half0d"] = np.asarray(0.25, dtype=np.float16)
    src = write_st(tmp_path / "in.safetensors", tensors)
    out = tmp_path / "a.qnt.safetensors"
    try:  # the library entry (pq's options have no command-line flags; recipes reach them)
        quantize_file([src], str(out), spec, include_1d=True)
    except QuantError as e:
        assert e.exit_code == 2 and "\n" not in str(e) and not out.exists()
        return
    assert cli("verify", out).exit_code == 0
    with open_archive(str(out)) as a:
        assert {t.name: t.shape for t in a.tensors} == {k: v.shape for k, v in tensors.items()}
        for t in a.tensors:
            assert a.decode(t).shape == tensors[t.name].shape
    from safetensors.numpy import load_file
    back = tmp_path / "back.safetensors"
    assert cli("dequantize", out, "-o", back, "-q").exit_code == 0
    got = load_file(str(back))
    assert {k: (v.shape, v.dtype) for k, v in got.items()} == {k: (v.shape, v.dtype) for k, v in tensors.items()}
    npz = tmp_path / "back.npz"
    assert cli("dequantize", out, "-o", npz, "-q").exit_code == 0
    with np.load(npz) as z:
        assert {k: z[k].shape for k in z.files} == {k: v.shape for k, v in tensors.items()}


def test_zero_d_tensors_round_trip_exactly(tmp_path):
    """Shape [] in, shape [] out, with every method; a 0-d .npy input too; kept as well."""
    x = np.asarray(1.5, dtype=np.float32)
    for method in ("uniform", "nf", "log", "kmeans", "vq", "pq", "fp16", "bf16"):
        path = archive(tmp_path, Spec(method=method), x, name=method, include_1d=True)
        with open_archive(path) as a:
            t = a.by_name["w"]
            assert t.shape == ()
            if "values" in t.arrays:  # fp16, bf16: the stored array is the tensor itself
                assert a.file.entries[t.arrays["values"]].shape == ()
            values = a.decode(t)
        assert values.shape == () and float(values) == pytest.approx(1.5, rel=0.01)
    kept = archive(tmp_path, Spec(), x, name="kept")
    with open_archive(kept) as a:
        assert a.file.entries["w"].shape == () and a.decode(a.by_name["w"]).shape == ()
    npy = tmp_path / "s.npy"
    np.save(npy, x)
    out = tmp_path / "s.qnt.safetensors"
    quantize_file([str(npy)], str(out), Spec(method="fp16"), include_1d=True)
    with open_archive(str(out)) as a:
        assert a.tensors[0].shape == () and a.decode(a.tensors[0]).shape == ()


def test_reader_limits_are_enforced_at_write_time_with_the_same_message(tmp_path):
    """--vector-dim beyond the reader's 65536: refused before anything is encoded or written,
    in the words the reader would use; the library entry points refuse it too."""
    src = write_st(tmp_path / "in.safetensors", {"w": W})
    out = tmp_path / "v.qnt.safetensors"
    message = "param 'vector_dim' = 100000 is outside 1..65536"
    one_error(cli("quantize", src, "-o", out, "--method", "vq", "--vector-dim", 100000), message)
    assert not out.exists()
    vq = get_method("vq")
    with pytest.raises(ConfigError, match=message):
        vq.encode(W, Spec(method="vq", vector_dim=100000))
    with pytest.raises(ConfigError, match=message):
        vq.encode_measured(W, Spec(method="vq", vector_dim=100000))
    assert vq.encode(W, Spec(method="vq", bits=2, vector_dim=65536)).params["pad"] == 65536 - 24


# -- 4. bounded memory on legal input ---------------------------------------------------------------

BOUNDED = [
    Spec(), Spec(bits=4, scheme="asymmetric", granularity="group", group_size=64),
    Spec(method="nf", bits=4, granularity="group", group_size=64), Spec(method="log", bits=4),
    Spec(method="kmeans", bits=4, normalize="group", group_size=64),
    Spec(method="kmeans", bits=4, granularity="tensor"),
    Spec(method="fp16"), Spec(method="bf16"),
]


@pytest.mark.parametrize("spec", BOUNDED, ids=_spec_id)
@pytest.mark.parametrize("shape", [(400_000,), (200, 2000)], ids=["1d", "2d"])
def test_encode_and_decode_hold_a_small_multiple_of_the_tensor(spec, shape):
    """Peak traced allocations (numpy reports to tracemalloc) of encode + measure and of decode:
    at most 12 copies of a float32 tensor. A 1-D tensor used to be padded to N x group_size."""
    x = (RNG.standard_normal(shape) * 0.02).astype(np.float32)
    method = get_method(spec.method)
    tracemalloc.start()
    enc, _ = method.encode_measured(x, spec)
    encode_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    values = method.decode(enc, shape)
    decode_peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    assert values.shape == shape
    assert encode_peak < 12 * x.nbytes, encode_peak / x.nbytes
    assert decode_peak < 6 * x.nbytes, decode_peak / x.nbytes


def test_memory_benchmark_table_is_recorded():
    """docs/BENCHMARKS-memory.md holds bench_memory.py's table: one row per case it runs."""
    import importlib.util
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    spec = importlib.util.spec_from_file_location("bench_memory", os.path.join(root, "benchmarks", "bench_memory.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    doc = open(os.path.join(root, "docs", "BENCHMARKS-memory.md")).read()
    for label, _ in bench.CASES:
        assert f"| {label} |" in doc, label


def test_manifest_json_is_unchanged_by_the_value_rules(tmp_path):
    """The rules are read-side only: nothing new is recorded in the manifest."""
    path = archive(tmp_path, Spec(method="nf", bits=4, granularity="group", group_size=8), W)
    from quantcli.io.safetensors import SafetensorsFile
    with SafetensorsFile(path) as f:
        entry = tensor(json.loads(f.metadata["quant.manifest"]))
    assert set(entry["params"]) == {"bits", "granularity", "group_size", "scale_dtype"}
