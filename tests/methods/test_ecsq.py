"""ecsq: entropy-coded scalar quantization, --sqnr's common step, and entropy-coded storage of
other methods' codes (--codec entropy)."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays
from typer.testing import CliRunner

import fuzzing as fz
import quantcli.pipeline.parallel
from quantcli import ConfigError, InputError, Spec, open_archive, quantize_file
from quantcli.cli.commands import app
from quantcli.errors import ArchiveError
from quantcli.methods import get_method
from quantcli.methods.ecsq import rounding_error, step_for_sqnr
from quantcli.metrics import sum_squares
from quantcli.io.safetensors import SafetensorsFile

EC = get_method("ecsq")


def test_seed_matrix_golden(seed_matrix):
    """Step 0.5 on the seed's matrix: every value to its nearest multiple of 0.5, no clipping."""
    enc, err = EC.encode_measured(seed_matrix, Spec(method="ecsq", step=0.5))
    out = EC.decode(enc, seed_matrix.shape)
    np.testing.assert_array_equal(out, np.rint(seed_matrix / np.float32(0.5)).astype(np.float32) * np.float32(0.5))
    assert err.max_abs <= 0.25 + 1e-7
    q = np.rint(seed_matrix / np.float32(0.5)).astype(np.int64)
    assert enc.params["offset"] == q.min() and enc.params["levels"] == q.max() - q.min() + 1
    assert enc.params["bits"] == max(1, math.ceil(math.log2(enc.params["levels"])))


@settings(max_examples=60, deadline=None)
@given(x=arrays(np.float32, st.tuples(st.integers(1, 9), st.integers(1, 40)),
                elements=st.floats(-1e3, 1e3, width=32, allow_subnormal=True)),
       step=st.floats(0.04, 10.0))  # 2000 / 0.04 = 50,000 levels at most: within the coder's alphabet
def test_error_bound_and_exact_decode(x, step):
    spec = Spec(method="ecsq", step=step)
    enc, err = EC.encode_measured(x, spec)
    out = EC.decode(enc, x.shape)
    s = float(np.float32(step))
    assert out.shape == x.shape and out.dtype == np.float32
    assert np.all(np.abs(out.astype(np.float64) - x) <= s / 2 * (1 + 1e-6) + 1e-3 * s)  # float32 rounding slack
    assert err.max_abs == float(np.abs(out - x).max())
    assert enc.arrays["codes"].max() < enc.params["levels"]
    assert EC.params_for(x.shape, spec, x) == enc.params


def test_too_many_levels_is_refused():
    x = np.array([[0.0, 1e6]], np.float32)
    with pytest.raises(InputError, match="grid levels"):
        EC.encode(x, Spec(method="ecsq", step=1.0))


def test_needs_step_or_sqnr():
    with pytest.raises(ConfigError):
        EC.encode(np.ones((2, 2), np.float32), Spec(method="ecsq"))
    with pytest.raises(ConfigError):
        Spec(method="ecsq", step=1.0, sqnr=30.0)
    with pytest.raises(ConfigError):
        Spec(method="ecsq", step=-1.0)
    with pytest.raises(ConfigError):
        Spec(method="ecsq", sqnr=float("nan"))


def test_step_for_sqnr_is_the_largest_step_meeting_the_target():
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((64, 96)).astype(np.float32) * s for s in (0.02, 0.5, 3.0)]
    signal = sum(sum_squares(x) for x in xs)
    for target in (12.0, 27.0, 41.2):
        step = step_for_sqnr(lambda: iter(xs), target)
        err = sum(rounding_error(x, step) for x in xs)
        assert 10 * math.log10(signal / err) >= target
        coarser = float(np.float32(step * 1.002))
        assert 10 * math.log10(signal / sum(rounding_error(x, coarser) for x in xs)) < target + 0.05


