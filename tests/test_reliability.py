"""Issue 12, in-process: outputs never replace inputs, folder outputs are published as a whole,
the writer refuses what the reader would, options are typed, errors are one line with the
documented status. Signals, SIGKILL leftovers and dying workers: tests/io/test_signals.py."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import threading
import zipfile

import numpy as np
import pytest
from safetensors.numpy import save_file

import fuzzing as fz
import quantcli.io.output as output
import quantcli.io.safetensors as sio
from quantcli.errors import ConfigError, InputError
from quantcli.io.safetensors import SafetensorsFile, header_bytes
from quantcli.io.signals import Interrupted, held, install
from quantcli.spec import Spec


def _snapshot(folder) -> dict[str, str]:
    """Every entry of a folder (hidden ones too) with its content's digest."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = os.path.join(root, name)
            out[os.path.relpath(p, folder)] = "dir" if os.path.isdir(p) else hashlib.sha256(
                open(p, "rb").read()).hexdigest()
    return out


@pytest.fixture
def archive(tmp_path):
    """An archive of four 64x128 tensors (32 KiB each dequantized)."""
    rng = np.random.default_rng(0)
    src = tmp_path / "model.safetensors"
    save_file({f"l{i}.weight": rng.standard_normal((64, 128)).astype(np.float32) for i in range(4)}, str(src))
    path = tmp_path / "m.qnt.safetensors"
    assert fz.invoke(["quantize", str(src), "-o", str(path), "-q"]).exit_code == 0
    return path


# -- 1. an output never replaces an input; folder outputs are published as a whole ----------------

@pytest.mark.parametrize("name", ["model.safetensors", "model-00001-of-00004.safetensors",
                                  "model.safetensors.index.json"])
def test_folder_output_never_replaces_or_removes_the_input(archive, tmp_path, name):
    """The archive sits in the output folder under a name the new output would write or remove."""
    d = tmp_path / "d"
    d.mkdir()
    inside = d / name
    inside.write_bytes(archive.read_bytes())
    before = _snapshot(d)
    for extra in ([], ["--shard-size", "40KB"]):
        run = fz.invoke(["dequantize", str(inside), "-o", f"{d}/", "-q", *extra])
        assert run.exit_code == 2 and "inputs are never overwritten" in run.stderr, run.stderr
        assert run.stderr.count("\n") == 1
        assert _snapshot(d) == before


@pytest.mark.parametrize("how", ["symlink", "hardlink"])
def test_file_output_resolving_to_the_input_is_refused(archive, tmp_path, how):
    link = tmp_path / "back.safetensors"
    (os.symlink if how == "symlink" else os.link)(archive, link)
    before = archive.read_bytes()
    run = fz.invoke(["dequantize", str(archive), "-o", str(link), "-q"])
    assert run.exit_code == 2 and "inputs are never overwritten" in run.stderr
    assert archive.read_bytes() == before


def test_failed_sharded_dequantize_leaves_the_previous_output_exactly(archive, tmp_path):
    out = tmp_path / "out"
    assert fz.invoke(["dequantize", str(archive), "-o", str(out), "--shard-size", "40KB", "-q"]).exit_code == 0
    before = _snapshot(out)
    assert len([n for n in before if n.endswith(".safetensors")]) == 4
    data = bytearray(archive.read_bytes())
    data[-3] ^= 0x40  # the last stored array: three shards are written before the failure
    bad = tmp_path / "bad.qnt.safetensors"
    bad.write_bytes(bytes(data))
    for extra in (["--shard-size", "40KB"], ["--shard-size", "70KB"], []):
        run = fz.invoke(["dequantize", str(bad), "-o", str(out), "-q", *extra])
        assert run.exit_code == 2 and "corrupt" in run.stderr
        assert _snapshot(out) == before
    fresh = tmp_path / "fresh"
    assert fz.invoke(["dequantize", str(bad), "-o", str(fresh), "--shard-size", "40KB", "-q"]).exit_code == 2
    assert sorted(os.listdir(tmp_path)) == ["bad.qnt.safetensors", "m.qnt.safetensors", "model.safetensors", "out"]


