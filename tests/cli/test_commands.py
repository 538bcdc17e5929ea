import json
import os
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from quantcli import __version__
from quantcli.cli.commands import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("command", ["inspect", "quantize", "dequantize"])
def test_every_command_has_help_with_an_example(command):
    r = run(command, "--help")
    assert r.exit_code == 0 and "Example:" in r.output


def test_version():
    r = run("--version")
    assert r.exit_code == 0 and r.output.strip() == f"quant {__version__}"


def test_quantize_json_inspect_dequantize(tiny_model, tmp_path):
    out = tmp_path / "m.qnt.safetensors"
    r = run("quantize", tiny_model, "-o", out, "--bits", "4", "--scheme", "asymmetric", "--granularity", "group",
            "--group-size", "16", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["totals"]["archive_bytes"] == os.path.getsize(out)
    arrays = doc["totals"]["quantized_stored_bytes"] * 8 / doc["totals"]["quantized_elements"]
    assert arrays == pytest.approx(4 + 24 / 16)  # fp16 scale + u8 zero per 16
    kept = sum(t["stored_bytes"] for t in doc["tensors"] if t["method"] == "keep")
    assert doc["totals"]["bits_per_weight"] == pytest.approx(  # all overhead: the header counts too
        (doc["totals"]["archive_bytes"] - kept) * 8 / doc["totals"]["quantized_elements"])
    q = [t for t in doc["tensors"] if t["method"] == "uniform"]
    assert q and all(t["label"] == "int4 asym g16" and 10 < t["sqnr_db"] < 30 for t in q)
    kept = [t for t in doc["tensors"] if t["method"] == "keep"]
    assert all("sqnr_db" not in t and t["note"].startswith("kept") for t in kept)

    r = run("inspect", out, "--json")
    assert r.exit_code == 0
    files = json.loads(r.stdout)["files"]
    assert files[0]["kind"] == "archive" and len(files[0]["tensors"]) == len(doc["tensors"])

    r = run("inspect", out)
    assert r.exit_code == 0 and "int4 asym g16" in r.stdout and "bits per weight" in r.stdout

    r = run("dequantize", out, "-o", tmp_path / "r.safetensors", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["command"] == "dequantize"


def test_table_output(tiny_model, tmp_path):
    r = run("quantize", tiny_model, "-o", tmp_path / "m.qnt.safetensors")
    assert r.exit_code == 0
    assert "int8 sym channel" in r.stdout and "overall SQNR" in r.stdout and "bits per weight" in r.stdout
    assert "\x1b[" not in r.stdout  # no colour off a terminal
    r = run("quantize", tiny_model, "-o", tmp_path / "m.qnt.safetensors", "--quiet")
    assert r.exit_code == 0 and r.stdout == ""


def test_inspect_weights_table(tiny_model):
    r = run("inspect", tiny_model)
    assert r.exit_code == 0 and "embeddings.word_embeddings.weight" in r.stdout and "absmax" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["quantize", "{missing}", "-o", "{out}"], "no such file"),
    (["quantize", "{npy}", "-o", "{out}", "--bits", "9"], "--bits 2 to 8"),
    (["quantize", "{npy}", "-o", "{out}", "--granularity", "group", "--group-size", "0"], "--group-size must be"),
    (["quantize", "{npy}", "-o", "{npy}"], "output is one of the inputs"),
    (["quantize", "{bad}", "-o", "{out}"], "malformed .npy header"),
    (["quantize", "{nan}", "-o", "{out}"], "tensor 'nan': holds 1 NaN"),
    (["dequantize", "{npy}", "-o", "{out}"], "not a safetensors file"),
    (["dequantize", "{missing}", "-o", "{out}"], "no such file"),
])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, args, message):
    np.save(tmp_path / "w.npy", np.ones((2, 2), np.float32))
    nan = np.ones((2, 2), np.float32)
    nan[0, 0] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    (tmp_path / "bad.npy").write_bytes(b"junk")
    paths = {"missing": tmp_path / "missing.npy", "out": tmp_path / "o.qnt.safetensors",
             "npy": tmp_path / "w.npy", "bad": tmp_path / "bad.npy", "nan": tmp_path / "nan.npy"}
    before = sorted(os.listdir(tmp_path))
    r = run(*[a.format(**paths) for a in args])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("quant: error: ") and message in lines[0], r.stderr
    assert "Traceback" not in r.output
    assert sorted(os.listdir(tmp_path)) == before


