"""Usage errors from the parser keep the CLI's promises: one line on stderr, exit 2, a JSON
failure document on stdout with --json, and a suggestion for a near miss of a choice."""

from __future__ import annotations

import json
import sys

import pytest

from quantcli import entry


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
