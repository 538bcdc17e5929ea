"""An archive says what it is where other loaders look (safetensors' `format` key), its manifest
stays compact, small inputs are reported honestly, and an output folder that refuses new files is
not called missing (issue 13, items 1, 5 and 8)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file
from typer.testing import CliRunner

from quantcli import Spec, open_archive, quantize_file
from quantcli.archive.container import FORMAT, KEY_MANIFEST, METRIC_DIGITS
from quantcli.cli.commands import app
from quantcli.planner import Budget, plan_budget, quantize_budget

runner = CliRunner()


def _metadata(path: str) -> dict[str, str]:
    with safe_open(path, "np") as f:  # the official reader, not ours
        return f.metadata()


def test_format_marker_is_what_safetensors_loaders_see(tiny_model, tmp_path):
    out = str(tmp_path / "m.qnt.safetensors")
    quantize_file([tiny_model], out, Spec(bits=4, granularity="group", group_size=32))
    meta = _metadata(out)
    assert meta["format"] == FORMAT == "quant-archive"  # not "pt", "tf", "flax", "mlx" or "np"
    assert meta["quant.format"] == "quant-archive" and meta["quant.version"] == "1"  # quant's own keys stay
    with open_archive(out) as a:
        assert a.verify() == []


def test_manifest_records_metrics_compactly_and_without_derivable_keys(tiny_model, tmp_path):
    out = str(tmp_path / "m.qnt.safetensors")
    r = quantize_file([tiny_model], out, Spec())
    manifest = json.loads(_metadata(out)[KEY_MANIFEST])
    quantized = [t for t in manifest["tensors"] if t["method"] != "keep"]
    assert quantized
    by_name = {t.name: t for t in r.tensors}
    for t in quantized:
        assert set(t["metrics"]) == {"mse", "sqnr_db", "max_abs_err"}  # bits/weight follows from the arrays
        for key, value in t["metrics"].items():
            digits = repr(value).split("e")[0].replace("-", "").replace(".", "").strip("0")
            assert len(digits) <= METRIC_DIGITS, (key, value)
        measured = by_name[t["name"]]
        assert t["metrics"]["mse"] == pytest.approx(measured.mse, rel=1e-8)
        assert t["metrics"]["sqnr_db"] == pytest.approx(measured.sqnr_db, rel=1e-8)
        # max_abs_err is a float32 difference: 9 digits give it back exactly
        assert np.float32(t["metrics"]["max_abs_err"]) == np.float32(measured.max_abs_err)


def test_planned_size_stays_exact_with_the_longest_metrics(tmp_path):
    """Huge weights give metrics like 123456789000000.0, the longest recorded form: the planner's
    predicted size (header padded to it) must still be the file's size."""
    rng = np.random.default_rng(3)
    src = str(tmp_path / "huge.safetensors")
    save_file({f"w{i}": (rng.standard_normal((64, 256)) * 10.0 ** (7 + i)).astype(np.float32) for i in range(4)}, src)
    cands = [Spec(bits=2, granularity="tensor"), Spec(bits=8)]
    dry = plan_budget([src], Budget("bpw", 5.0), candidates=cands)
    out = str(tmp_path / "h.qnt.safetensors")
    r = quantize_budget([src], out, Budget("bpw", 5.0), candidates=cands)
    assert os.path.getsize(out) == dry.predicted_archive_bytes == r.report.archive_bytes
    longest = max(len(json.dumps(v)) for t in json.loads(_metadata(out)[KEY_MANIFEST])["tensors"]
                  for v in t["metrics"].values())
    assert longest >= 18  # the test does reach long metric forms


def test_a_small_input_is_reported_as_larger_with_a_note(tmp_path):
    small = tmp_path / "small.npy"
    np.save(small, np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32))
    assert small.stat().st_size == 176
    out = tmp_path / "s.qnt.safetensors"
    r = runner.invoke(app, ["quantize", str(small), "-o", str(out)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    ratio = out.stat().st_size / 176
    assert 4 < ratio < 5  # 832 bytes: the header is almost all of it
    assert f"note: the archive is {ratio:.2f}x the size of the input" in r.stdout
    assert "quantizing does not pay" in r.stdout
    doc = json.loads(runner.invoke(app, ["quantize", str(small), "-o", str(out), "--json"]).stdout)
    assert doc["totals"]["ratio"] == pytest.approx(ratio)


def test_no_small_input_note_when_the_archive_is_smaller(tmp_path):
    src = tmp_path / "w.npy"
    np.save(src, np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32))  # 2176 B -> 0.61x
    r = runner.invoke(app, ["quantize", str(src), "-o", str(tmp_path / "w.qnt.safetensors")])
    assert r.exit_code == 0 and "note:" not in r.stdout


def _refusing_folder(tmp_path) -> str:
    """A folder that exists but where no file can be created."""
    if os.geteuid() == 0:  # root writes anywhere but in /proc
        if not os.path.isdir("/proc/self"):
            pytest.skip("no /proc")
        return "/proc"
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return str(folder)


@pytest.mark.parametrize("command", ["quantize", "dequantize", "dequantize-folder", "inspect-report"])
def test_an_existing_folder_that_refuses_files_is_not_called_missing(command, tiny_model, tmp_path):
    folder = _refusing_folder(tmp_path)
    archive = str(tmp_path / "m.qnt.safetensors")
    quantize_file([tiny_model], archive, Spec())
    args = {"quantize": ["quantize", tiny_model, "-o", os.path.join(folder, "x.qnt.safetensors")],
            "dequantize": ["dequantize", archive, "-o", os.path.join(folder, "x.safetensors")],
            "dequantize-folder": ["dequantize", archive, "-o", os.path.join(folder, "restored") + "/"],
            "inspect-report": ["inspect", tiny_model, "--report", os.path.join(folder, "r.json")]}[command]
    r = runner.invoke(app, args)
    assert r.exit_code != 0
    assert "cannot create a file in the output folder (" in r.stderr, r.stderr
    assert "does not exist" not in r.stderr
    r = runner.invoke(app, ["quantize", tiny_model, "-o", str(tmp_path / "no" / "x.qnt.safetensors")])
    assert r.exit_code == 2 and "folder does not exist" in r.stderr  # a missing folder still says so


def test_version_alone_answers_before_the_cli_is_imported():
    import subprocess
    import sys

    code = ("import sys; sys.argv = ['quant', '--version']; from quantcli.__main__ import main; main(); "
            "print(sorted(m for m in ('typer', 'rich', 'pydantic', 'numpy', 'quantcli.cli.commands') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout == "quant 0.1.0\n[]\n" and r.stderr == ""
    full = runner.invoke(app, ["--version"])  # the CLI's own answer is the same line
    assert full.exit_code == 0 and full.stdout == "quant 0.1.0\n"
