"""Usage errors from the parser keep the CLI's promises: one line on stderr, exit 2, a JSON
failure document on stdout with --json, and a suggestion for a near miss of a choice."""

from __future__ import annotations

import json
import sys

import pytest

from quantcli.cli import entry


def main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["quant", *args])
    with pytest.raises(SystemExit) as e:
        entry.main()
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out, err


@pytest.mark.parametrize("args, command, fragment", [
    (["quantize", "m.npy", "-o", "m.qnt", "--method", "kmean"], "quantize", "'--method'"),
    (["quantize", "m.npy", "-o", "m.qnt", "--bitz", "4"], "quantize", "--bitz"),
    (["dequantize", "m.qnt"], "dequantize", "'--output'"),
    (["inspect"], "inspect", "PATH"),
])
def test_parser_failures_print_the_json_failure_document(monkeypatch, capsys, args, command, fragment):
    code, out, err = main(monkeypatch, capsys, *args, "--json")
    doc = json.loads(out)
    assert code == 2 and doc["exit_code"] == 2 and doc["ok"] is False and doc["command"] == command
    assert fragment in doc["error"] and doc["schema"] == 1
    assert err.count("\n") == 1 and err.startswith("quant: error:")


def test_parser_failure_without_json_keeps_stdout_empty(monkeypatch, capsys):
    code, out, err = main(monkeypatch, capsys, "quantize", "m.npy", "-o", "m.qnt", "--bitz", "4")
    assert code == 2 and out == "" and "--bitz" in err


@pytest.mark.parametrize("option, typed, meant", [
    ("--method", "kmean", "kmeans"), ("--scheme", "asymetric", "asymmetric"), ("--granularity", "chanel", "channel"),
])
def test_a_near_miss_of_a_choice_gets_a_suggestion(monkeypatch, capsys, option, typed, meant):
    code, _, err = main(monkeypatch, capsys, "quantize", "m.npy", "-o", "m.qnt", f"{option}={typed}")
    assert code == 2 and f"(did you mean '{meant}'?)" in err


def test_a_far_miss_gets_no_suggestion(monkeypatch, capsys):
    code, _, err = main(monkeypatch, capsys, "quantize", "m.npy", "-o", "m.qnt", "--method", "zzz")
    assert code == 2 and "did you mean" not in err and "'kmeans'" in err


def test_step_rms_sets_each_tensors_step_from_its_rms(tmp_path):
    from typer.testing import CliRunner

    import numpy as np

    from quantcli import open_archive
    from quantcli.cli.commands import app

    x = np.random.default_rng(0).standard_normal((64, 128)).astype(np.float32) * 3
    np.save(tmp_path / "w.npy", x)
    out = tmp_path / "w.qnt.safetensors"
    r = CliRunner().invoke(app, ["quantize", str(tmp_path / "w.npy"), "-o", str(out), "--method", "ecsq",
                                 "--step-rms", "0.25", "--quiet"])
    assert r.exit_code == 0, r.output
    with open_archive(str(out)) as a:
        step = a.tensors[0].params["step"]
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    assert step == pytest.approx(0.25 * rms, rel=1e-6)
    r = CliRunner().invoke(app, ["quantize", str(tmp_path / "w.npy"), "-o", str(out), "--step-rms", "0.25"])
    assert r.exit_code == 2 and "--step-rms has no effect" in r.output
