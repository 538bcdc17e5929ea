"""--method lossless gives the input FILE back byte for byte (issue 22): the safetensors header as
it was (key order, metadata, padding), the .npy header, byte order and Fortran order; the report
says so; dequantize checks the recorded sha256 and refuses (exit 2, nothing left) when a forged
record would give other bytes. Outputs of another kind stay tensor outputs."""

from __future__ import annotations

import base64
import hashlib
import json
import os

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file

import fuzzing as fz
from fuzzing import cli, one_error
from quantcli.archive.container import KEY_MANIFEST

BF16 = np.dtype(ml_dtypes.bfloat16)
PREVIOUS = b"an older output that a refused run must leave as it is\n"


def ok(run):
    assert run.exit_code == 0 and not run.crash and not run.stderr, (run.exit_code, run.crash, run.stderr)
    return run


def unsorted_safetensors(path, pad: int = 16) -> bytes:
    """A file no writer of ours would make: keys out of order, metadata first and unsorted, data
    not in key order, extra padding; float32, bfloat16, float16 and a kept int64 and 0-d tensor."""
    rng = np.random.default_rng(3)
    arrays = [("zeta.weight", rng.standard_normal((8, 16)).astype(np.float32)),
              ("alpha.bias", rng.standard_normal(16).astype(BF16)),
              ("mid.ids", np.arange(5, dtype=np.int64)),
              ("b.weight", rng.standard_normal((4, 6)).astype(np.float16)),
              ("a.scale", np.asarray(0.25, dtype=np.float32))]
    header: dict = {"__metadata__": {"format": "pt", "z-key": "last", "a-key": "first"}}
    pos = 0
    for name, a in arrays:
        header[name] = {"dtype": {np.dtype(np.float32): "F32", BF16: "BF16", np.dtype(np.int64): "I64",
                                  np.dtype(np.float16): "F16"}[a.dtype], "shape": list(a.shape),
                        "data_offsets": [pos, pos + a.nbytes]}
        pos += a.nbytes
    text = json.dumps(header, indent=1).encode()
    text += b" " * (-(len(text) + 8) % 8 + pad)
    data = len(text).to_bytes(8, "little") + text + b"".join(a.tobytes() for _, a in arrays)
    with open(path, "wb") as f:
        f.write(data)
    return data


def lossless(src, out, *extra):
    run = ok(cli("quantize", src, "-o", out, "--method", "lossless", "--include-1d", "--json", *extra))
    return json.loads(run.stdout)


def test_safetensors_comes_back_byte_for_byte_and_the_report_says_so(tmp_path):
    src, arc, back = tmp_path / "m.safetensors", tmp_path / "m.qnt.safetensors", tmp_path / "back.safetensors"
    data = unsorted_safetensors(src)
    doc = lossless(src, arc)
    assert doc["restores_file"] == {"format": "safetensors", "sha256": hashlib.sha256(data).hexdigest()}
    text = ok(cli("quantize", src, "-o", tmp_path / "again.qnt.safetensors", "--method", "lossless")).stdout
    assert "gives the input file back byte for byte" in text
    run = ok(cli("dequantize", arc, "-o", back, "--json"))
    assert back.read_bytes() == data
    assert json.loads(run.stdout)["restored_sha256"] == hashlib.sha256(data).hexdigest()
    assert "byte for byte" in ok(cli("dequantize", arc, "-o", tmp_path / "b2.safetensors")).stdout
    assert "checksums match" in ok(cli("verify", arc)).stdout


@pytest.mark.parametrize("dtype", ["<f4", ">f4", "<f8", "<f2"])
@pytest.mark.parametrize("fortran", [False, True])
def test_npy_comes_back_byte_for_byte(tmp_path, dtype, fortran):
    """The .npy header, byte order and Fortran order as they were (the reader makes the values
    little-endian and C-ordered; the restore turns them back)."""
    a = np.random.default_rng(4).standard_normal((5, 7, 3)).astype(dtype)
    a = np.asfortranarray(a) if fortran else a
    src, arc, back = tmp_path / "w.npy", tmp_path / "w.qnt.safetensors", tmp_path / "back.npy"
    np.save(src, a)
    data = src.read_bytes()
    assert lossless(src, arc)["restores_file"]["format"] == "npy"
    ok(cli("dequantize", arc, "-o", back))
    assert back.read_bytes() == data
    ok(cli("verify", arc))


