"""A dequantized folder that loads like the original model: `--like` copies the model folder's
other files beside the weights in the same all-or-nothing publication, and an archive is never
written under a model file's name."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from safetensors.numpy import save_file
from typer.testing import CliRunner

from quantcli.cli.commands import app
from quantcli.archive.dequant import model_folder_files

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def model_dir(tmp_path) -> str:
    folder = tmp_path / "model"
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / ".git").mkdir()
    rng = np.random.default_rng(0)
    save_file({"layer.weight": rng.standard_normal((32, 64)).astype(np.float32)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text('{"hidden_size": 64}')
    (folder / "tokenizer.json").write_text("{}")
    (folder / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    (folder / "pytorch_model.bin").write_bytes(b"not copied")
    (folder / ".git" / "HEAD").write_text("ref")
    return str(folder)


def test_model_folder_files_are_everything_but_weights_and_hidden_files(model_dir):
    with open(os.path.join(model_dir, "model.safetensors.index.json"), "w") as f:
        f.write("{}")
    assert model_folder_files(model_dir) == [os.path.join("1_Pooling", "config.json"), "config.json", "tokenizer.json"]


def test_dequantize_like_copies_the_other_files_beside_the_weights(model_dir, tmp_path):
    arc = tmp_path / "m.qnt.safetensors"
    assert run("quantize", model_dir, "-o", arc, "-q").exit_code == 0
    out = tmp_path / "restored"
    r = run("dequantize", arc, "-o", f"{out}/", "--like", model_dir, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["copied"] == [os.path.join("1_Pooling", "config.json"), "config.json", "tokenizer.json"]
    assert sorted(os.path.relpath(os.path.join(b, f), out) for b, _, fs in os.walk(out) for f in fs) == sorted(
        doc["copied"] + ["model.safetensors"])
    for name in doc["copied"]:
        assert open(os.path.join(out, name)).read() == open(os.path.join(model_dir, name)).read()


def test_a_copy_that_fails_leaves_no_folder_behind(model_dir, tmp_path):
    arc = tmp_path / "m.qnt.safetensors"
    assert run("quantize", model_dir, "-o", arc, "-q").exit_code == 0
    os.symlink(str(tmp_path / "gone"), os.path.join(model_dir, "special_tokens_map.json"))  # dangling
    out = tmp_path / "restored"
    r = run("dequantize", arc, "-o", f"{out}/", "--like", model_dir)
    assert r.exit_code == 2 and "special_tokens_map.json" in r.output
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["m.qnt.safetensors", "model"]


def test_like_needs_a_folder_output_and_a_folder(model_dir, tmp_path):
    arc = tmp_path / "m.qnt.safetensors"
    assert run("quantize", model_dir, "-o", arc, "-q").exit_code == 0
    r = run("dequantize", arc, "-o", tmp_path / "w.safetensors", "--like", model_dir)
    assert r.exit_code == 2 and "folder" in r.output and not (tmp_path / "w.safetensors").exists()
    r = run("dequantize", arc, "-o", f"{tmp_path / 'x'}/", "--like", tmp_path / "nope")
    assert r.exit_code == 2 and not (tmp_path / "x").exists()


@pytest.mark.parametrize("name", ["model.safetensors", "model-00001-of-00002.safetensors", "Model.safetensors",
                                  "adapter_model.safetensors", "diffusion_pytorch_model.safetensors"])
def test_an_archive_is_never_written_under_a_model_file_name(model_dir, tmp_path, name):
    out = tmp_path / "out"
    out.mkdir()
    r = run("quantize", model_dir, "-o", out / name)
    assert r.exit_code == 2 and "model.qnt.safetensors" in r.output and os.listdir(out) == []


@pytest.mark.parametrize("name", ["model.qnt.safetensors", "my-model.safetensors", "model4.safetensors"])
def test_other_archive_names_are_fine(model_dir, tmp_path, name):
    assert run("quantize", model_dir, "-o", tmp_path / name, "-q").exit_code == 0