def test_a_new_folder_output_leaves_nothing_of_an_older_one(archive, tmp_path):
    out = tmp_path / "out"
    (tmp_path / "out").mkdir()
    (out / "notes.txt").write_text("mine")  # not an output file name: never touched
    assert fz.invoke(["dequantize", str(archive), "-o", str(out), "--shard-size", "40KB", "-q"]).exit_code == 0
    assert sorted(os.listdir(out)) == [f"model-0000{i}-of-00004.safetensors" for i in range(1, 5)] + [
        "model.safetensors.index.json", "notes.txt"]
    assert fz.invoke(["dequantize", str(archive), "-o", str(out), "--shard-size", "70KB", "-q"]).exit_code == 0
    assert sorted(os.listdir(out)) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                                       "model.safetensors.index.json", "notes.txt"]
    assert fz.invoke(["dequantize", str(archive), "-o", f"{out}/", "-q"]).exit_code == 0
    assert sorted(os.listdir(out)) == ["model.safetensors", "notes.txt"]
    assert oct(os.stat(out).st_mode & 0o777) == oct(0o777 & ~_umask())
    fresh = tmp_path / "new" / "deeper"
    assert fz.invoke(["dequantize", str(archive), "-o", str(fresh), "--shard-size", "70KB", "-q"]).exit_code == 0
    assert oct(os.stat(fresh).st_mode & 0o777) == oct(0o777 & ~_umask())  # not mkdtemp's 0700
    assert sorted(os.listdir(fresh.parent)) == ["deeper"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("err", [errno.EACCES, errno.EROFS])
@pytest.mark.parametrize("target", ["back.safetensors", "back.npz", "folder/"])
def test_a_refused_write_is_exit_1(archive, tmp_path, monkeypatch, err, target):
    """Bad input or usage is 2; the environment refusing while working (read-only, permissions) is 1."""
    def refuse(*a, **k):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(output.tempfile, "mkstemp", refuse)
    monkeypatch.setattr(output.tempfile, "mkdtemp", refuse)
    monkeypatch.setattr(output.tempfile, "TemporaryFile", refuse)
    run = fz.invoke(["dequantize", str(archive), "-o", f"{tmp_path}/{target}", "-q"])
    assert run.exit_code == 1 and run.stderr.count("\n") == 1, run.stderr
    assert os.strerror(err) in run.stderr
    assert sorted(os.listdir(tmp_path)) == ["m.qnt.safetensors", "model.safetensors"]


# -- 2. signals held around creating a temp file ----------------------------------------------------

def _signal_me(sig: int) -> None:
    """Send `sig` to this thread (the main one). A signal sent to the process may be taken by any
    thread not blocking it (numpy's BLAS threads are there) and acted on a moment later, after
    the step under test has ended: the test would race the kernel, not test `held()`."""
    signal.pthread_kill(threading.get_ident(), sig)


def test_held_defers_sigterm_and_sigint_to_the_end_of_the_step():
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    install()
    try:
        for sig, exc in ((signal.SIGTERM, Interrupted), (signal.SIGINT, KeyboardInterrupt)):
            steps = []
            with pytest.raises(exc):
                with held():
                    _signal_me(sig)
                    steps.append("after the signal")
            assert steps == ["after the signal"]
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_as_the_temp_file_is_created_leaves_nothing(tmp_path, monkeypatch, sig):
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    real = output.tempfile.mkstemp

    def mkstemp_then_signal(*a, **k):
        made = real(*a, **k)
        _signal_me(sig)  # the worst moment: the file exists, nobody owns it yet
        return made

    monkeypatch.setattr(output.tempfile, "mkstemp", mkstemp_then_signal)
    install()
    try:
        with pytest.raises((Interrupted, KeyboardInterrupt)):
            with output.atomic_output(str(tmp_path / "x.npy")) as f:
                f.write(b"never")
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    assert os.listdir(tmp_path) == []


# -- 3. stale temp and spill files of dead processes -------------------------------------------------

def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_stale_files_of_dead_processes_go_live_ones_stay(tiny_model, tmp_path):
    out = tmp_path / "out" / "m.qnt.safetensors"
    out.parent.mkdir()
    dead, live = _dead_pid(), os.getppid()
    stale = [f".m.qnt.safetensors.{dead}.ab12_x.tmp", f".m.qnt.safetensors.{dead}.wq9z8y7x.spill"]
    kept = [f".m.qnt.safetensors.{live}.cd34.tmp", f".other.safetensors.{dead}.ab12.tmp",
            f".m.qnt.safetensors.{dead}.not.ours.tmp", "notes.txt"]
    for name in stale + kept:
        (out.parent / name).write_bytes(b"x")
    (out.parent / f".m.qnt.safetensors.{dead}.dir1.tmp").mkdir()  # a temp folder (folder outputs)
    (out.parent / f".m.qnt.safetensors.{dead}.dir1.tmp" / "model.safetensors").write_bytes(b"x")
    assert fz.invoke(["quantize", tiny_model, "-o", str(out), "-q"]).exit_code == 0
    assert sorted(os.listdir(out.parent)) == sorted(kept + ["m.qnt.safetensors"])


# -- 5. the writer refuses what the reader refuses, with the same message ----------------------------

def test_header_limit_is_enforced_by_the_writer_with_the_readers_message(tmp_path, monkeypatch):
    monkeypatch.setattr(sio, "MAX_HEADER_BYTES", 4096)
    layout = [(f"tensor.{i:04d}." + "x" * 60, "F32", (1,), 4) for i in range(60)]
    with pytest.raises(InputError) as written:
        header_bytes(layout, None)
    monkeypatch.setattr(sio, "MAX_HEADER_BYTES", 10**6)
    path = tmp_path / "big.safetensors"
    path.write_bytes(header_bytes(layout, None) + b"\0" * 240)
    monkeypatch.setattr(sio, "MAX_HEADER_BYTES", 4096)
    with pytest.raises(InputError) as read:
        SafetensorsFile(str(path))
    problem = sio.header_length_problem(int.from_bytes(path.read_bytes()[:8], "little"))
    assert problem and problem in written.value.message and problem in read.value.message


def test_many_long_names_are_refused_before_any_file_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(sio, "MAX_HEADER_BYTES", 64 * 1024)
    src = tmp_path / "names.safetensors"
    save_file({f"{'block.' * 40}{i}.weight": np.ones((2, 2), np.float32) for i in range(400)}, str(src))
    out = tmp_path / "m.qnt.safetensors"
    run = fz.invoke(["quantize", str(src), "-o", str(out), "-q"])
    assert run.exit_code == 2 and "header length" in run.stderr and run.stderr.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == ["names.safetensors"]


@pytest.mark.parametrize("name, shape, message", [
    ("w\udcff", (2,), "lone surrogate"), ("w", (1,) * 65, "more than 64"), (7, (2,), "not a string")])
def test_writer_refuses_names_and_shapes_the_reader_refuses(name, shape, message):
    with pytest.raises(InputError, match=message):
        header_bytes([(name, "F32", shape, 8)], None)
    with pytest.raises(InputError, match="lone surrogate"):
        header_bytes([], {"k": "\ud800"})


def test_reader_refuses_lone_surrogate_names(tmp_path):
    text = b'{"w\\udcff":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    text += b" " * (-len(text) % 8)
    path = tmp_path / "s.safetensors"
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"\0" * 4)
    run = fz.invoke(["inspect", str(path)])
    assert run.exit_code == 2 and "lone surrogate" in run.stderr and run.stderr.count("\n") == 1


