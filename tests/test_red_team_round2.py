"""Round 2 red team: each test is a promise of README.md / docs/SECURITY.md / docs/JSON.md that the
installed `quant` broke when this was written. They are strict xfails: when a fix lands the test
passes, pytest reports XPASS as a failure, and the marker is to be removed."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from fuzzing import cli, one_error


def _st(path, tensors: dict) -> str:
    """A safetensors file of {name: (dtype code, array)}."""
    from quantcli.io.safetensors import header_bytes
    layout = [(k, code, a.shape, a.nbytes) for k, (code, a) in tensors.items()]
    path.write_bytes(header_bytes(layout, {"format": "pt"}) + b"".join(a.tobytes() for _, a in tensors.values()))
    return str(path)


W = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)


def _quant(*args, cwd, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "quantcli", *map(str, args)], cwd=cwd, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=120)


# -- 1. --report naming the output: the archive just written is replaced by the JSON report, exit 0 --

@pytest.mark.parametrize("command", ["quantize", "pq-encode", "dequantize"])
def test_report_naming_the_output_is_refused(tmp_path, command):
    src = _st(tmp_path / "in.safetensors", {"w": ("F32", W)})
    if command == "dequantize":
        arch = str(tmp_path / "a.qnt.safetensors")
        assert cli("quantize", src, "-o", arch, "-q").exit_code == 0
        out = str(tmp_path / "back.safetensors")
        run = cli("dequantize", arch, "-o", out, "--report", out, "-q")
    else:
        out = str(tmp_path / "o.qnt.safetensors")
        run = cli(command, src, "-o", out, "--report", out, "-q")
    if run.exit_code == 0:  # accepted: then the output must still be what the command promised
        assert open(out, "rb").read(1) != b"{", "the output file holds the JSON report"
        assert cli("inspect", out, "-q").exit_code == 0
    else:
        one_error(run, out)


# -- 2. quantize and verify accept an archive that dequantize (default options) refuses ----------

@pytest.mark.parametrize("options", [["--method", "bf16"],
                                     ["--bits", "4", "--scheme", "asymmetric", "--granularity", "group",
                                      "--group-size", "64"]])
def test_a_float16_model_at_its_largest_value_round_trips(tmp_path, options):
    src = _st(tmp_path / "h.safetensors", {"h": ("F16", np.full((4, 64), 65504, np.float16))})
    arch = str(tmp_path / "h.qnt.safetensors")
    run = cli("quantize", src, "-o", arch, "-q", *options)
    if run.exit_code:
        one_error(run, src, "tensor 'h'")
        return
    verified = cli("verify", arch).exit_code
    back = cli("dequantize", arch, "-o", tmp_path / "back.safetensors", "-q")
    assert verified == 0 and back.exit_code == 0, back.stderr


# -- 3. a failure with --json into a closed pipe exits 0 and says nothing --------------------------

def _closed_stdout():
    r, w = os.pipe()
    os.close(r)
    return w


@pytest.mark.parametrize("case", ["quantize-nan", "verify-corrupt"])
def test_a_failure_into_a_closed_pipe_is_still_a_failure(tmp_path, case):
    if case == "quantize-nan":
        bad = np.where(W > 2, np.nan, W).astype(np.float32)
        args = ["quantize", _st(tmp_path / "n.safetensors", {"n": ("F32", bad)}), "-o", "o.qnt.safetensors"]
    else:
        (tmp_path / "x.qnt.safetensors").write_bytes(b'{"schema": 1}' * 4)
        args = ["verify", "x.qnt.safetensors"]
    w = _closed_stdout()
    try:
        p = _quant(*args, "--json", cwd=tmp_path, stdout=w)
    finally:
        os.close(w)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert p.stderr.startswith("quant: error: ") and len(p.stderr.splitlines()) == 1, p.stderr


# -- 4. numbers on the command line that end in an internal error (exit 1) -------------------------

@pytest.mark.parametrize("options", [["--target-bpw", "1e308"],
                                     ["--method", "ecsq", "--sqnr", "1e308"],
                                     ["--method", "ecsq", "--sqnr", "-1e308"]])
def test_huge_numbers_are_not_internal_errors(tmp_path, options):
    src = _st(tmp_path / "in.safetensors", {"w": ("F32", W)})
    run = cli("quantize", src, "-o", tmp_path / "o.qnt.safetensors", "-q", *options)
    assert "internal error" not in run.stderr, run.stderr
    if run.exit_code:
        one_error(run)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.safetensors"] or run.exit_code == 0


# -- 5. the planner on float32's largest values: warnings on stderr, an error naming no file -------

@pytest.mark.parametrize("budget", [["--target-bpw", "3"], ["--min-sqnr", "20"], ["--max-size", "3kB"]])
def test_planner_on_float32_max_values_is_one_line_naming_the_tensor(tmp_path, budget):
    top = np.full((4, 64), np.finfo(np.float32).max, np.float32)
    _st(tmp_path / "fmax.safetensors", {"max": ("F32", top), "w": ("F32", W[:4])})
    p = _quant("quantize", "fmax.safetensors", "-o", "o.qnt.safetensors", "-q", *budget, cwd=tmp_path)
    lines = p.stderr.splitlines()
    if p.returncode:
        assert p.returncode == 2 and len(lines) == 1, p.stderr
        assert "fmax.safetensors" in lines[0] and "tensor 'max'" in lines[0], lines[0]
    else:
        assert not lines, p.stderr


# -- 6. an option the planner ignores is silently accepted ----------------------------------------

def test_method_with_a_budget_is_not_a_silent_no_op(tmp_path):
    src = _st(tmp_path / "in.safetensors", {"w": ("F32", W)})
    import json
    run = cli("quantize", src, "-o", tmp_path / "o.qnt.safetensors", "--target-bpw", "30", "--method", "nf",
              "--json")
    if run.exit_code == 0:
        assert all(t["method"] in ("nf", "keep") for t in json.loads(run.stdout)["tensors"]), run.stdout
    else:
        one_error(run, "--method")


# -- 7. whole-number options are bounded by 2^31 - 1 (SECURITY 6c) ---------------------------------

def test_pq_dot_repeat_beyond_the_bound_is_a_usage_error(tmp_path):
    src = _st(tmp_path / "in.safetensors", {"w": ("F32", W)})
    arch = str(tmp_path / "p.pq.safetensors")
    assert cli("pq-encode", src, "-o", arch, "-q", "--centroids", "4").exit_code == 0
    np.save(tmp_path / "q.npy", W[0])
    p = subprocess.Popen([sys.executable, "-m", "quantcli", "pq-dot", arch, "--query", str(tmp_path / "q.npy"),
                          "--reference", src, "--repeat", str(2**31), "-q"], stderr=subprocess.PIPE, text=True)
    try:
        _, err = p.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        pytest.fail("--repeat 2^31 was accepted and ran for over 15 s")
    assert p.returncode == 2 and "--repeat" in err, err


# -- 8. messages that name the wrong thing, or no file ---------------------------------------------

def test_npz_refusal_of_a_nul_name_names_the_file(tmp_path):
    src = _st(tmp_path / "in.safetensors", {"a\x00b": ("F32", W)})
    arch = str(tmp_path / "a.qnt.safetensors")
    assert cli("quantize", src, "-o", arch, "-q").exit_code == 0
    one_error(cli("dequantize", arch, "-o", tmp_path / "o.npz"), "a.qnt.safetensors", "tensor 'a\\x00b'")


def test_huge_step_rms_is_refused_for_what_it_is(tmp_path):
    src = _st(tmp_path / "in.safetensors", {"w": ("F32", W)})
    line = one_error(cli("quantize", src, "-o", tmp_path / "o.qnt.safetensors", "--method", "ecsq",
                         "--step-rms", "1e308"), "tensor 'w'")
    assert "1e-30" not in line and "too small" not in line, line


@pytest.mark.parametrize("objective", ["mse", "relative"])
def test_objective_without_a_budget_is_not_a_silent_no_op(tmp_path, objective):
    src = _st(tmp_path / "in.safetensors", {"w": ("F32", W)})
    one_error(cli("quantize", src, "-o", tmp_path / "o.qnt.safetensors", "--objective", objective), "--objective")