def test_quantize_sqnr_through_the_cli(tiny_model, tmp_path):
    out = tmp_path / "e.qnt.safetensors"
    r = CliRunner().invoke(app, ["quantize", tiny_model, "-o", str(out), "--method", "ecsq", "--sqnr", "30",
                                 "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert 30.0 <= doc["totals"]["overall_sqnr_db"] < 30.5
    steps = {t["params"]["step"] for t in doc["tensors"] if t["method"] == "ecsq"}
    assert len(steps) == 1  # one common step
    with SafetensorsFile(str(out)) as st_:
        assert st_.metadata["quant.version"] == "2"
    assert CliRunner().invoke(app, ["verify", str(out)]).exit_code == 0
    with open_archive(str(out)) as a:
        used = set()
        for t in a.tensors:
            if t.method == "ecsq":  # entropy-coded where that is smaller, never above the fixed rate
                used.add(t.codecs["codes"]["codec"])  # crans within rans's bound, else rans
                assert a.stored_nbytes(t) <= math.ceil(t.size * t.params["bits"] / 8)
        assert "crans" in used and used <= {"crans", "rans"}


def test_dry_run_refuses_data_dependent_sizes(tiny_model, tmp_path):
    r = CliRunner().invoke(app, ["quantize", tiny_model, "--dry-run", "--method", "ecsq", "--step", "0.01"])
    assert r.exit_code == 2 and "depend on the data" in r.stderr


@pytest.mark.parametrize("spec", [Spec(), Spec(bits=4, scheme="asymmetric", granularity="group", group_size=16),
                                  Spec(method="nf", bits=4, granularity="group", group_size=16),
                                  Spec(method="kmeans", bits=3, normalize="group", group_size=16)])
def test_codec_entropy_is_smaller_and_decodes_the_same(tiny_model, tmp_path, spec):
    """Never larger (a tiny model: the codecs' manifest entries would cost more than they save,
    so they are not used); clearly smaller on bell-shaped weights; the same values either way."""
    w = np.random.default_rng(2).standard_normal((256, 512)).astype(np.float32) * 0.05
    np.save(tmp_path / "w.npy", w)
    for src, strictly in ((tiny_model, False), (str(tmp_path / "w.npy"), True)):
        fixed, coded = str(tmp_path / "f.qnt.safetensors"), str(tmp_path / "c.qnt.safetensors")
        quantize_file([src], fixed, spec)
        quantize_file([src], coded, spec.with_options(codec="entropy"))
        assert os.path.getsize(coded) < os.path.getsize(fixed) * (0.97 if strictly else 1.0001)
        with open_archive(fixed) as a, open_archive(coded) as b:
            for t in a.tensors:
                np.testing.assert_array_equal(a.decode(t), b.decode(b.by_name[t.name]))


def test_entropy_bytes_do_not_depend_on_jobs(tiny_model, tmp_path, monkeypatch):
    one, two = str(tmp_path / "1.qnt.safetensors"), str(tmp_path / "2.qnt.safetensors")
    spec = Spec(method="ecsq", step=0.01)
    quantize_file([tiny_model], one, spec, jobs=1)
    monkeypatch.setattr(quantcli.pipeline.parallel, "PARALLEL_MIN_BYTES", 0)
    quantize_file([tiny_model], two, spec, jobs=2)
    assert open(one, "rb").read() == open(two, "rb").read()


def _forge(path: str, change) -> None:
    """`change(entry)` applied to the archive's ecsq entry, checksums recomputed (a malicious but
    self-consistent archive)."""
    def edit(manifest, arrays, meta):
        for entry in manifest["tensors"]:
            if entry["method"] == "ecsq":
                change(entry)
    fz.resign_file(path, path, edit)


@pytest.mark.parametrize("change", [
    lambda e: e["params"].update(levels=1, bits=1),              # codes beyond the declared levels
    lambda e: e["params"].update(step=float("1e-50")),            # not a float32 value
    lambda e: e["codecs"]["codes"].update(lanes=10**9),           # a forged coder model
    lambda e: e.update(shape=[e["shape"][0] * 1000, e["shape"][1]]),  # more codes than the stream can hold
])
def test_forged_ecsq_archives_are_refused(tmp_path, change):
    x = np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)
    np.save(tmp_path / "w.npy", x)
    path = str(tmp_path / "w.qnt.safetensors")
    quantize_file([str(tmp_path / "w.npy")], path, Spec(method="ecsq", step=0.05))
    _forge(path, change)
    with pytest.raises(ArchiveError):
        with open_archive(path) as a:
            for t in a.tensors:
                a.decode(t)


def test_trellis_is_smaller_at_equal_sqnr_and_decodes_exactly(tmp_path):
    """Dependent quantization: the same target SQNR in fewer bytes than plain rounding, and the
    archive reproduces the encoder's reconstruction bit for bit (states rebuilt per row)."""
    x = np.random.default_rng(4).standard_normal((128, 256)).astype(np.float32) * 0.05
    np.save(tmp_path / "w.npy", x)
    sizes = {}
    for trellis in (False, True):
        out = str(tmp_path / f"{trellis}.qnt.safetensors")
        r = quantize_file([str(tmp_path / "w.npy")], out, Spec(method="ecsq", sqnr=30.0, trellis=trellis))
        assert r.overall_sqnr_db >= 30.0
        sizes[trellis] = r.archive_bytes
        with open_archive(out) as a:
            t = a.tensors[0]
            assert t.params.get("dq", False) is trellis
            err = sum_squares(x - a.decode(t))
            assert r.quantized.error == pytest.approx(err, rel=1e-12)
    assert sizes[True] < sizes[False] * 0.98


def test_step_rms_through_the_pipeline(tmp_path):
    x = np.random.default_rng(5).standard_normal((32, 64)).astype(np.float32) * 3
    np.save(tmp_path / "w.npy", x)
    r = quantize_file([str(tmp_path / "w.npy")], str(tmp_path / "w.qnt.safetensors"),
                      Spec(method="ecsq", step_rms=0.25))
    rms = float(np.sqrt((x.astype(np.float64) ** 2).mean()))
    assert r.tensors[0].params["step"] == pytest.approx(0.25 * rms, rel=1e-6)


def test_kmeans_codebooks_larger_than_the_tensor_are_refused():
    km = get_method("kmeans")
    with pytest.raises(ConfigError, match="codebooks"):
        km.encode(np.ones(100_000, np.float32), Spec(method="kmeans", bits=4))  # channel on 1-D: a book per value
    km.encode(np.ones(100_000, np.float32), Spec(method="kmeans", bits=4, granularity="tensor"))


def test_sqnr_on_all_zero_weights_is_exact(tmp_path):
    np.save(tmp_path / "z.npy", np.zeros((8, 8), np.float32))
    r = quantize_file([str(tmp_path / "z.npy")], str(tmp_path / "z.qnt.safetensors"), Spec(method="ecsq", sqnr=30.0))
    assert r.tensors[0].max_abs_err == 0 and r.overall_sqnr_db == math.inf


def test_forged_grid_beyond_float32_is_refused(tmp_path):
    x = np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)
    np.save(tmp_path / "w.npy", x)
    path = str(tmp_path / "w.qnt.safetensors")
    quantize_file([str(tmp_path / "w.npy")], path, Spec(method="ecsq", step=0.05))
    _forge(path, lambda e: e["params"].update(step=float(np.float32(3e37))))
    with pytest.raises(ArchiveError, match="float32"):
        with open_archive(path) as a:
            for t in a.tensors:
                a.decode(t)