def test_undecodable_file_name_gives_a_clean_refusal(tmp_path):
    """A .npy whose file name is not UTF-8 becomes a tensor name with a lone surrogate."""
    src = os.path.join(os.fsencode(tmp_path), b"w\xff.npy")
    with open(src, "wb") as f:
        np.save(f, np.ones((4, 4), np.float32))
    out = tmp_path / "m.qnt.safetensors"
    run = fz.invoke(["quantize", os.fsdecode(src), "-o", str(out), "-q"])
    assert run.exit_code == 2 and not run.crash and run.stderr.count("\n") == 1
    assert "lone surrogate" in run.stderr and "\\udcff" in run.stderr
    assert not out.exists()


# -- 6. names that a .npz member cannot hold faithfully ----------------------------------------------

@pytest.mark.parametrize("names, message", [
    (["a\0x", "a\0y"], "NUL"), (["../evil"], "'..' path"), (["/abs"], "absolute"), (["ok", "fine"], None)])
def test_npz_output_never_merges_or_mangles_names(tmp_path, names, message):
    src = tmp_path / "n.safetensors"
    save_file({n: np.full((2, 2), i, np.float32) for i, n in enumerate(names)}, str(src))
    arch = tmp_path / "n.qnt.safetensors"
    assert fz.invoke(["quantize", str(src), "-o", str(arch), "-q"]).exit_code == 0
    out = tmp_path / "back.npz"
    run = fz.invoke(["dequantize", str(arch), "-o", str(out), "-q"])
    if message is None:
        assert run.exit_code == 0
        with np.load(out) as z:
            assert sorted(z.files) == sorted(names)
        return
    assert run.exit_code == 2 and message in run.stderr and run.stderr.count("\n") == 1
    assert not out.exists()
    assert fz.invoke(["dequantize", str(arch), "-o", str(tmp_path / "back.safetensors"), "-q"]).exit_code == 0
    with SafetensorsFile(str(tmp_path / "back.safetensors")) as st:
        assert sorted(st.entries) == sorted(names)  # safetensors keys hold any string


