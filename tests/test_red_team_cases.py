"""Issue 22: the outside red team's classes, each refused with one line naming the file and tensor
(exit 2), never an internal error, a warning on stderr or a non-finite value from a verified archive."""

from __future__ import annotations

import numpy as np
import pytest

import fuzzing as fz
from fuzzing import cli, one_error


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return fz.build_seeds(str(tmp_path_factory.mktemp("seeds")))


def resigned(seed, tmp_path, edit, name="a.qnt.safetensors") -> str:
    path = tmp_path / name
    path.write_bytes(fz._resign(seed, edit))
    return str(path)


def _t(m, name="w"):
    return next(t for t in m["tensors"] if t["name"] == name)


# -- 1. manifest numbers JSON cannot hold ------------------------------------------------------

@pytest.mark.parametrize("field, key, value, message", [
    ("metrics", "mse", float("nan"), "metrics.mse is nan"),
    ("metrics", "sqnr_db", float("inf"), "metrics.sqnr_db is inf"),
    ("metrics", "max_abs_err", float("-inf"), "metrics.max_abs_err is -inf"),
    ("metrics", "mse", 10**400, "metrics.mse is an integer of 1329 bits"),
    ("params", "extra", float("nan"), "params.extra is nan"),
    ("params", "extra", [1, {"x": 10**400}], "params.extra[1].x is an integer"),
])
def test_manifest_numbers_json_cannot_hold_are_refused_on_open(seeds, tmp_path, field, key, value, message):
    def edit(m, arrays, meta):
        _t(m)[field][key] = value
    path = resigned(seeds["archive-int8-sym-channel"], tmp_path, edit)
    for args in (["inspect", path, "--json"], ["inspect", path], ["verify", path],
                 ["dequantize", path, "-o", tmp_path / "o.safetensors"]):
        one_error(cli(*args), path, "tensor 'w'", message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.qnt.safetensors"]


def test_large_but_plain_manifest_numbers_still_open(seeds, tmp_path):
    def edit(m, arrays, meta):
        _t(m)["metrics"]["mse"] = 1e308
        _t(m)["params"]["extra"] = 2**63 - 1
    path = resigned(seeds["archive-int8-sym-channel"], tmp_path, edit)
    run = cli("inspect", path, "--json")
    assert run.exit_code == 0 and not run.stderr, run.stderr


# -- 2. codes beyond the codebook: refused by verify as by dequantize, naming file and tensor ----

def _codes_through(codec: str, value: int):
    """An edit storing `w`'s codes through `codec` (format 2), all 0 but one code `value`."""
    from quantcli.codecs import CODECS
    from quantcli.archive.storage import logical_layout

    def edit(m, arrays, meta):
        t = _t(m)
        lay = logical_layout(t["method"], tuple(t["shape"]), t["params"])["codes"]
        codes = np.zeros(lay.shape, dtype=np.uint16)
        codes.reshape(-1)[-1] = value
        data, params = CODECS[codec].encode(codes, alphabet=value + 1)
        arrays[t["arrays"]["codes"]] = np.frombuffer(data, np.uint8).copy()
        t["codecs"] = {"codes": {"codec": codec, **params}}
        meta["quant.version"] = "2"
    return edit


@pytest.mark.parametrize("seed_name, value, message", [
    ("archive-kmeans-rows", 200, "code 200 is outside the 2-bit alphabet 0..3"),  # was IndexError, exit 1
    ("archive-kmeans-norm", 255, "code 255 is outside the 3-bit alphabet 0..7"),
    ("archive-vq", 200, "code 200 is outside the 5-bit alphabet 0..31"),
    ("archive-kmeans-rows", 4, "code 4 is outside the 2-bit alphabet 0..3"),  # was exit 0, a neighbour's level
    ("archive-pq", 6, "code 6 is outside the 5-centroid codebooks"),
])
def test_crans_codes_beyond_the_codebook_are_refused_by_verify_and_dequantize(seeds, tmp_path, seed_name, value,
                                                                              message):
    path = resigned(seeds[seed_name], tmp_path, _codes_through("crans", value))
    one_error(cli("verify", path), path, "tensor 'w'", message)
    one_error(cli("dequantize", path, "-o", tmp_path / "o.safetensors"), path, "tensor 'w'", message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.qnt.safetensors"]


def test_pq_dot_names_the_file_and_tensor_of_a_code_beyond_the_codebook(seeds, tmp_path):
    path = resigned(seeds["archive-pq"], tmp_path, _codes_through("rans", 7))
    np.save(tmp_path / "q.npy", np.ones(12, np.float32))
    one_error(cli("pq-dot", path, "--query", tmp_path / "q.npy"), path, "tensor 'w'",
              "code 7 is outside the 5-centroid codebooks")


# -- 3. nothing non-finite from finite archives; --dtype never narrows to inf, never touches kept --

def test_finite_stored_values_decoding_beyond_float32_are_refused_by_verify_and_dequantize(seeds, tmp_path):
    def edit(m, arrays, meta):  # a finite codebook times finite scales: past float32
        arrays[_t(m)["arrays"]["codebook"]][...] = 3e38
    path = resigned(seeds["archive-kmeans-norm"], tmp_path, edit)
    for args in (["verify", path], ["dequantize", path, "-o", tmp_path / "o.safetensors"]):
        one_error(cli(*args), path, "tensor 'w'", "non-finite values")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.qnt.safetensors"]


def test_lossless_planes_wider_than_the_tensor_dtype_are_refused(seeds, tmp_path):
    def edit(m, arrays, meta):  # float32 planes under a float16 tensor: 1e30 would come back as inf
        t = _t(m)
        t["dtype"] = "F16"
        t.pop("codecs", None)
        m.pop("original", None)  # the input file's record would be refused first (it says F32)
        arrays[t["arrays"]["values"]][...] = 1e30
    path = resigned(seeds["archive-lossless"], tmp_path, edit)
    for args in (["verify", path], ["dequantize", path, "-o", tmp_path / "o.safetensors"]):
        one_error(cli(*args), path, "tensor 'w'", "stores float32 values for a F16 tensor")


def test_narrowing_dtype_that_overflows_is_refused_and_kept_tensors_keep_theirs(tmp_path):
    from safetensors.numpy import load_file, save_file
    src = tmp_path / "m.safetensors"
    big = np.full((4, 8), 3.4e38, np.float32)  # finite float32, beyond bfloat16's largest (3.39e38)
    bias = np.array([1e5, -2.5, 3.0, 7e4], np.float32)  # a kept 1-D float32: beyond float16, kept as it is
    save_file({"big": big, "bias": bias}, str(src))
    arc = tmp_path / "m.qnt.safetensors"
    assert cli("quantize", src, "-o", arc, "--method", "lossless", "-q").exit_code == 0
    for dtype in ("bfloat16", "float16"):
        out = tmp_path / f"o-{dtype}.safetensors"
        one_error(cli("dequantize", arc, "-o", out, "--dtype", dtype), str(arc), "tensor 'big'",
                  f"32 values exceed {dtype}'s range")
        assert not out.exists()
    save_file({"big": np.ones((4, 8), np.float32), "bias": bias}, str(src))
    assert cli("quantize", src, "-o", arc, "-q").exit_code == 0
    out = tmp_path / "o.safetensors"
    run = cli("dequantize", arc, "-o", out, "--dtype", "float16", "-q")
    assert run.exit_code == 0 and not run.stderr, run.stderr
    back = load_file(str(out))
    assert back["big"].dtype == np.float16
    assert back["bias"].dtype == np.float32 and back["bias"].tobytes() == bias.tobytes()


# -- 4. extreme values: one stderr line on failure (exit 2), nothing on success -------------------

def _extreme_inputs(folder) -> None:
    from safetensors.numpy import save_file
    from quantcli.io.safetensors import header_bytes
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 64)).astype(np.float32)
    save_file({"w": w}, str(folder / "x.safetensors"))
    top = np.full((16, 64), np.finfo(np.float32).max, np.float32)
    top[::2] *= -1
    top[3, 5] = 0
    save_file({"w": top}, str(folder / "fmax.safetensors"))
    diag = (w * w).mean(axis=0).astype(np.float32)
    diag[::3] *= 1e6  # columns a million times more important: importance scales far from 1
    (folder / "imp.safetensors").write_bytes(header_bytes(
        [("w", "F32", diag.shape, diag.nbytes)], {"format": "quant-importance", "tokens": "16"}) + diag.tobytes())


