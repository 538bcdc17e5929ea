"""--importance: calibration statistics weight the quantizers' choices (issue 14).

Promises tested here: weighted searches lower the error they target (property tests); Gram
compensation lowers the layer's output error ||(W - Q) X^T|| against plain rounding on layers
with correlated inputs, for every method with a per-element grid; malformed files are refused
with one line naming the file and entry, exit 2, nothing written; the manifest records the
file's digest; results do not depend on --jobs; a dry run sizes the archive exactly."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from safetensors.numpy import load_file, save_file

import quantcli
import quantcli.pipeline.parallel
from quantcli import Spec
from quantcli.archive.container import Archive
from quantcli.calibration.importance import Importance, TensorImportance
from quantcli.methods import get_method
from quantcli.methods.compensate import compensate, input_factor
from quantcli.methods.kmeans import assign_sorted, kmeans_1d
from quantcli.methods.search import search_clip_ratios, uniform_qdq

from fuzzing import cli, one_error


def correlated_layer(seed: int = 0, out: int = 96, inn: int = 64, tokens: int = 3000):
    """A weight and inputs whose channels are correlated and of very different sizes."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(inn, inn)) / np.sqrt(inn)
    x = (rng.normal(size=(tokens, inn)) @ mix + 0.3 * rng.normal(size=(tokens, inn))) * rng.lognormal(0, 1, inn)
    w = rng.normal(size=(out, inn)).astype(np.float32)
    gram = x.T @ x / tokens
    return w, x, gram


def output_error(w: np.ndarray, q: np.ndarray, x: np.ndarray) -> float:
    d = (w - q).astype(np.float64)
    return float(np.sum((d @ x.T) ** 2))


def stats(gram: np.ndarray, with_gram: bool = True) -> TensorImportance:
    d = np.diag(gram) / np.diag(gram).mean()
    return TensorImportance(d, gram / np.diag(gram).mean() if with_gram else None, None)


SPECS = [
    Spec(method="uniform", bits=3, scheme="asymmetric", granularity="group", group_size=16),
    Spec(method="uniform", bits=4, scheme="symmetric", granularity="channel"),
    Spec(method="uniform", bits=4, scheme="symmetric", granularity="tensor"),
    Spec(method="nf", bits=3, granularity="group", group_size=32),
    Spec(method="log", bits=4, granularity="channel"),
    Spec(method="kmeans", bits=3, normalize="group", group_size=32),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.method}-{s.granularity}-{s.normalize}")
def test_compensation_lowers_output_error(spec):
    w, x, gram = correlated_layer()
    m = get_method(spec.method)
    plain = output_error(w, m.decode(m.encode(w, spec), w.shape), x)
    diag = output_error(w, m.decode(m.encode_importance(w, spec, stats(gram, False)), w.shape), x)
    full = output_error(w, m.decode(m.encode_importance(w, spec, stats(gram)), w.shape), x)
    assert full < 0.8 * plain
    assert full < diag


@pytest.mark.parametrize("spec", SPECS[:1] + SPECS[3:4] + SPECS[5:], ids=lambda s: s.method)
def test_compensated_encoding_is_valid_and_deterministic(spec):
    """Layout, dtypes and decode of a compensated encoding are those of a plain one; twice the same bytes."""
    w, _, gram = correlated_layer(1)
    m = get_method(spec.method)
    a, b, plain = m.encode_importance(w, spec, stats(gram)), m.encode_importance(w, spec, stats(gram)), m.encode(w, spec)
    assert set(a.arrays) == set(plain.arrays)
    for role in a.arrays:
        assert a.arrays[role].dtype == plain.arrays[role].dtype and a.arrays[role].shape == plain.arrays[role].shape
        np.testing.assert_array_equal(a.arrays[role], b.arrays[role])
    layout = m.layout(w.shape, a.params)
    assert {r: (lay.dtype, lay.shape) for r, lay in layout.items()} == \
        {r: (arr.dtype, arr.shape) for r, arr in a.arrays.items()}


