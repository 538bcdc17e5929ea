"""Interrupts and a full disk: the previous output survives intact and no temp file is left behind.

The interrupt tests run the real `python -m quantcli quantize` on a 192 MB input and signal it once it
is provably mid-run (its spill file, or its temp output file, is open in the output folder).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fuzzing as fz
import quantcli.io.output as output

ROWS, COLS = 512, 1024  # the child holds still at the phase under test, so little data is needed


@pytest.fixture(scope="module")
def big_input(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "big.npy"
    a = np.lib.format.open_memmap(str(path), mode="w+", dtype=np.float32, shape=(ROWS, COLS))
    a[:] = np.linspace(-1, 1, COLS, dtype=np.float32)
    a[::7] *= 3
    a.flush()
    del a
    return str(path)


@pytest.fixture
def previous(tmp_path):
    """An output folder holding a valid archive from an earlier run (the Makefile case)."""
    folder = tmp_path / "out"
    folder.mkdir()
    small = tmp_path / "small.npy"
    np.save(small, np.eye(4, dtype=np.float32))
    out = folder / "model.qnt.safetensors"
    run = fz.invoke(["quantize", str(small), "-o", str(out), "-q"])
    assert run.exit_code == 0
    return out, out.read_bytes()


# The child holds still at a chosen phase (it writes a marker, then waits) so that the signal
# lands exactly there however loaded the machine is: no race with a fast finish.
_HOLD = """
import sys, time
import quantcli.io.output, quantcli.pipeline.write
marker, phase = sys.argv.pop(1), sys.argv.pop(1)

def hold(original):
    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs) if phase == "spill" else None
        open(marker, "w").close()
        time.sleep(120)
        return result if phase == "spill" else original(*args, **kwargs)
    return wrapper

if phase == "spill":  # the first tensor is encoded and its arrays are in the spill file
    quantcli.pipeline.write.encode_tensor = hold(quantcli.pipeline.write.encode_tensor)
else:  # publishing: the header is written, the arrays are about to be copied into the temp file
    quantcli.io.output.SafetensorsWriter._copy = hold(quantcli.io.output.SafetensorsWriter._copy)
from quantcli.cli.entry import main
sys.argv[0] = "quant"
main()
"""


def _signal_mid_run(big_input, out, sig, phase: str, extra=()):
    """Start quantize, wait until it is mid-run ("spill": encoding, "publish": writing the temp
    output, "workers": a worker process has made its spill file), then send `sig`.
    Returns (exit code, stderr)."""
    folder = str(out.parent)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    marker = os.path.join(os.path.dirname(folder), f"held-{phase}")
    held = [] if phase == "workers" else ["-c", _HOLD, marker, phase]
    cmd = [sys.executable, *(held or ["-m", "quantcli"]), "quantize", big_input, "-o", str(out), "-q", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if held and os.path.exists(marker):
                break
            if phase == "workers" and any(f.endswith(".spill") for f in os.listdir(folder)):
                break  # a worker process has created its spill file beside the output
            time.sleep(0.001)
        assert proc.poll() is None, "quantize finished before it could be interrupted"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err.decode()


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_signal_while_quantizing_keeps_the_previous_output(big_input, previous, sig, code, word):
    out, before = previous
    rc, err = _signal_mid_run(big_input, out, sig, "spill")
    assert rc == code
    assert err == f"quant: {word}; no output was written\n"
    assert out.read_bytes() == before
    assert sorted(os.listdir(out.parent)) == [out.name]


def test_sigterm_while_publishing_keeps_the_previous_output(big_input, previous):
    """The last phase: header and arrays being copied into the temp file next to the output."""
    out, before = previous
    rc, err = _signal_mid_run(big_input, out, signal.SIGTERM, "publish")
    assert rc == 143 and err == "quant: terminated; no output was written\n"
    assert out.read_bytes() == before
    assert sorted(os.listdir(out.parent)) == [out.name]


class _FullDisk:
    """A file object that accepts `room` bytes, then fails like a full disk."""

    def __init__(self, f, room: int):
        self._f, self._room = f, room

    def write(self, data) -> int:
        n = len(memoryview(data).cast("B"))
        if n > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= n
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.mark.parametrize("where, room", [("spill", 0), ("spill", 5000), ("publish", 0), ("publish", 300),
                                         ("publish", 20000)])
def test_disk_full_gives_exit_1_and_no_partial_file(tiny_model, previous, monkeypatch, where, room):
    out, before = previous
    if where == "spill":
        real = output.tempfile.TemporaryFile
        monkeypatch.setattr(output.tempfile, "TemporaryFile", lambda *a, **k: _FullDisk(real(*a, **k), room))
    else:
        real_fdopen = os.fdopen
        monkeypatch.setattr(output.os, "fdopen", lambda *a, **k: _FullDisk(real_fdopen(*a, **k), room))

        def no_room(*args, **kwargs):  # the arrays are copied in the kernel, past the Python file object
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(output.os, "copy_file_range", no_room, raising=False)
    run = fz.invoke(["quantize", tiny_model, "-o", str(out), "-q"])
    assert run.exit_code == 1 and not run.crash
    assert run.stderr == f"quant: error: {out}: disk full while writing; nothing was written\n"
    assert out.read_bytes() == before
    assert sorted(os.listdir(out.parent)) == [out.name]


def test_disk_full_during_dequantize(tiny_model, tmp_path, monkeypatch):
    archive = tmp_path / "m.qnt.safetensors"
    assert fz.invoke(["quantize", tiny_model, "-o", str(archive), "-q"]).exit_code == 0
    real_fdopen = os.fdopen
    monkeypatch.setattr(output.os, "fdopen", lambda *a, **k: _FullDisk(real_fdopen(*a, **k), 1000))
    for name in ("back.safetensors", "back.npz"):
        run = fz.invoke(["dequantize", str(archive), "-o", str(tmp_path / name), "-q"])
        assert run.exit_code == 1 and "disk full while writing" in run.stderr, run.stderr
        assert not (tmp_path / name).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.qnt.safetensors", "tiny.safetensors"]


@pytest.fixture(scope="module")
def big_model(tmp_path_factory):
    """Several tensors, enough bytes for worker processes (--jobs 2)."""
    from safetensors.numpy import save_file
    path = tmp_path_factory.mktemp("bigmodel") / "m.safetensors"
    row = np.linspace(-1, 1, 4096, dtype=np.float32)
    save_file({f"layer{i}.weight": np.tile(row * (i + 1), (3072, 1)) for i in range(8)}, str(path))
    return str(path)


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_signal_with_worker_processes_leaves_nothing(big_model, previous, sig, code, word):
    out, before = previous
    rc, err = _signal_mid_run(big_model, out, sig, "workers", ["--jobs", "2", "--bits", "4"])
    assert rc == code and err == f"quant: {word}; no output was written\n"
    assert out.read_bytes() == before
    deadline = time.monotonic() + 10  # workers are terminated by the parent before it exits
    while sorted(os.listdir(out.parent)) != [out.name] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(os.listdir(out.parent)) == [out.name]