@pytest.mark.parametrize("bad", [[999, 0], [1, 2, 3], ["a", 0], [True, 0]])
def test_forged_shrink_is_refused(tmp_path, bad):
    x = np.random.default_rng(2).standard_normal((64, 64)).astype(np.float32)
    np.save(tmp_path / "w.npy", x)
    path = str(tmp_path / "w.qnt.safetensors")
    quantize_file([str(tmp_path / "w.npy")], path, Spec(method="ecsq", step=0.5, trellis=True))
    _forge(path, lambda e: e["params"].update(shrink=bad))
    with pytest.raises(ArchiveError, match="shrink"):
        with open_archive(path) as a:
            for t in a.tensors:
                a.decode(t)


def test_reconstruction_offsets_lower_the_error():
    """Least-squares offsets of |L| = 1 and |L| >= 2 toward zero: at a coarse step on Laplacian
    weights the outer levels shrink, and the error is below plain reconstruction."""
    from quantcli.methods import ecsq
    x = np.random.default_rng(3).laplace(0, 1, (64, 256)).astype(np.float32)
    k, recon, shrink = ecsq.trellis_quantize(x, 1.2)
    plain = ecsq.shrunk(__import__("quantcli.methods.dq", fromlist=["dq"]).levels(k), 1.2, (0, 0))
    assert shrink[1] > 0 and shrink[0] != 0
    assert sum_squares(x - recon) < 0.997 * sum_squares(x - plain)
    assert ecsq.shrunk(np.array([0, 1, -1, 2, -5]), 2.0, (64, 32)).tolist() == [0.0, 1.5, -1.5, 3.75, -9.75]