def test_identity_gram_changes_nothing_but_the_search():
    """With G = I nothing spreads (each column's error has nowhere to go), so the codes are those
    of the plain weighted search: the compensation adds no error of its own."""
    w, _, _ = correlated_layer(2)
    spec = SPECS[0]
    m = get_method("uniform")
    eye = TensorImportance(np.ones(w.shape[1]), np.eye(w.shape[1]), None)
    searched = m.encode(w, spec.with_options(scale_search=True))
    comp = m.encode_importance(w, spec, eye)
    np.testing.assert_array_equal(m.decode(comp, w.shape), m.decode(searched, w.shape))


def test_input_factor_handles_dead_inputs():
    """A channel whose input is always zero makes G singular; damping and a unit diagonal keep the
    factor finite, and that channel couples to no other."""
    _, _, gram = correlated_layer(3, inn=16)
    gram[5, :] = gram[:, 5] = 0
    r = input_factor(gram)
    assert np.isfinite(r).all() and np.allclose(np.triu(r), r)
    assert np.allclose(r[5, 6:], 0) and np.allclose(r[:5, 5], 0)
    damped = gram + np.eye(16) * 0.01 * np.diagonal(gram)[np.diagonal(gram) > 0].mean()
    damped[5, 5] = 1 + 0.01 * np.diagonal(gram)[np.diagonal(gram) > 0].mean()
    np.testing.assert_allclose(r @ r.T, damped, rtol=1e-10, atol=1e-10)


def test_compensation_matches_the_inverse_form():
    """GPTQ's own form (spread each error through the upper Cholesky factor of G^-1) picks the same
    codes as the nearest-plane form used here, on a grid with no scale to fit."""
    w, _, gram = correlated_layer(10, out=40, inn=48)
    h = gram + np.eye(48) * 0.01 * np.diagonal(gram).mean()
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    step = 0.37
    m = w.astype(np.float64).copy()
    expect = np.empty_like(m)
    for j in range(48):
        q = np.rint(m[:, j] / step) * step
        expect[:, j] = q
        m[:, j + 1:] -= np.outer((m[:, j] - q) / u[j, j], u[j, j + 1:])

    class Grid:
        def fit(self, columns, start):
            pass

        def snap(self, column, j):
            return np.rint(column / step) * step

    got = compensate(w, gram, Grid(), 48, block=16)
    assert np.mean(got == expect) > 0.999


def test_compensate_with_exact_grid_is_exact():
    """A grid that reproduces every value (snap = identity) leaves no error to spread."""

    class Exact:
        def fit(self, columns, start):
            pass

        def snap(self, column, j):
            return column.copy()

    w, _, gram = correlated_layer(4, out=8, inn=20)
    np.testing.assert_allclose(compensate(w, gram, Exact(), 20), w, rtol=0, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), width=st.integers(2, 40), bits=st.integers(2, 5))
def test_weighted_clip_search_lowers_the_weighted_error(seed, width, bits):
    rng = np.random.default_rng(seed)
    blocks = (rng.standard_t(3, size=(12, width))).astype(np.float32)
    weights = rng.lognormal(0, 1.5, size=blocks.shape).astype(np.float32)
    qdq = uniform_qdq(bits, "asymmetric")

    def werr(ratio):
        d = qdq(blocks, ratio) - blocks
        return np.einsum("ij,ij,ij->i", d, d, weights, dtype=np.float64)

    weighted = werr(search_clip_ratios(blocks, qdq, weights=weights))
    plain = werr(search_clip_ratios(blocks, qdq))
    assert np.all(weighted <= plain + 1e-9 * (1 + plain))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(8, 300), k=st.sampled_from([2, 4, 8]))
def test_weighted_kmeans_lowers_the_weighted_error(seed, n, k):
    rng = np.random.default_rng(seed)
    v = rng.standard_t(4, size=(1, n)).astype(np.float32)
    w = rng.lognormal(0, 1.5, size=(1, n))

    def werr(codebook):
        cb = codebook.astype(np.float32)
        q = np.take_along_axis(cb, assign_sorted(v, cb).astype(np.int64), axis=1)
        return float(np.sum(w * (v.astype(np.float64) - q) ** 2))

    assert werr(kmeans_1d(v, k, weights=w)) <= werr(kmeans_1d(v, k)) * (1 + 1e-6) + 1e-12


# ----------------------------------------------------------------------------- files and the CLI