EXTREME = [  # (arguments after `quant quantize IN -o OUT -q`, exit status)
    (["x.safetensors", "--method", "ecsq", "--step", "1e-45"], 2),  # was RuntimeWarning lines, then the error
    (["x.safetensors", "--method", "ecsq", "--step", "1e-30", "--trellis"], 2),  # was internal error, exit 1
    (["x.safetensors", "--method", "ecsq", "--step", "1e37", "--importance", "imp.safetensors"], 0),
    (["x.safetensors", "--method", "ecsq", "--step", "1e-40", "--importance", "imp.safetensors"], 2),
    (["fmax.safetensors"], 0),  # was overflow warnings, and an archive decoding to inf
    (["fmax.safetensors", "--scheme", "asymmetric", "--granularity", "tensor"], 2),  # a range of 2x the largest
    (["fmax.safetensors", "--bits", "4", "--granularity", "group", "--group-size", "16"], 0),
    (["fmax.safetensors", "--method", "kmeans", "--normalize", "group", "--jobs", "2"], 0),
    (["fmax.safetensors", "--method", "vq"], 2),  # was 5 warning lines
    (["fmax.safetensors", "--method", "ecsq", "--step", "1e36"], 2),  # was an error naming no tensor
    (["fmax.safetensors", "--method", "ecsq", "--sqnr", "20"], 2),  # was 4 warning lines
    # was "--step must be positive, got 0.0": an option nobody gave
    (["x.safetensors", "--method", "ecsq", "--sqnr", "1e3", "--importance", "imp.safetensors"], 2),
]


