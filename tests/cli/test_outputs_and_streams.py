"""Where results go and what happens when they cannot: --report against the command's own output,
stdout closed or full, device outputs, whole-number bounds on every option, names cut to a width."""

from __future__ import annotations

import inspect
import os
import re
import stat
import subprocess
import sys
import typing
from typing import Optional

import numpy as np
import pytest
import typer

from fuzzing import cli, one_error
from quantcli.cli import render
from quantcli.cli.commands import app
from quantcli.io.safetensors import header_bytes

W = np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)


def _st(path, tensors: dict) -> str:
    layout = [(k, "F32", a.shape, a.nbytes) for k, a in tensors.items()]
    path.write_bytes(header_bytes(layout, {"format": "pt"}) + b"".join(a.tobytes() for a in tensors.values()))
    return str(path)


def _quant(*args, cwd, stdout=subprocess.PIPE, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "quantcli", *map(str, args)], cwd=cwd, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=120, env=env)


# -- --report naming the command's output --------------------------------------------------------

@pytest.mark.parametrize("spelling", ["same", "dot", "symlink"])
def test_report_naming_the_archive_is_refused_however_spelled(tmp_path, spelling):
    src = _st(tmp_path / "in.safetensors", {"w": W})
    out = tmp_path / "o.qnt.safetensors"
    report = {"same": str(out), "dot": f"{tmp_path}/./o.qnt.safetensors", "symlink": str(tmp_path / "r.json")}[spelling]
    if spelling == "symlink":
        os.symlink(out, report)  # dangling until the archive exists: the report would go through it
    one_error(cli("quantize", src, "-o", out, "--report", report, "-q"), report, "--report names the output")
    assert not out.exists()


def test_report_naming_the_pq_dot_result_is_refused(tmp_path):
    src = _st(tmp_path / "in.safetensors", {"w": W})
    arch = tmp_path / "p.pq.safetensors"
    assert cli("pq-encode", src, "-o", arch, "-q", "--centroids", "4").exit_code == 0
    np.save(tmp_path / "q.npy", W[0])
    out = tmp_path / "r.npy"
    one_error(cli("pq-dot", arch, "--query", tmp_path / "q.npy", "-o", out, "--report", out), str(out))
    assert not out.exists()
    assert cli("pq-dot", arch, "--query", tmp_path / "q.npy", "-o", out, "--report", tmp_path / "r.json",
               "-q").exit_code == 0
    assert np.load(out).shape == (8,)  # one query of shape [d]: one result per row


def test_report_naming_a_file_of_the_output_folder_is_refused(tmp_path):
    src = _st(tmp_path / "in.safetensors", {"w": W})
    arch = tmp_path / "a.qnt.safetensors"
    assert cli("quantize", src, "-o", arch, "-q").exit_code == 0
    folder = tmp_path / "restored"
    for output, report in [(f"{folder}/", folder / "model.safetensors"),
                           (str(folder), folder / "model.safetensors.index.json")]:
        folder.mkdir(exist_ok=True)
        one_error(cli("dequantize", arch, "-o", output, "--shard-size", "1MB", "--report", report), str(report))
        assert os.listdir(folder) == []
    run = cli("dequantize", arch, "-o", f"{folder}/", "--report", folder / "report.json", "-q")
    assert run.exit_code == 0 and (folder / "report.json").read_bytes().startswith(b"{")


def test_an_output_that_is_a_pipe_or_device_is_refused_not_replaced(tmp_path):
    src = _st(tmp_path / "in.safetensors", {"w": W})
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    one_error(cli("inspect", src, "-o", fifo, "-q"), str(fifo), "not a regular file")
    one_error(cli("quantize", src, "-o", tmp_path / "o.qnt.safetensors", "--report", fifo, "-q"), str(fifo))
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # the rename did not put a file in its place
    assert sorted(os.listdir(tmp_path)) == ["fifo.json", "in.safetensors"]


# -- stdout closed or full -------------------------------------------------------------------------

def _closed_stdout() -> int:
    r, w = os.pipe()
    os.close(r)
    return w


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_a_failure_into_a_closed_pipe_keeps_its_status(tmp_path, json_flag):
    good = tmp_path / "a.qnt.safetensors"
    assert cli("quantize", _st(tmp_path / "in.safetensors", {"w": W}), "-o", good, "-q").exit_code == 0
    (tmp_path / "bad.qnt.safetensors").write_bytes(b"not an archive")
    cases = [["verify", good.name, "bad.qnt.safetensors"],  # the good archive's line goes to the closed stdout
             ["quantize", "in.safetensors", "-o", "x.qnt.safetensors", "--bits", "nine"]]  # a parser failure
    for args in cases:
        w = _closed_stdout()
        try:
            p = _quant(*args, *json_flag, cwd=tmp_path, stdout=w)
        finally:
            os.close(w)
        assert p.returncode == 2, (args, p.returncode, p.stderr)
        assert p.stderr.startswith("quant: error: ") and len(p.stderr.splitlines()) == 1, p.stderr


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_success_into_a_closed_pipe_is_a_quiet_exit_0(tmp_path, json_flag):
    _st(tmp_path / "in.safetensors", {"w": W})
    w = _closed_stdout()
    try:
        p = _quant("inspect", "in.safetensors", *json_flag, cwd=tmp_path, stdout=w)
    finally:
        os.close(w)
    assert (p.returncode, p.stderr) == (0, "")