@pytest.fixture
def model(tmp_path):
    w, x, gram = correlated_layer(5, out=128, inn=64)
    rng = np.random.default_rng(6)
    path = tmp_path / "m.safetensors"
    save_file({"a.weight": w, "b.weight": rng.normal(size=(32, 128)).astype(np.float32),
               "emb.weight": rng.normal(size=(50, 64)).astype(np.float32), "b.bias": np.ones(32, np.float32)},
              str(path))
    imp = tmp_path / "imp.safetensors"
    rows = rng.dirichlet(np.ones(50)).astype(np.float32)
    save_file({"a.weight": np.diag(gram).astype(np.float32), "a.weight.gram": gram.astype(np.float32),
               "emb.weight.rows": rows}, str(imp), metadata={"format": "quant-importance", "tokens": "3000"})
    return path, imp, x


def test_quantize_records_digest_and_reports_output_sqnr(model, tmp_path):
    path, imp, x = model
    out = tmp_path / "o.qnt.safetensors"
    r = cli("quantize", path, "-o", out, "--bits", "3", "--granularity", "group", "--group-size", "16",
            "--importance", imp, "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    digest = hashlib.sha256(imp.read_bytes()).hexdigest()
    assert doc["importance"]["sha256"] == digest and doc["importance"]["tokens"] == 3000
    assert doc["importance"]["weighted"] == ["a.weight", "emb.weight"] and doc["importance"]["without"] == ["b.weight"]
    by = {t["name"]: t for t in doc["tensors"]}
    assert by["a.weight"]["params"]["importance"] == f"sha256:{digest}"
    assert "importance" not in by["b.weight"]["params"] and "output_sqnr_db" not in by["b.weight"]
    archive = Archive(str(out))
    assert archive.by_name["a.weight"].metrics["output_sqnr_db"] == pytest.approx(by["a.weight"]["output_sqnr_db"])
    # the recorded output SQNR is the one of the decoded weights under the file's Gram
    w = load_file(str(path))["a.weight"]
    q = quantcli.load(str(out))["a.weight"]
    g = load_file(str(imp))["a.weight.gram"].astype(np.float64)
    d = (w - q).astype(np.float64)
    expect = 10 * np.log10(np.trace(w @ g @ w.T) / np.trace(d @ g @ d.T))
    assert by["a.weight"]["output_sqnr_db"] == pytest.approx(expect, abs=1e-3)
    # and it beats the same setting without statistics, on the layer's real inputs
    plain = tmp_path / "p.qnt.safetensors"
    assert cli("quantize", path, "-o", plain, "--bits", "3", "--granularity", "group", "--group-size", "16",
               "--scale-search").exit_code == 0
    assert output_error(w, q, x) < 0.7 * output_error(w, quantcli.load(str(plain))["a.weight"], x)
    text = cli("quantize", path, "-o", out, "--bits", "3", "--granularity", "group", "--group-size", "16",
               "--importance", imp)
    assert "2 of 3 quantized 2-D tensors weighted" in text.stdout and "no statistics for b.weight" in text.stdout


def test_row_weights_steer_kmeans_levels(model, tmp_path):
    """emb.weight.rows: rows read more often get the smaller error."""
    path, imp, _ = model
    out = tmp_path / "o.qnt.safetensors"
    assert cli("quantize", path, "-o", out, "--method", "kmeans", "--bits", "2", "--granularity", "tensor",
               "--importance", imp, "--only", "emb").exit_code == 0
    plain = tmp_path / "p.qnt.safetensors"
    assert cli("quantize", path, "-o", plain, "--method", "kmeans", "--bits", "2", "--granularity", "tensor",
               "--only", "emb").exit_code == 0
    w = load_file(str(path))["emb.weight"].astype(np.float64)
    rows = load_file(str(imp))["emb.weight.rows"].astype(np.float64)

    def row_weighted(f):
        return float(rows @ ((w - quantcli.load(str(f))["emb.weight"]) ** 2).sum(axis=1))

    assert row_weighted(out) < row_weighted(plain)


def test_jobs_and_runs_give_the_same_bytes(model, tmp_path, monkeypatch):
    monkeypatch.setattr(quantcli.pipeline.parallel, "PARALLEL_MIN_BYTES", 0)
    path, imp, _ = model
    outs = []
    for i, jobs in enumerate(["1", "2", "1"]):
        out = tmp_path / f"o{i}.qnt.safetensors"
        r = cli("quantize", path, "-o", out, "--bits", "4", "--granularity", "group", "--group-size", "32",
                "--importance", imp, "--jobs", jobs, "-q")
        assert r.exit_code == 0, r.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]