def test_other_outputs_are_tensor_outputs(tmp_path):
    """.npz, a folder, another format or another dtype: the tensors, exactly, as before."""
    src, arc = tmp_path / "m.safetensors", tmp_path / "m.qnt.safetensors"
    unsorted_safetensors(src)
    lossless(src, arc)
    want = load_file(str(src))
    for out, extra in (("t.npz", []), ("folder/", []), ("t.safetensors", ["--dtype", "float32"])):
        run = ok(cli("dequantize", arc, "-o", f"{tmp_path}/{out}", "--json", *extra))
        assert "restored_sha256" not in json.loads(run.stdout)
    with np.load(tmp_path / "t.npz") as z:
        assert all(np.array_equal(z[k], want[k].astype(np.float32) if want[k].dtype == BF16 else want[k])
                   for k in want)
    got = load_file(str(tmp_path / "folder" / "model.safetensors"))
    assert all(got[k].tobytes() == want[k].tobytes() and got[k].dtype == want[k].dtype for k in want)
    npy = tmp_path / "w.npy"
    np.save(npy, want["zeta.weight"])
    lossless(npy, tmp_path / "w.qnt.safetensors")
    ok(cli("dequantize", tmp_path / "w.qnt.safetensors", "-o", tmp_path / "w.safetensors"))
    assert load_file(str(tmp_path / "w.safetensors"))["w"].tobytes() == want["zeta.weight"].tobytes()


def test_no_record_when_the_file_cannot_come_back(tmp_path):
    """Two inputs, an .npz, a quantizing method, or a .npy with bytes after its data: no claim,
    and the archive is what it was before the record existed."""
    src = tmp_path / "m.safetensors"
    unsorted_safetensors(src)
    np.savez(tmp_path / "z.npz", w=np.ones((4, 4), np.float32))
    np.save(tmp_path / "w.npy", np.ones((4, 4), np.float32))
    tail = tmp_path / "tail.npy"
    tail.write_bytes((tmp_path / "w.npy").read_bytes() + b"junk")
    for inputs, method in (([src, tmp_path / "w.npy"], "lossless"), ([tmp_path / "z.npz"], "lossless"),
                           ([src], "uniform"), ([tail], "lossless")):
        out = tmp_path / "o.qnt.safetensors"
        doc = json.loads(ok(cli("quantize", *inputs, "-o", out, "--method", method, "--json")).stdout)
        assert "restores_file" not in doc
        manifest = fz.st_layout(out.read_bytes())[1]["__metadata__"][KEY_MANIFEST]
        assert '"original"' not in manifest


def _forge(arc, out, change):
    def edit(manifest, arrays, meta):
        change(manifest["original"])
    return fz.resign_file(str(arc), str(out), edit)


def _header_of(doc) -> bytes:
    return base64.b64decode(doc["header"])


def _set_header(doc, raw: bytes) -> None:
    doc["header"] = base64.b64encode(raw).decode()


def _with_metadata(doc):  # same length, other bytes: the file would differ, the structure holds
    raw = _header_of(doc)
    _set_header(doc, raw.replace(b'"first"', b'"FIRST"', 1))


def _lying_shape(doc):
    raw = _header_of(doc)
    _set_header(doc, raw.replace(b"16\n  ]", b"15\n  ]", 1))


def _lying_length(doc):
    doc["bytes"] += 8


def _not_base64(doc):
    doc["header"] = "%%%"


def _bad_sha(doc):
    doc["sha256"] = "0" * 64


@pytest.mark.parametrize("change, refused_by, message", [
    (_with_metadata, ("verify", "dequantize"), "differ from the original file's"),
    (_bad_sha, ("verify", "dequantize"), "differ from the original file's"),
    (_lying_shape, ("inspect", "verify", "dequantize"), "recorded header does not match"),
    (_lying_length, ("inspect", "verify", "dequantize"), "recorded header does not match"),
    (_not_base64, ("inspect", "verify", "dequantize"), "not base64"),
])
def test_a_forged_record_is_refused_and_leaves_nothing(tmp_path, change, refused_by, message):
    """Re-signed archives (every checksum honest) whose record lies: refused in one line naming the
    file, exit 2; the previous output is untouched and no temp file is left."""
    src, arc = tmp_path / "m.safetensors", tmp_path / "m.qnt.safetensors"
    unsorted_safetensors(src)
    lossless(src, arc)
    work = tmp_path / "work"
    work.mkdir()
    forged = _forge(arc, work / "f.qnt.safetensors", change)
    out = work / "out.safetensors"
    out.write_bytes(PREVIOUS)
    commands = {"inspect": ["inspect", forged], "verify": ["verify", forged], "dequantize": ["dequantize", forged,
                                                                                           "-o", out]}
    for name, args in commands.items():
        run = cli(*args)
        if name in refused_by:
            assert forged in one_error(run, message)
        else:
            ok(run)
        assert sorted(os.listdir(work)) == ["f.qnt.safetensors", "out.safetensors"]
        assert out.read_bytes() == PREVIOUS


def test_a_forged_npy_header_is_refused(tmp_path):
    """A recorded .npy header naming another dtype than the tensor's: refused on open."""
    np.save(tmp_path / "w.npy", np.ones((3, 4), np.float32))
    arc = tmp_path / "w.qnt.safetensors"
    lossless(tmp_path / "w.npy", arc)

    def to_f8(doc):
        raw = _header_of(doc)
        _set_header(doc, raw.replace(b"'<f4'", b"'<i4'"))

    forged = _forge(arc, tmp_path / "f.qnt.safetensors", to_f8)
    one_error(cli("dequantize", forged, "-o", tmp_path / "x.npy"), "it says I32[3, 4], the archive F32[3, 4]", forged)
    assert not (tmp_path / "x.npy").exists()