OLD_ECSQ = {  # archives written before crans and shrink (format 2, rans codes): values pinned
    "ecsq-rans": "1853689ea47c58794638e11912c38d210df12649308e960153c85d96ea41ede2",
    "ecsq-rans-trellis": "7b38b342c8f996d8ccc3b8d88204cd72c13c04c36fa19237967423c4b5c800a1",
}


@pytest.mark.parametrize("name", sorted(OLD_ECSQ))
def test_archives_of_the_previous_codec_still_read(name):
    import hashlib
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "golden", f"{name}.qnt.safetensors")
    with open_archive(path) as a:
        assert a.verify() == []
        t = a.by_name["layer.weight"]
        assert t.codecs["codes"]["codec"] == "rans"
        assert hashlib.sha256(a.decode(t).tobytes()).hexdigest() == OLD_ECSQ[name]


def test_context_coded_codes_stay_within_the_rans_bound(tmp_path):
    """The planner sizes ecsq codes with entropy.size_bound: crans is used only within it."""
    from quantcli.codecs import entropy
    x = np.random.default_rng(6).standard_normal((96, 128)).astype(np.float32) * np.repeat([1, 4], 48)[:, None]
    np.save(tmp_path / "w.npy", x)
    for trellis in (False, True):
        path = str(tmp_path / f"w{trellis}.qnt.safetensors")
        quantize_file([str(tmp_path / "w.npy")], path, Spec(method="ecsq", step=0.1, trellis=trellis))
        with open_archive(path) as a:
            t = a.tensors[0]
            codes = a.encoding(t).arrays["codes"]
            bound = entropy.size_bound(np.bincount(codes.reshape(-1).astype(np.int64)))
            assert t.codecs["codes"]["codec"] == "crans" and a.stored_nbytes(t) <= bound


def test_huge_sqnr_targets_are_answers_not_overflows():
    """--sqnr 1e308 is out of reach (a usage error); --sqnr -1e308 is met by float32's largest step
    (every value rounds to 0), not a ZeroDivisionError."""
    x = np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)
    with pytest.raises(ConfigError, match="no step reaches"):
        step_for_sqnr(lambda: [x], 1e308)
    step = step_for_sqnr(lambda: [x], -1e308)
    assert step == float(np.finfo(np.float32).max)
    assert rounding_error(x, step) == pytest.approx(sum_squares(x))


def test_step_past_float32_is_refused_as_too_large():
    """--step-rms F whose step passes float32's range, or a grid whose outer level does, is refused
    for what it is (too large), never as a tiny fallback step or a forged-archive error."""
    x = np.random.default_rng(2).standard_normal((4, 64)).astype(np.float32)
    with pytest.raises(InputError, match="too large"):
        EC.encode(x, Spec(method="ecsq", step_rms=1e308))
    top = np.full((4, 64), np.finfo(np.float32).max, np.float32)
    with pytest.raises(InputError, match="too large"):
        EC.encode(top, Spec(method="ecsq", step=float(np.finfo(np.float32).max)))
