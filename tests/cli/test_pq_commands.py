"""pq-encode and pq-dot through the command line and the library."""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file
from typer.testing import CliRunner

from quantcli import Spec, open_archive, pq_dot, quantize_file
from quantcli.cli.commands import app
from quantcli.methods.pq import pq_decode, pq_from_encoding

runner = CliRunner()
SEED = np.array([[0.1, -0.5, 0.0, 1.0], [2.5, -1.2, 0.7, -0.3], [0.9, 1.5, -2.0, 0.2]], np.float32)


@pytest.fixture
def model(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"a.weight": rng.standard_normal((64, 30)).astype(np.float32),
               "b.weight": rng.standard_normal((40, 16)).astype(np.float32),
               "norm.weight": np.ones(30, np.float32)}
    save_file(tensors, str(tmp_path / "m.safetensors"))
    return tmp_path / "m.safetensors", tensors


def test_seed_golden_through_the_cli(tmp_path):
    np.save(tmp_path / "seed.npy", SEED)
    np.save(tmp_path / "q.npy", np.array([0.2, -0.1, 0.5, 1.0], np.float32))
    arc = tmp_path / "seed.pq.safetensors"
    r = runner.invoke(app, ["pq-encode", str(tmp_path / "seed.npy"), "-o", str(arc), "--subspaces", "2",
                            "--centroids", "3", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["tensors"][0]["sqnr_db"] == "inf"  # M=2, K=3 on 3 rows: exact
    r = runner.invoke(app, ["pq-dot", str(arc), "--query", str(tmp_path / "q.npy"), "--json"])
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(json.loads(r.stdout)["result"], [1.07, 0.67, -0.77], atol=1e-5)
    r = runner.invoke(app, ["dequantize", str(arc), "-o", str(tmp_path / "back.npy")])
    assert r.exit_code == 0
    np.testing.assert_allclose(np.load(tmp_path / "back.npy"), SEED, atol=1e-6)


def test_pq_dot_matches_brute_force_and_reports_error(model, tmp_path):
    path, tensors = model
    arc = str(tmp_path / "m.pq.safetensors")
    quantize_file([str(path)], arc, Spec(method="pq", subvector_dim=4, centroids=16))  # 30 % 4 != 0
    q = np.random.default_rng(1).standard_normal((5, 30)).astype(np.float32)
    np.save(tmp_path / "q.npy", q)
    r = pq_dot(arc, str(tmp_path / "q.npy"), "a.weight", reference=str(path), repeat=2,
               output=str(tmp_path / "y.npy"))
    with open_archive(arc) as a:
        t = a.by_name["a.weight"]
        w_hat = pq_decode(pq_from_encoding(a.encoding(t), t.shape))
    np.testing.assert_allclose(r.result, q @ w_hat.T, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), r.result)
    exact = q.astype(np.float64) @ tensors["a.weight"].T
    assert r.relative_error == pytest.approx(np.linalg.norm(r.result - exact) / np.linalg.norm(exact), rel=1e-4)
    assert r.lut_ms > 0 and r.dense_ms > 0 and r.speedup == pytest.approx(r.dense_ms / r.lut_ms)
    single = pq_dot(arc, str(tmp_path / "q.npy"), "a.weight").result
    np.testing.assert_array_equal(single, r.result)


@pytest.mark.parametrize("kind, message", [
    ("no-tensor", "2 PQ tensors; name one with --tensor"),
    ("wrong-d", "queries must be [30] or [b, 30]"),
    ("unknown", "no such tensor"),
    ("kept", "not pq"),
    ("nan", "NaN or Inf"),
])
def test_pq_dot_errors(model, tmp_path, kind, message):
    path, _ = model
    arc = str(tmp_path / "m.pq.safetensors")
    quantize_file([str(path)], arc, Spec(method="pq", subvector_dim=4, centroids=8), include_1d=False)
    q = np.ones((2, 16 if kind == "wrong-d" else 30), np.float32)
    if kind == "nan":
        q[0, 0] = np.nan
    np.save(tmp_path / "q.npy", q)
    tensor = {"no-tensor": None, "unknown": "zz", "kept": "norm.weight"}.get(kind, "a.weight")
    args = ["pq-dot", arc, "--query", str(tmp_path / "q.npy")] + (["--tensor", tensor] if tensor else [])
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and message in r.stderr and r.stderr.count("\n") == 1


def test_pq_archive_mixes_with_kept_tensors_and_inspects(model, tmp_path):
    path, tensors = model
    arc = tmp_path / "m.pq.safetensors"
    r = runner.invoke(app, ["pq-encode", str(path), "-o", str(arc), "--subvector-dim", "2", "--centroids", "4"])
    assert r.exit_code == 0 and "pq M15x2 K4" in r.stdout
    r = runner.invoke(app, ["inspect", str(arc), "--json"])
    doc = json.loads(r.stdout)["files"][0]
    by = {t["name"]: t for t in doc["tensors"]}
    assert by["norm.weight"]["method"] == "keep" and by["a.weight"]["method"] == "pq"
    # codes: 64 rows x 15 subspaces x 2 bits; codebooks 15 x 4 x 2 float32
    assert by["a.weight"]["stored_bytes"] == (64 * 15 * 2 + 7) // 8 + 15 * 4 * 2 * 4
    assert runner.invoke(app, ["verify", str(arc)]).exit_code == 0


def test_pq_dot_never_overwrites_an_input(model, tmp_path):
    path, _ = model
    arc = str(tmp_path / "m.pq.safetensors")
    quantize_file([str(path)], arc, Spec(method="pq", subvector_dim=4, centroids=8))
    q = np.ones((2, 30), np.float32)
    np.save(tmp_path / "q.npy", q)
    for out in ("q.npy", "y.txt"):
        r = runner.invoke(app, ["pq-dot", arc, "--query", str(tmp_path / "q.npy"), "--tensor", "a.weight",
                                "-o", str(tmp_path / out)])
        assert r.exit_code == 2
    np.testing.assert_array_equal(np.load(tmp_path / "q.npy"), q)
    assert not (tmp_path / "y.txt").exists()