def test_extreme_commands_print_one_line_on_failure_and_nothing_on_success(tmp_path):
    import subprocess
    import sys
    _extreme_inputs(tmp_path)
    procs = []
    for i, (args, _) in enumerate(EXTREME):
        cmd = [sys.executable, "-m", "quantcli", "quantize", *args, "-o", f"o{i}.qnt.safetensors", "-q"]
        procs.append(subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        if len(procs) % 2 == 0:  # two at a time: the machine is shared
            procs[-2].wait()
    for (args, status), p in zip(EXTREME, procs):
        _, err = p.communicate(timeout=120)
        assert p.returncode == status, (args, p.returncode, err)
        lines = err.splitlines()
        if status:
            assert len(lines) == 1 and lines[0].startswith("quant: error: "), (args, err)
        else:
            assert not lines, (args, err)
            assert cli("verify", tmp_path / f"o{EXTREME.index((args, status))}.qnt.safetensors").exit_code == 0


# -- 5. statistics files (--importance) ---------------------------------------------------------

def _stats_file(path, entries: dict, tokens: str | None = "6") -> str:
    from quantcli.io.safetensors import header_bytes
    meta = {"format": "quant-importance", **({"tokens": tokens} if tokens is not None else {})}
    layout = [(k, "F64", v.shape, v.nbytes) for k, v in entries.items()]
    path.write_bytes(header_bytes(layout, meta) + b"".join(v.tobytes() for v in entries.values()))
    return str(path)


W6 = np.random.default_rng(0).standard_normal((6, 12)).astype(np.float32)
DIAG = (W6.astype(np.float64) ** 2).mean(axis=0)


@pytest.mark.parametrize("entries, tokens, where, message", [
    ({"e": np.zeros(0)}, "6", "tensor 'e'", "is empty (shape [0])"),  # was internal error: zero-size array
    ({"w": DIAG}, "\u00b2", "", "tokens must be a non-negative integer, got '\u00b2'"),  # was int() ValueError
    ({"w": DIAG}, "\u0663", "", "tokens must be a non-negative integer"),
    ({"w": np.full(12, 1e308)}, "6", "tensor 'w'", "holds values too large to use"),  # was overflow warnings
    ({"w.gram": np.full((12, 12), 1e308)}, "6", "tensor 'w.gram'", "holds values too large to use"),
    ({"w.gram": np.eye(12) * 1e308}, "6", "tensor 'w.gram'", "holds values too large to use"),
])
def test_hostile_statistics_files_are_one_line_without_warnings(tmp_path, entries, tokens, where, message):
    import warnings
    from safetensors.numpy import save_file
    save_file({"w": W6, "e": np.zeros((4, 0), np.float32)}, str(tmp_path / "m.safetensors"))
    stats = _stats_file(tmp_path / "s.safetensors", entries, tokens)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning anywhere becomes an internal error (exit 1)
        run = cli("quantize", tmp_path / "m.safetensors", "-o", tmp_path / "o.qnt.safetensors", "--bits", "4",
                  "--importance", stats)
    one_error(run, stats, where, message)
    assert not (tmp_path / "o.qnt.safetensors").exists()


@pytest.mark.parametrize("entries", [
    {"w.rows": np.full(6, 1e308)},
    {"w.rows": np.r_[np.full(5, 1e-308), 1e308]},
    {"w": np.r_[np.full(11, 1e-300), 1e308]},
])
def test_extreme_but_finite_statistics_are_used_without_warnings(tmp_path, entries):
    import warnings
    from safetensors.numpy import save_file
    save_file({"w": W6}, str(tmp_path / "m.safetensors"))
    stats = _stats_file(tmp_path / "s.safetensors", entries)
    out = tmp_path / "o.qnt.safetensors"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = cli("quantize", tmp_path / "m.safetensors", "-o", out, "--bits", "4", "--importance", stats, "-q")
        assert run.exit_code == 0 and not run.stderr, run.stderr
        assert cli("verify", out).exit_code == 0


# -- 6. worker processes end when their parent dies ----------------------------------------------

def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().split(")")[-1].split()[1])


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self"), reason="reads /proc")
def test_workers_and_their_forkserver_exit_after_sigkill_of_the_parent(tmp_path):
    import os
    import signal
    import time
    from safetensors.numpy import save_file
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "io", "test_signals.py")
    spec = importlib.util.spec_from_file_location("signal_helpers", path)
    assert spec is not None and spec.loader is not None
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    _SLOW_WORKERS, TESTS, _alive, _child, _wait_for = (helpers._SLOW_WORKERS, helpers.TESTS, helpers._alive,
                                                        helpers._child, helpers._wait_for)
    model = tmp_path / "model.safetensors"
    save_file({f"l{i}.weight": np.ones((8, 16), np.float32) for i in range(4)}, str(model))
    markers = tmp_path / "markers"
    markers.mkdir()
    proc = _child(_SLOW_WORKERS, ["quantize", str(model), "-o", str(tmp_path / "m.qnt.safetensors"), "-q",
                                  "--jobs", "2"], "-", env={"PYTHONPATH": TESTS, "QUANT_TEST_MARKERS": str(markers)})
    try:
        _wait_for(lambda: len(os.listdir(markers)) == 2, proc)
        workers = [int(p) for p in os.listdir(markers)]
        helpers = {_ppid(w) for w in workers} - {proc.pid}  # the forkserver, when workers are forked by one
        proc.kill()  # as the OOM killer would: nothing of the parent's runs any more
        proc.wait()
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in [*workers, *helpers]) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [p for p in [*workers, *helpers] if _alive(p)]
    finally:
        for p in os.listdir(markers):
            try:
                os.kill(int(p), signal.SIGKILL)  # only the worker processes this test started
            except ProcessLookupError:
                pass
    assert not left, f"still running after their parent died: {left}"