def test_usage_error_exit_2():
    r = run("quantize", "x.npy", "--bitz", "3")
    assert r.exit_code == 2


def test_debug_shows_the_exception(tmp_path):
    r = run("quantize", tmp_path / "missing.npy", "-o", tmp_path / "o.qnt.safetensors", "--debug")
    assert r.exit_code != 0 and r.exception is not None


def test_installed_command_and_module(tmp_path, seed_matrix):
    np.save(tmp_path / "s.npy", seed_matrix)
    exe = os.path.join(os.path.dirname(sys.executable), "quant")
    for cmd in ([exe], [sys.executable, "-m", "quantcli"]):
        p = subprocess.run(cmd + ["quantize", str(tmp_path / "s.npy"), "-o", str(tmp_path / "s.qnt.safetensors"),
                                  "--granularity", "tensor", "--json"], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["tensors"][0]["label"] == "int8 sym tensor"
        p = subprocess.run(cmd + ["quantize", str(tmp_path / "nope.npy"), "-o", str(tmp_path / "x.qnt.safetensors")],
                           capture_output=True, text=True)
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and p.stdout == ""


@pytest.mark.parametrize("args, message", [
    (["quantize", "x.npy", "--bitz", "3"], "No such option: --bitz"),
    (["quantize", "{seed}", "-o", "{tmp}/a.qnt.safetensors", "--method", "bogus"], "'bogus' is not one of"),
    (["quantize"], "Missing argument"),
    (["bogus"], "No such command 'bogus'"),
])
def test_usage_errors_are_one_line_from_the_installed_command(tmp_path, seed_matrix, args, message):
    np.save(tmp_path / "seed.npy", seed_matrix)
    exe = os.path.join(os.path.dirname(sys.executable), "quant")
    p = subprocess.run([exe, *[a.format(seed=tmp_path / "seed.npy", tmp=tmp_path) for a in args]],
                       capture_output=True, text=True)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("quant: error: ") and message in p.stderr
    assert "Value error" not in p.stderr


@pytest.mark.parametrize("kind, message", [
    ("npy-output", "the output must end in .safetensors"),
    ("missing-folder", "the output's folder does not exist"),
    ("archive-input", "is already a quant archive; dequantize it first"),
    ("shard-file", "--shard-size writes a folder of shards"),
])
def test_output_and_input_mistakes_are_refused(tiny_model, tmp_path, kind, message):
    arc = tmp_path / "m.qnt.safetensors"
    assert run("quantize", tiny_model, "-o", arc, "-q").exit_code == 0
    args = {"npy-output": ["quantize", tiny_model, "-o", tmp_path / "m.npy"],
            "missing-folder": ["quantize", tiny_model, "-o", tmp_path / "nope" / "m.qnt.safetensors"],
            "archive-input": ["quantize", arc, "-o", tmp_path / "again.qnt.safetensors"],
            "shard-file": ["dequantize", arc, "-o", tmp_path / "r.safetensors", "--shard-size", "1kB"]}[kind]
    before = sorted(os.listdir(tmp_path))
    r = run(*args)
    assert r.exit_code == 2 and message in r.stderr and r.stderr.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.parametrize("args, message", [
    (["--method", "fp16", "--bits", "4"], "--bits has no effect with --method fp16"),
    (["--method", "nf", "--scheme", "asymmetric"], "--scheme has no effect with --method nf"),
    (["--granularity", "tensor", "--group-size", "32"], "--group-size needs --granularity group"),
    (["--target-bpw", "3", "--bits", "4"], "--bits has no effect with a budget"),
    (["--normalize", "group"], "--normalize has no effect with --method uniform"),
    (["--method", "kmeans", "--normalize", "group", "--granularity", "channel"], "--granularity has no effect"),
])
def test_options_that_would_be_ignored_are_refused(tmp_path, seed_matrix, args, message):
    np.save(tmp_path / "s.npy", seed_matrix)
    r = run("quantize", tmp_path / "s.npy", "-o", tmp_path / "o.qnt.safetensors", *args)
    assert r.exit_code == 2 and message in r.stderr and not (tmp_path / "o.qnt.safetensors").exists()