# -- 7. tracebacks and exit codes ----------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--max-size", "9" * 400], "--max-size"),
    (["--group-size", str(2**70), "--granularity", "group"], "at most 2147483647"),
    (["--iters", str(2**40), "--method", "vq"], "at most 2147483647"),
])
def test_huge_numbers_are_usage_errors(tiny_model, tmp_path, args, message):
    run = fz.invoke(["quantize", tiny_model, "-o", str(tmp_path / "m.qnt.safetensors"), "-q", *args])
    assert run.exit_code == 2 and message in run.stderr and run.stderr.count("\n") == 1, run.stderr


def test_huge_shard_size_is_a_usage_error(archive, tmp_path):
    run = fz.invoke(["dequantize", str(archive), "-o", str(tmp_path / "o"), "--shard-size", "1" * 400, "-q"])
    assert run.exit_code == 2 and "--shard-size" in run.stderr and run.stderr.count("\n") == 1
    from quantcli.archive.dequant import parse_size
    assert parse_size("1.5GB") == 1_500_000_000 and parse_size("0.1KiB") == 102
    assert parse_size("9223372036854775807") == 2**63 - 1
    with pytest.raises(ConfigError):
        parse_size("9223372036854775808")


@pytest.mark.parametrize("line", ["group_size = nan", "group_size = inf", "group_size = 2.5", "group_size = true",
                                  "vector_dim = inf", "iters = nan", "bits = 4.0", "seed = -1", "scheme = 3",
                                  "scale_search = 1", f"group_size = {2**62}"])
def test_recipe_values_are_typed_like_options(tiny_model, tmp_path, line):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f"[default]\n{line}\n")
    run = fz.invoke(["quantize", tiny_model, "-o", str(tmp_path / "m.qnt.safetensors"), "--recipe", str(recipe),
                     "-q"])
    assert run.exit_code == 2 and run.stderr.startswith(f"quant: error: {recipe}: --"), run.stderr
    assert run.stderr.count("\n") == 1 and not run.crash