@pytest.mark.skipif(not os.path.exists("/dev/full") or not stat.S_ISCHR(os.stat("/dev/full").st_mode),
                    reason="needs the /dev/full device")
@pytest.mark.parametrize("args", [["inspect", "in.safetensors"], ["inspect", "in.safetensors", "--json"],
                                  ["--version"]])
def test_a_full_stdout_is_one_line_naming_it(tmp_path, args):
    _st(tmp_path / "in.safetensors", {"w": W})
    with open("/dev/full", "w") as full:
        p = _quant(*args, cwd=tmp_path, stdout=full)
    assert p.returncode == 1 and len(p.stderr.splitlines()) == 1, p.stderr
    assert p.stderr.startswith("quant: error: standard output") and "No space left on device" in p.stderr
    if args[0] == "inspect":
        assert "/dev/full" in p.stderr, p.stderr


# -- whole-number options are bounded, every one of them ------------------------------------------

REQUIRED = {"inspect": ["x.npy"], "quantize": ["x.npy", "-o", "o.qnt.safetensors"], "verify": ["a"],
            "dequantize": ["a", "-o", "o.npy"], "pq-encode": ["x.npy", "-o", "o.pq.safetensors"],
            "pq-dot": ["a", "--query", "q.npy"], "curve": ["x.npy"],
            "collect-importance": ["m", "t.txt", "-o", "i.safetensors"]}


def _whole_options() -> list[tuple[str, str]]:
    group = typer.main.get_command(app)
    found = []
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        # the command function's own annotations: typer's param objects differ between releases
        fn = command.callback
        hints = typing.get_type_hints(inspect.unwrap(fn) if fn is not None else fn)
        for p in command.params:
            if p.param_type_name == "option" and hints.get(p.name) in (int, Optional[int]):
                found.append((name, max(p.opts, key=len)))
    return found


def test_every_command_is_covered():
    assert {c for c, _ in _whole_options()} <= set(REQUIRED)
    assert ("pq-dot", "--repeat") in _whole_options() and ("curve", "--sample") in _whole_options()


@pytest.mark.parametrize("command, option", _whole_options())
def test_whole_number_options_are_bounded(tmp_path, monkeypatch, command, option):
    limit = 2**63 - 1 if option == "--seed" else 2**31 - 1
    monkeypatch.chdir(tmp_path)
    for flag in ([], ["--json"]) if command != "collect-importance" else ([],):
        run = cli(command, *REQUIRED[command], option, limit + 1, *flag)
        if flag:
            assert f'"error": "{option} must be at most {limit}' in run.stdout, run.stdout
            continue
        one_error(run, f"{option} must be at most {limit}, got {limit + 1}")
    assert os.listdir(tmp_path) == []


# -- names cut to a width ---------------------------------------------------------------------------

ESCAPE = re.compile(r"\\(?:u[0-9a-f]{4}|x[0-9a-f]{2}|U[0-9a-f]{8})")


@pytest.mark.parametrize("name", ["\u202e" * 12 + "weight", "layer.\u202e" * 10 + "weight",
                                  "a\x00b.\udcff" * 9, "enc.\u202elayer.11.\x1bq.weight"])
def test_a_name_is_cut_at_escape_boundaries_with_an_ellipsis(name):
    full = render.printable(name)
    for width in range(2, len(full) + 2):
        short = render.shorten(name, width)
        assert len(short) <= width
        if short == full:
            continue
        assert "…" in short or short.count(".") == name.count("."), (width, short)  # or parts cut to one character
        rest = ESCAPE.sub("", short)  # every backslash left begins a whole escape
        assert "\\" not in rest, (width, short)


def test_a_long_escaped_name_at_80_columns(tmp_path):
    name = "\u202e" * 40 + "weight"
    _st(tmp_path / "in.safetensors", {name: W})
    p = _quant("inspect", "in.safetensors", cwd=tmp_path, env={**os.environ, "COLUMNS": "80"})
    assert p.returncode == 0, p.stderr
    row = next(line for line in p.stdout.splitlines() if "8x64" in line)
    cell = row.split("│")[0].strip()
    assert "…" in cell and cell.endswith("\\u202eweight") and "\\" not in ESCAPE.sub("", cell), cell
