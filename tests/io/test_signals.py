"""Issue 12, real processes: signals from start-up on, SIGTERM during a sharded dequantize, SIGKILL
leftovers cleaned by the next run, a worker killed mid-run, a reader closing our stdout.

Each child holds still at the phase under test (it writes a marker, then waits), so the signal
lands exactly there however loaded the machine is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import save_file

import fuzzing as fz

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _child(code: str, args: list[str], marker: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-c", code, marker, *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})))


def _wait_for(path_exists, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path_exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    assert proc.poll() is None, f"the child ended before the phase under test: {proc.communicate()}"
    assert path_exists(), "the child never reached the phase under test"


def _finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err.decode()


@pytest.fixture
def model(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "model.safetensors"
    save_file({f"l{i}.weight": rng.standard_normal((64, 128)).astype(np.float32) for i in range(4)}, str(path))
    return path


# -- start-up: the CLI's heavy imports are held until the signal has arrived ------------------------

_HOLD_IMPORT = """
import sys, time
marker = sys.argv.pop(1)

class HoldCliImport:  # a meta-path finder: the import of quantcli.cli.commands waits here
    def find_spec(self, name, path=None, target=None):
        if name == "quantcli.cli.commands":
            open(marker, "w").close()
            time.sleep(120)
        return None

import quantcli.__main__ as entry
sys.meta_path.insert(0, HoldCliImport())
sys.argv[0] = "quant"
entry.main()
"""


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_signal_during_start_up_is_one_line(tmp_path, model, sig, code, word):
    marker = str(tmp_path / "held")
    proc = _child(_HOLD_IMPORT, ["inspect", str(model)], marker)
    _wait_for(lambda: os.path.exists(marker), proc)
    proc.send_signal(sig)
    rc, err = _finish(proc)
    assert rc == code and err == f"quant: {word}; no output was written\n"


def test_entry_point_installs_handlers_before_the_heavy_imports():
    code = ("import sys, signal; import quantcli.__main__; assert 'numpy' not in sys.modules, 'numpy'; "
            "assert 'quantcli.cli.commands' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# -- SIGTERM during a sharded dequantize ----------------------------------------------------------

_HOLD_SECOND_SHARD = """
import sys, time
import quantcli.io.output
marker = sys.argv.pop(1)
real = quantcli.io.output.SafetensorsWriter.__init__
made = []

def init(self, path):
    made.append(path)
    if len(made) == 2:  # the first shard is complete (in the temp folder)
        open(marker, "w").close()
        time.sleep(120)
    real(self, path)

quantcli.io.output.SafetensorsWriter.__init__ = init
from quantcli.__main__ import main
sys.argv[0] = "quant"
main()
"""


@pytest.mark.parametrize("previous", [False, True])
def test_sigterm_during_sharded_dequantize_leaves_nothing(tmp_path, model, previous):
    arch = tmp_path / "m.qnt.safetensors"
    assert fz.invoke(["quantize", str(model), "-o", str(arch), "-q"]).exit_code == 0
    out = tmp_path / "out"
    if previous:
        assert fz.invoke(["dequantize", str(arch), "-o", str(out), "--shard-size", "70KB", "-q"]).exit_code == 0
    before = {n: (out / n).read_bytes() for n in os.listdir(out)} if previous else None
    marker = str(tmp_path / "held")
    proc = _child(_HOLD_SECOND_SHARD, ["dequantize", str(arch), "-o", str(out), "--shard-size", "40KB", "-q"], marker)
    _wait_for(lambda: os.path.exists(marker), proc)
    proc.send_signal(signal.SIGTERM)
    rc, err = _finish(proc)
    assert rc == 143 and err == "quant: terminated; no output was written\n"
    os.unlink(marker)
    if previous:
        assert {n: (out / n).read_bytes() for n in os.listdir(out)} == before
    else:
        assert sorted(os.listdir(tmp_path)) == ["m.qnt.safetensors", "model.safetensors"]


# -- SIGKILL: what is left is removed by the next run over the same output -------------------------

_HOLD_PUBLISH = """
import sys, time
import quantcli.io.output
marker = sys.argv.pop(1)
real = quantcli.io.output.SafetensorsWriter._copy

def copy(*args, **kwargs):
    open(marker, "w").close()
    time.sleep(120)
    return real(*args, **kwargs)

quantcli.io.output.SafetensorsWriter._copy = copy
from quantcli.__main__ import main
sys.argv[0] = "quant"
main()
"""


def test_sigkill_leftovers_are_removed_by_the_next_run(tmp_path, model):
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "m.qnt.safetensors"
    marker = str(tmp_path / "held")
    proc = _child(_HOLD_PUBLISH, ["quantize", str(model), "-o", str(out), "-q"], marker)
    _wait_for(lambda: os.path.exists(marker), proc)
    proc.kill()
    proc.wait()
    left = os.listdir(folder)
    assert len(left) == 1 and left[0].startswith(f".m.qnt.safetensors.{proc.pid}.") and left[0].endswith(".tmp")
    assert fz.invoke(["quantize", str(model), "-o", str(out), "-q"]).exit_code == 0
    assert os.listdir(folder) == ["m.qnt.safetensors"]


# -- a worker process killed (as the OOM killer does) ---------------------------------------------

_SLOW_WORKERS = """
import sys
import quantcli.pipeline.parallel, quantcli.pipeline.write
import reliability_helpers
sys.argv.pop(1)
quantcli.pipeline.parallel.PARALLEL_MIN_BYTES = 0
quantcli.pipeline.write.encode_tensor = reliability_helpers.slow_encode
from quantcli.__main__ import main
sys.argv[0] = "quant"
main()
"""


@pytest.mark.parametrize("how", ["kill-worker", "sigterm-parent", "sigint-parent"])
def test_worker_death_fails_the_run_and_signals_stop_the_workers(tmp_path, model, how):
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "m.qnt.safetensors"
    markers = tmp_path / "markers"
    markers.mkdir()
    proc = _child(_SLOW_WORKERS, ["quantize", str(model), "-o", str(out), "-q", "--jobs", "2"], "-",
                  env={"PYTHONPATH": TESTS, "QUANT_TEST_MARKERS": str(markers)})
    _wait_for(lambda: len(os.listdir(markers)) == 2, proc)
    workers = [int(p) for p in os.listdir(markers)]
    if how == "kill-worker":
        os.kill(workers[0], signal.SIGKILL)
        expect = (1, "quant: error: a worker process died (killed, perhaps out of memory); nothing was written; "
                     "--jobs 1 encodes in this process\n")
    elif how == "sigterm-parent":
        proc.send_signal(signal.SIGTERM)
        expect = (143, "quant: terminated; no output was written\n")
    else:
        proc.send_signal(signal.SIGINT)
        expect = (130, "quant: interrupted; no output was written\n")
    assert _finish(proc) == expect
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in workers)
    assert os.listdir(folder) == []  # the spill files of every worker are gone


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone between the lookup and the read
        return False


# -- a reader that closes our stdout --------------------------------------------------------------

@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_closed_stdout_is_a_quiet_normal_end(model, extra):
    proc = subprocess.Popen([sys.executable, "-m", "quantcli", "inspect", str(model), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # like `| head -0`: the reader is gone before we write
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 0 and err == ""  # no "Exception ignored ... BrokenPipeError" at exit either


def test_bad_columns_falls_back(model):
    r = subprocess.run([sys.executable, "-m", "quantcli", "inspect", str(model)], capture_output=True, text=True,
                       env=dict(os.environ, COLUMNS="abc"))
    assert r.returncode == 0 and r.stderr == "" and "l0.weight" in r.stdout