@pytest.mark.parametrize("pidfd", [True, False])
def test_a_worker_ends_with_the_process_it_watches(pidfd):
    import subprocess
    import sys
    import time
    watched = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    code = ("import os, sys, time\n"
            + ("" if pidfd else "del os.pidfd_open  # the polling fallback\n")
            + "from quantcli.pipeline import parallel\nparallel._exit_with(int(sys.argv[1]))\ntime.sleep(60)\n")
    worker = subprocess.Popen([sys.executable, "-c", code, str(watched.pid)])
    try:
        time.sleep(1.5)
        assert worker.poll() is None  # the watched process lives: so does the worker
        watched.kill()
        watched.wait()
        assert worker.wait(timeout=10) == 1
    finally:
        for p in (watched, worker):
            if p.poll() is None:
                p.kill()
                p.wait()


# -- decoder cost: no fewer lanes than the encoder uses (issue 22, class 1, in part) ----------------

def test_rans_params_with_too_few_lanes_are_refused_before_decoding():
    from quantcli.codecs import CODECS, CodecError
    codec = CODECS["rans"]
    codes = np.random.default_rng(0).integers(0, 16, 70000).astype(np.uint8)
    data, params = codec.encode(codes, alphabet=16)
    assert params["lanes"] == 3 and np.array_equal(codec.decode(data, params, np.uint8, codes.shape), codes)
    with pytest.raises(CodecError, match="1 lanes for 70000 codes: at most 32768 codes go in a lane"):
        codec.max_decoded_nbytes({**params, "lanes": 1}, codes.shape)


def test_crans_stream_with_too_few_lanes_is_refused_before_decoding():
    from quantcli.codecs import CODECS, CodecError, context
    codec = CODECS["crans"]
    codes = np.random.default_rng(0).integers(0, 5, (300, 1000)).astype(np.uint8)
    data, params = codec.encode(codes, alphabet=5)
    buf = np.frombuffer(data, np.uint8)
    lanes, pos = context.parse_header(buf)[3], context.parse_header(buf)[5]
    assert lanes == 8 and np.array_equal(codec.decode(data, params, np.uint8, codes.shape), codes)
    forged = bytearray(data)
    at = bytes(forged[:pos]).rindex(bytes([8]))  # the lanes varint, one byte before the table's length
    forged[at] = 2  # two lanes for 300,000 codes: the second half of the words would be read as lane states
    with pytest.raises(CodecError, match="2 lanes for 300000 codes: at most 131072 codes go in a lane"):
        codec.decode(bytes(forged), params, np.uint8, codes.shape)
