"""The cost promise (docs/SECURITY.md, "Decode cost"): decoding time and peak memory are linear in
the bytes read and written, with a small constant, whatever a stream declares. Forged, re-signed
streams of every codec (rans, crans, lossless planes) are decoded in-process and the run's peak
resident set is measured (/proc/self/status VmHWM, reset before each run); the bounds are the
fuzzer's (`fuzzing.cost_problem`: 24 MB + 64 bytes per byte read or written, 5 s + 1 us per byte),
generous so that only a decoder that trusts a stream's sizes can break them."""

from __future__ import annotations

import os

import numpy as np
import pytest

import fuzzing as fz
from fuzzing import cli
from quantcli import Spec, quantize_file
from quantcli.codecs import context

SHAPE = (256, 256)  # 65,536 values: an output of 256 kB, so a table of 64 x 65,536 entries is 300x it


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    folder = tmp_path_factory.mktemp("forged")
    rng = np.random.default_rng(12)
    w = (rng.standard_normal(SHAPE) * 0.05).astype(np.float32)
    w[:, :8] *= 20
    src = str(folder / "w.npy")
    np.save(src, w)
    out = {}
    for name, spec in {"crans": Spec(method="ecsq", step=0.01), "rans": Spec(bits=8, codec="entropy"),
                       "lossless": Spec(method="lossless")}.items():
        out[name] = str(folder / f"{name}.qnt.safetensors")
        quantize_file([src], out[name], spec)
        codecs = fz._manifest(fz.Seed(name, "archive", "", open(out[name], "rb").read(), []))["tensors"][0]["codecs"]
        assert name in {c["codec"] for c in codecs.values()} | {"lossless" if name == "lossless" else ""}
    for path in out.values():  # every kernel loaded once (numba's cache), before anything is measured
        assert cli("dequantize", path, "-o", str(folder / "warm.npy"), "-q").exit_code == 0
    return out


def _decode(path: str, folder) -> tuple[fz.Run, int]:
    """dequantize in-process: the run (exit status, stderr, seconds, peak RSS rise) and the bytes it
    read and wrote."""
    out = os.path.join(folder, "out.npy")
    run = cli("dequantize", path, "-o", out, "-q")
    written = os.path.getsize(out) if run.exit_code == 0 else 0
    if os.path.exists(out):
        os.unlink(out)
    return run, os.path.getsize(path) + 4 * SHAPE[0] * SHAPE[1] + written


def _assert_bounded(run: fz.Run, nbytes: int) -> None:
    assert run.exit_code in (0, 2) and not run.crash, (run.exit_code, run.crash, run.stderr)
    if run.exit_code == 2:
        fz.one_error(run, "tensor 'w'")
    if run.rss_rise is None:
        pytest.skip("this kernel does not let a process reset its peak RSS (/proc/self/clear_refs)")
    assert not fz.cost_problem(run, nbytes), fz.cost_problem(run, nbytes)


def _forge(path: str, dst: str, change) -> str:
    def edit(manifest, arrays, meta):
        t = manifest["tensors"][0]
        role = sorted(t["codecs"])[0] if "codes" not in t["codecs"] else "codes"
        change(t["codecs"][role], arrays, t["arrays"][role])
    return fz.resign_file(path, dst, edit)


def test_honest_archives_are_within_the_bounds(archives, tmp_path):
    for path in archives.values():
        run, nbytes = _decode(path, tmp_path)
        assert run.exit_code == 0
        _assert_bounded(run, nbytes)


def _rans_one_lane(record, arrays, stored):
    record["lanes"] = 1


def _rans_wide_alphabet(record, arrays, stored):
    record["alphabet"] = 1 << 16


def _rans_garbage(record, arrays, stored):
    arrays[stored][record["table_nbytes"]:] = 0xA5


def _crans_one_lane(record, arrays, stored):
    a = arrays[stored]
    (_, _), pos = context._varints(a, 4, 2)
    (_,), end = context._varints(a, pos, 1)
    arrays[stored] = np.concatenate([a[:pos], np.frombuffer(context._uleb(1), np.uint8), a[end:]])
    record["nbytes"] = int(arrays[stored].size)


def _crans_garbage(record, arrays, stored):
    a = arrays[stored]
    a[len(a) // 2:] = 0x5A


def _lossless_plane(record, arrays, stored):
    plane = record["planes"][0]
    plane["nbytes"] = plane["nbytes"] + 8 if plane["codec"] == "raw" else plane["nbytes"]
    plane["codec"] = "zstd" if plane["codec"] != "zstd" else "raw"


def _lossless_lanes(record, arrays, stored):
    for plane in record["planes"]:
        if "lanes" in plane:
            plane["lanes"] = 1


@pytest.mark.parametrize("codec, change", [
    ("rans", _rans_one_lane), ("rans", _rans_wide_alphabet), ("rans", _rans_garbage),
    ("crans", _crans_one_lane), ("crans", _crans_garbage),
    ("lossless", _lossless_plane), ("lossless", _lossless_lanes),
])
def test_forged_streams_stay_within_the_bounds(archives, tmp_path, codec, change):
    """Each forgery is refused in one line naming the tensor (or decodes), and costs no more than the
    bounds allow for the bytes involved."""
    forged = _forge(archives[codec], str(tmp_path / "forged.qnt.safetensors"), change)
    _assert_bounded(*_decode(forged, tmp_path))


def crans_wide_tables(codes: int) -> bytes:
    """A crans stream of a few hundred bytes whose header declares 64 contexts (DQ split, 32 buckets)
    of a 65,536-symbol alphabet, each table holding two symbols at the lowest precision: the tables
    the decoder allocates (contexts x alphabet) are then 64 n entries for n codes, whatever the bytes."""
    tables = context._tables_bytes([(6, np.array([32, 32] + [0] * ((1 << 16) - 2)))] * 64)
    lanes = 1
    words = -(-codes // 1410) + 1
    return (bytes([1, 0, 32, 0]) + context._uleb((1 << 16) - 1) + context._uleb(0) + context._uleb(lanes)
            + context._uleb(len(tables)) + tables + (1 << 40).to_bytes(8, "little") + bytes(4 * words))


def test_crans_tables_of_a_wide_alphabet_stay_within_the_bounds(archives, tmp_path):
    """The red team's class: a stream of a few hundred bytes that makes the decoder allocate tables
    of 64 x 65,536 entries for a 256 kB output."""
    def change(record, arrays, stored):
        data = crans_wide_tables(SHAPE[0] * SHAPE[1])
        arrays[stored] = np.frombuffer(data, np.uint8).copy()
        record["nbytes"] = len(data)

    forged = _forge(archives["crans"], str(tmp_path / "forged.qnt.safetensors"), change)
    _assert_bounded(*_decode(forged, tmp_path))


def test_the_cost_oracle_sees_a_peak(tmp_path):
    """The measurement itself: a run that allocates and touches 64 MB is reported, a small one is not."""
    big = fz.Run(0, "", "", seconds=0.1, rss_rise=64 << 20)
    assert "peak RSS rose 64.0 MB" in fz.cost_problem(big, 1000)
    assert fz.cost_problem(fz.Run(0, "", "", seconds=0.1, rss_rise=1 << 20), 1000) == ""
    assert "took 9.0 s" in fz.cost_problem(fz.Run(0, "", "", seconds=9.0, rss_rise=0), 1000)
    if fz._reset_hwm() is None:
        pytest.skip("no /proc/self/clear_refs here")
    before = fz._hwm()
    block = np.ones(48 << 20, np.uint8)  # touched: resident
    assert fz._hwm() - before >= 40 << 20 and block.sum() == 48 << 20