def test_dry_run_predicts_the_size(model, tmp_path):
    path, imp, _ = model
    args = ["--bits", "4", "--granularity", "group", "--group-size", "32", "--importance", imp]
    plan = json.loads(cli("quantize", path, "--dry-run", *args, "--json").stdout)
    out = tmp_path / "o.qnt.safetensors"
    assert cli("quantize", path, "-o", out, *args, "-q").exit_code == 0
    predicted = plan["totals"]["predicted_archive_bytes"]
    assert predicted - 300 <= os.path.getsize(out) <= predicted  # metrics are sized at their longest


def _write(path, tensors, metadata=None):
    save_file(tensors, str(path), metadata=metadata)
    return path


BAD = {
    "length": ({"a.weight": np.ones(63, np.float32)}, None, "a.weight", "does not fit"),
    "nan": ({"a.weight": np.full(64, np.nan, np.float32)}, None, "a.weight", "NaN"),
    "negative": ({"a.weight": -np.ones(64, np.float32)}, None, "a.weight", "negative"),
    "zeros": ({"a.weight": np.zeros(64, np.float32)}, None, "a.weight", "only zeros"),
    "asymmetric": ({"a.weight.gram": np.triu(np.ones((64, 64), np.float32))}, None, "a.weight.gram", "symmetric"),
    "inf gram": ({"a.weight.gram": np.full((64, 64), np.inf, np.float32)}, None, "a.weight.gram", "Inf"),
    "negative diagonal": ({"a.weight.gram": -np.eye(64, dtype=np.float32)}, None, "a.weight.gram", "negative"),
    "disagree": ({"a.weight": np.ones(64, np.float32), "a.weight.gram": 2 * np.eye(64, dtype=np.float32)}, None,
                 "a.weight", "disagrees"),
    "no such tensor": ({"nothing.weight": np.ones(64, np.float32)}, None, "nothing.weight", "names no tensor"),
    "integer": ({"a.weight": np.ones(64, np.int32)}, None, "a.weight", "not a float"),
    "1-D tensor": ({"b.bias": np.ones(32, np.float32)}, None, "b.bias", "2-D"),
    "rows": ({"emb.weight.rows": np.ones(49, np.float32)}, None, "emb.weight.rows", "does not fit"),
    "format": ({"a.weight": np.ones(64, np.float32)}, {"format": "pt"}, "", "format"),
    "tokens": ({"a.weight": np.ones(64, np.float32)}, {"tokens": "-3"}, "", "tokens"),
    "sensitivity nan": ({"a.weight.sensitivity": np.array(np.nan, np.float32)}, None, "a.weight.sensitivity", "NaN"),
    "sensitivity inf": ({"a.weight.sensitivity": np.array(np.inf, np.float64)}, None, "a.weight.sensitivity", "Inf"),
    "sensitivity negative": ({"a.weight.sensitivity": np.array(-0.5, np.float32)}, None, "a.weight.sensitivity",
                             "negative"),
    "sensitivity vector": ({"a.weight.sensitivity": np.ones(2, np.float32)}, None, "a.weight.sensitivity",
                           "not one scalar"),
    "sensitivity matrix": ({"a.weight.sensitivity": np.ones((1, 1), np.float32)}, None, "a.weight.sensitivity",
                           "not one scalar"),
    "sensitivity integer": ({"a.weight.sensitivity": np.array(3, np.int32)}, None, "a.weight.sensitivity",
                            "not a float"),
    "sensitivity of a 1-D tensor": ({"b.bias.sensitivity": np.array(1.0, np.float32)}, None, "b.bias.sensitivity",
                                    "2 or more dimensions"),
    "sensitivity of no tensor": ({"c.weight.sensitivity": np.array(1.0, np.float32)}, None, "c.weight.sensitivity",
                                 "names no tensor"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_files_are_refused_with_one_line(model, tmp_path, case):
    path, _, _ = model
    tensors, metadata, entry, needle = BAD[case]
    bad = _write(tmp_path / "bad.safetensors", tensors, metadata)
    out = tmp_path / "o.qnt.safetensors"
    line = one_error(cli("quantize", path, "-o", out, "--importance", bad), "bad.safetensors", needle)
    assert entry in line
    assert sorted(os.listdir(tmp_path)) == ["bad.safetensors", "imp.safetensors", "m.safetensors"]


def test_missing_file_and_output_over_the_statistics(model, tmp_path):
    path, imp, _ = model
    one_error(cli("quantize", path, "-o", tmp_path / "o.qnt.safetensors", "--importance", tmp_path / "nope"), "nope")
    before = imp.read_bytes()
    one_error(cli("quantize", path, "-o", imp, "--importance", imp))
    assert imp.read_bytes() == before


def test_importance_with_a_method_that_weighs_nothing_is_refused(model, tmp_path):
    path, imp, _ = model
    one_error(cli("quantize", path, "-o", tmp_path / "o.qnt.safetensors", "--method", "fp16", "--importance", imp),
              "--importance has no effect with --method fp16")


def test_open_validates_every_entry_before_work(model):
    path, imp, _ = model
    shapes = {"a.weight": (128, 64), "b.weight": (32, 128), "emb.weight": (50, 64), "b.bias": (32,)}
    opened = Importance.open(str(imp), shapes)
    assert opened.tensors == {"a.weight": ("a.weight", "a.weight.gram"), "emb.weight": ("emb.weight.rows",)}
    assert opened.unmatched(["a.weight", "b.weight"]) == ["b.weight"]
    t = opened.for_tensor("a.weight", (128, 64))
    assert t is not None and t.gram is not None and t.cols is not None
    assert t.cols.mean() == pytest.approx(1.0) and np.allclose(np.diagonal(t.gram), t.cols)
    e = opened.for_tensor("emb.weight", (50, 64))
    assert e is not None and e.rows is not None and e.rows.mean() == pytest.approx(1.0) and e.kind == "rows"


def test_sensitivities_are_read_apart_from_the_other_statistics(model, tmp_path):
    path, imp, _ = model
    shapes = {"a.weight": (128, 64), "b.weight": (32, 128), "emb.weight": (50, 64), "b.bias": (32,)}
    both = _write(tmp_path / "both.safetensors", {**load_file(str(imp)), "a.weight.sensitivity": np.array(2.5, np.float32),
                                                  "b.weight.sensitivity": np.array([0.0], np.float16)},
                  {"format": "quant-importance", "tokens": "3000"})
    opened = Importance.open(str(both), shapes)
    assert opened.sensitivity == {"a.weight": 2.5, "b.weight": 0.0}
    assert opened.tensors == {"a.weight": ("a.weight", "a.weight.gram"), "emb.weight": ("emb.weight.rows",)}
    assert opened.for_tensor("b.weight", (32, 128)) is None  # a sensitivity alone weighs nothing inside a tensor
    only = _write(tmp_path / "only.safetensors", {"b.weight.sensitivity": np.array(1.0, np.float32)})
    assert Importance.open(str(only), shapes).sensitivity == {"b.weight": 1.0}
    out = tmp_path / "o.qnt.safetensors"
    assert cli("quantize", path, "-o", out, "--target-bpw", "4", "--importance", only, "-q").exit_code == 0


def test_real_model_layer(real_model):
    """MiniLM's first query projection with inputs correlated like real activations (a random
    mixing of channels of lognormal sizes): compensation lowers its output error."""
    w = load_file(real_model)["encoder.layer.0.attention.self.query.weight"]
    rng = np.random.default_rng(7)
    mix = rng.normal(size=(384, 384)) / np.sqrt(384)
    x = (rng.normal(size=(2000, 384)) @ mix + 0.5 * rng.normal(size=(2000, 384))) * rng.lognormal(0, 1, 384)
    gram = x.T @ x / len(x)
    for spec in (Spec(method="uniform", bits=4, scheme="asymmetric", granularity="group", group_size=64),
                 Spec(method="nf", bits=3, granularity="group", group_size=64)):
        m = get_method(spec.method)
        plain = output_error(w, m.decode(m.encode(w, spec.with_options(scale_search=True)), w.shape), x)
        full = output_error(w, m.decode(m.encode_importance(w, spec, stats(gram)), w.shape), x)
        assert full < 0.7 * plain, (spec.method, full / plain)


@pytest.mark.parametrize("spec", [Spec(method="vq", bits=6, vector_dim=4),
                                  Spec(method="pq", subvector_dim=4, centroids=32)], ids=["vq", "pq"])
def test_vector_codebooks_lower_the_weighted_error(spec):
    """vq and pq learn centroids and assign pieces under the column weights."""
    w, _, gram = correlated_layer(8, out=256, inn=64)
    m = get_method(spec.method)
    d = np.diag(gram) / np.diag(gram).mean()

    def werr(enc):
        return float((((w - m.decode(enc, w.shape)).astype(np.float64) ** 2) @ d).sum())

    assert werr(m.encode_importance(w, spec, TensorImportance(d, None, None))) < 0.8 * werr(m.encode(w, spec))


def test_uniform_weights_change_nothing_in_vector_kmeans():
    """All-ones weights give the codebook and codes of the unweighted trainer."""
    rng = np.random.default_rng(9)
    cube = rng.normal(size=(500, 3, 4)).astype(np.float32)
    from quantcli.methods.vector_kmeans import train_subspaces
    a = train_subspaces(cube, 16, 10, 0)
    b = train_subspaces(cube, 16, 10, 0, weights=np.ones_like(cube))
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-6)
    assert (a[1] == b[1]).mean() > 0.99


def test_recipe_and_sharded_inputs(model, tmp_path):
    """Recipe rules choose each tensor's setting; the statistics follow the tensor by name, across
    the shards of a folder input too, and a recipe-chosen method that weighs nothing records none."""
    path, imp, _ = model
    tensors = load_file(str(path))
    folder = tmp_path / "sharded"
    folder.mkdir()
    save_file({"a.weight": tensors["a.weight"]}, str(folder / "model-00001-of-00002.safetensors"))
    save_file({k: v for k, v in tensors.items() if k != "a.weight"}, str(folder / "model-00002-of-00002.safetensors"))
    index = {"metadata": {}, "weight_map": {k: ("model-00001-of-00002.safetensors" if k == "a.weight"
                                                else "model-00002-of-00002.safetensors") for k in tensors}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    recipe = tmp_path / "r.toml"
    recipe.write_text('[[rule]]\npattern = "^emb"\nmethod = "fp16"\n\n[[rule]]\npattern = "^a"\nmethod = "nf"\n'
                      'bits = 3\ngranularity = "group"\ngroup_size = 16\n')
    out = tmp_path / "o.qnt.safetensors"
    r = cli("quantize", folder, "-o", out, "--recipe", recipe, "--importance", imp, "--json")
    assert r.exit_code == 0, r.stderr
    by = {t["name"]: t for t in json.loads(r.stdout)["tensors"]}
    assert by["a.weight"]["method"] == "nf" and "importance" in by["a.weight"]["params"]
    assert by["emb.weight"]["method"] == "fp16" and "importance" not in by["emb.weight"]["params"]
    single = tmp_path / "s.qnt.safetensors"
    assert cli("quantize", path, "-o", single, "--recipe", recipe, "--importance", imp, "-q").exit_code == 0
    assert np.array_equal(quantcli.load(str(out))["a.weight"], quantcli.load(str(single))["a.weight"])


def test_unread_rows_keep_some_weight():
    from quantcli.calibration.importance import smoothed_rows
    f = np.array([0.5, 0.5, 0.0, 0.0])
    w = smoothed_rows(f, tokens=2)
    np.testing.assert_allclose(w, [1.5 / 4, 1.5 / 4, 0.5 / 4, 0.5 / 4])
    assert w.sum() == pytest.approx(1.0)
    w = smoothed_rows(np.array([0.75, 0.25, 0.0]), tokens=None)
    np.testing.assert_allclose(w, [0.875, 0.375, 0.125])


def test_ecsq_compensation_lowers_output_error_and_keeps_the_sqnr_promise(model, tmp_path):
    """ecsq with a Gram: compensated rounding on the step grid; --sqnr D still holds for the plain
    SQNR of what is written (the step search measures the compensated error)."""
    w, x, gram = correlated_layer(11)
    m = get_method("ecsq")
    spec = Spec(method="ecsq", step=0.3)
    plain = output_error(w, m.decode(m.encode(w, spec), w.shape), x)
    full = output_error(w, m.decode(m.encode_importance(w, spec, stats(gram)), w.shape), x)
    assert full < 0.7 * plain
    path, imp, _ = model
    out = tmp_path / "o.qnt.safetensors"
    r = cli("quantize", path, "-o", out, "--method", "ecsq", "--sqnr", "20", "--importance", imp, "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert 20.0 <= doc["totals"]["overall_sqnr_db"] < 20.2
    by = {t["name"]: t for t in doc["tensors"]}
    assert "importance" in by["a.weight"]["params"] and by["a.weight"]["output_sqnr_db"] > by["a.weight"]["sqnr_db"]


@pytest.mark.parametrize("bpw", ["4", "6"])
def test_planner_with_statistics_keeps_the_budget_and_says_so(model, tmp_path, bpw):
    """--target-bpw with --importance: never over budget, the dry run's size close (predicted from
    samples), the objective is the one asked for, weighted tensors record the file."""
    path, imp, _ = model
    out = tmp_path / "o.qnt.safetensors"
    plan = json.loads(cli("quantize", path, "--dry-run", "--target-bpw", bpw, "--importance", imp, "--json").stdout)
    assert plan["totals"]["objective"] == "auto"
    r = cli("quantize", path, "-o", out, "--target-bpw", bpw, "--importance", imp, "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["totals"]["bits_per_weight"] <= float(bpw)
    assert abs(os.path.getsize(out) - plan["totals"]["predicted_archive_bytes"]) <= 0.03 * os.path.getsize(out)
    by = {t["name"]: t for t in doc["tensors"]}
    assert by["a.weight"]["params"].get("importance", "").startswith("sha256:")
    assert "importance" not in by["b.weight"]["params"]
    assert doc["importance"]["weighted"] == ["a.weight", "emb.weight"]
    assert cli("verify", out).exit_code == 0


def test_planner_float_cast_of_a_weighted_tensor_records_nothing(tmp_path):
    """A tiny table the planner stores as fp16 has statistics but nothing to weigh: its params
    record none, and the write matches the plan (it used to stop with an internal error)."""
    rng = np.random.default_rng(12)
    path = tmp_path / "m.safetensors"
    save_file({"tt.weight": rng.normal(size=(2, 384)).astype(np.float32),
               "w.weight": rng.normal(size=(256, 384)).astype(np.float32)}, str(path))
    imp = tmp_path / "imp.safetensors"
    save_file({"tt.weight.rows": np.array([1.0, 0.0], np.float32), "w.weight": np.ones(384, np.float32)}, str(imp),
              metadata={"tokens": "100"})
    out = tmp_path / "o.qnt.safetensors"
    r = cli("quantize", path, "-o", out, "--target-bpw", "12", "--importance", imp, "--json")
    assert r.exit_code == 0, r.stderr
    by = {t["name"]: t for t in json.loads(r.stdout)["tensors"]}
    assert by["tt.weight"]["method"] in ("fp16", "bf16") and "importance" not in by["tt.weight"]["params"]


def _entropy_bits(codes: np.ndarray) -> float:
    counts = np.unique(codes, return_counts=True)[1].astype(np.float64)
    return float(-(counts * np.log2(counts / codes.size)).sum())


def test_ecsq_row_and_column_steps_lower_the_weighted_error_at_equal_rate():
    """Steps per column as w^-1/2 (importance_scales): at no more bits than plain rounding, the
    weighted error is lower; all-equal weights change nothing."""
    from quantcli.methods.ecsq import importance_scales
    w, _, gram = correlated_layer(13, out=256, inn=64)
    d = np.diag(gram) / np.diag(gram).mean()
    m = get_method("ecsq")
    flat = TensorImportance(np.ones(64), None, None)
    plain = m.encode(w, Spec(method="ecsq", step=0.25))
    same = m.encode_importance(w, Spec(method="ecsq", step=0.25), flat)
    np.testing.assert_array_equal(m.decode(same, w.shape), m.decode(plain, w.shape))
    assert np.all(importance_scales(np.ones(5)) == 1)

    def werr(enc):
        return float((((w - m.decode(enc, w.shape)).astype(np.float64) ** 2) @ d).sum())

    bits = _entropy_bits(plain.arrays["codes"])
    step = 0.25
    scaled = m.encode_importance(w, Spec(method="ecsq", step=step), TensorImportance(d, None, None))
    while _entropy_bits(scaled.arrays["codes"]) > bits:
        step *= 1.02
        scaled = m.encode_importance(w, Spec(method="ecsq", step=step), TensorImportance(d, None, None))
    assert werr(scaled) < 0.8 * werr(plain)
    assert scaled.params["column_scale"] is True and scaled.arrays["column_scale"].dtype == np.float16


def test_ecsq_scaled_archives_round_trip_and_forged_scales_are_refused(model, tmp_path):
    path, imp, _ = model
    out = tmp_path / "o.qnt.safetensors"
    r = cli("quantize", path, "-o", out, "--method", "ecsq", "--step", "0.3", "--trellis", "--importance", imp,
            "--json")
    assert r.exit_code == 0, r.stderr
    by = {t["name"]: t for t in json.loads(r.stdout)["tensors"]}
    assert by["emb.weight"]["params"].get("row_scale") is True and "column_scale" not in by["emb.weight"]["params"]
    assert by["a.weight"]["params"].get("column_scale") is True
    assert cli("verify", out).exit_code == 0
    restored = tmp_path / "r.safetensors"
    assert cli("dequantize", out, "-o", restored).exit_code == 0
    from fuzzing import resign_file
    for bad in (0.0, np.inf, 17.0, -1.0):
        def edit(meta, arrays, manifest, bad=bad):
            key = next(k for k in arrays if k.startswith("a.weight") and "column_scale" in k)
            arrays[key] = arrays[key].copy()
            arrays[key][3] = bad
        forged = resign_file(str(out), str(tmp_path / "f.qnt.safetensors"), edit)
        one_error(cli("dequantize", forged, "-o", tmp_path / "x.safetensors"), "a.weight")


def test_min_sqnr_with_statistics_holds_every_floor(model, tmp_path):
    """--min-sqnr checks each tensor's plain SQNR on the encoding as written (compensated ones
    included), so every planned tensor meets the floor."""
    path, imp, _ = model
    out = tmp_path / "o.qnt.safetensors"
    r = cli("quantize", path, "-o", out, "--min-sqnr", "18", "--importance", imp, "--json", "--jobs", "2")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert all(t["sqnr_db"] == "inf" or t["sqnr_db"] >= 18 for t in doc["tensors"] if t["method"] != "keep")
    assert "importance" in {t["name"]: t for t in doc["tensors"]}["a.weight"]["params"]


def test_gram_that_is_not_positive_semidefinite_is_refused(model, tmp_path):
    path, _, _ = model
    g = np.eye(64, dtype=np.float32)
    g[0, 1] = g[1, 0] = 1000
    bad = _write(tmp_path / "bad.safetensors", {"a.weight.gram": g})
    one_error(cli("quantize", path, "-o", tmp_path / "o.qnt.safetensors", "--importance", bad),
              "bad.safetensors", "a.weight.gram", "positive semi-definite")
    assert not (tmp_path / "o.qnt.safetensors").exists()


def test_huge_row_fractions_are_scaled_not_overflowed(model, tmp_path):
    """Row entries are fractions up to a factor: 1e307 everywhere is as uniform as 1."""
    path, _, _ = model
    shapes = {"a.weight": (128, 64), "b.weight": (32, 128), "emb.weight": (50, 64), "b.bias": (32,)}
    f = _write(tmp_path / "big.safetensors", {"emb.weight.rows": np.full(50, 1e307)})
    rows = Importance.open(str(f), shapes).for_tensor("emb.weight", (50, 64)).rows
    assert rows is not None and np.allclose(rows, 1.0)


def test_report_counts_only_tensors_that_used_the_statistics(model, tmp_path):
    path, imp, _ = model
    recipe = tmp_path / "r.toml"
    recipe.write_text('[[rule]]\npattern = "^a"\nmethod = "fp16"\n')
    r = cli("quantize", path, "-o", tmp_path / "o.qnt.safetensors", "--recipe", recipe, "--importance", imp, "--json")
    assert r.exit_code == 0, r.stderr
    use = json.loads(r.stdout)["importance"]
    assert use["weighted"] == ["emb.weight"] and use["without"] == ["b.weight"]