def test_spec_types():
    for bad in (dict(group_size=float("nan")), dict(group_size=True), dict(iters=float("nan")),
                dict(vector_dim=float("inf")), dict(subspaces=2.0), dict(scale_search=1), dict(method=None)):
        with pytest.raises(ConfigError):
            Spec(**bad)
    assert Spec(subspaces=None, seed=2**63 - 1).seed == 2**63 - 1


def test_encrypted_npz_member_is_refused(tmp_path):
    path = tmp_path / "e.npz"
    np.savez(path, w=np.ones((2, 2), np.float32))
    data = bytearray(path.read_bytes())
    for sig, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # general-purpose flag bit 0: encrypted
        data[data.find(sig) + at] |= 1
    path.write_bytes(bytes(data))
    with zipfile.ZipFile(path) as z:
        assert z.infolist()[0].flag_bits & 1
    run = fz.invoke(["inspect", str(path)])
    assert run.exit_code == 2 and "encrypted" in run.stderr and run.stderr.count("\n") == 1


def test_paths_with_control_characters_stay_on_one_line(tmp_path):
    odd = tmp_path / "a\nb\rc\x1b[31m.safetensors"
    odd.write_bytes(b"short")
    for args in (["inspect", str(odd)], ["verify", str(odd)], ["quantize", str(odd), "-o", str(tmp_path / "o")]):
        run = fz.invoke(args)
        assert run.exit_code == 2 and run.stderr.count("\n") == 1 and "\\n" in run.stderr, run.stderr


def test_float16_overflow_is_refused_not_written_as_inf(tmp_path):
    src = tmp_path / "big.safetensors"
    save_file({"big": np.array([[1e5, 1.0], [2.0, -7e4]], np.float32), "small": np.eye(2, dtype=np.float32)},
              str(src))
    arch = tmp_path / "b.qnt.safetensors"
    assert fz.invoke(["quantize", str(src), "-o", str(arch), "-q"]).exit_code == 0
    for out in ("b16.safetensors", "b16.npz", "b16/"):
        run = fz.invoke(["dequantize", str(arch), "-o", f"{tmp_path}/{out}", "--dtype", "float16", "-q"])
        assert run.exit_code == 2 and run.stderr.count("\n") == 1, run.stderr
        assert "tensor 'big': 2 values exceed float16's range" in run.stderr and "Warning" not in run.stderr
    assert fz.invoke(["dequantize", str(arch), "-o", str(tmp_path / "b.safetensors"), "--dtype", "bfloat16",
                      "-q"]).exit_code == 0
    assert sorted(os.listdir(tmp_path)) == ["b.qnt.safetensors", "b.safetensors", "big.safetensors"]


def test_catastrophic_regex_is_bounded(tmp_path, monkeypatch):
    import quantcli.pipeline.selection
    monkeypatch.setattr(quantcli.pipeline.selection, "REGEX_CPU_SECONDS", 0.2)  # 1 s in use; the bound is what counts
    src = tmp_path / "a.safetensors"
    save_file({"a" * 40 + "b": np.ones((2, 2), np.float32)}, str(src))
    run = fz.invoke(["quantize", str(src), "-o", str(tmp_path / "m.qnt.safetensors"), "--only", "(a+)+$", "-q"])
    assert run.exit_code == 2 and "backtracks" in run.stderr and run.stderr.count("\n") == 1
    recipe = tmp_path / "r.toml"
    recipe.write_text("[[rule]]\npattern = '(a|aa)+$'\nbits = 4\n")
    run = fz.invoke(["quantize", str(src), "-o", str(tmp_path / "m.qnt.safetensors"), "--recipe", str(recipe), "-q"])
    assert run.exit_code == 2 and "backtracks" in run.stderr
    assert signal.getitimer(signal.ITIMER_VIRTUAL) == (0.0, 0.0)
