"""quant verify: exit 0 when the manifest and every tensor checksum match, 2 naming file and tensor."""

from __future__ import annotations

import json

import numpy as np
import pytest

import fuzzing as fz
from quantcli import Spec, VerifyReport, quantize_file, verify_archive
from quantcli.io.safetensors import SafetensorsFile


@pytest.fixture
def archive(tiny_model, tmp_path):
    out = tmp_path / "m.qnt.safetensors"
    quantize_file([tiny_model], str(out), Spec(bits=4, scheme="asymmetric", granularity="group", group_size=16))
    return out


def flip(path, stored: str, byte: int = 0, bit: int = 0):
    with SafetensorsFile(str(path)) as st:
        at = st.entries[stored].start + byte
    data = bytearray(path.read_bytes())
    data[at] ^= 1 << bit
    path.write_bytes(bytes(data))


def test_verify_ok(archive):
    r = verify_archive(str(archive))
    assert isinstance(r, VerifyReport) and r.ok and r.corrupt == []
    assert r.tensors > 5 and r.file_bytes == archive.stat().st_size and 0 < r.stored_bytes < r.file_bytes
    run = fz.invoke(["verify", str(archive)])
    assert run.exit_code == 0 and run.stderr == ""
    assert run.stdout == f"{archive}: ok, {r.tensors} tensors, {r.file_bytes} bytes, checksums match\n"


def test_verify_names_the_corrupt_tensor_and_dequantize_refuses_it(archive, tmp_path):
    name = "encoder.layer.0.attention.self.query.weight"
    flip(archive, f"{name}/codes", byte=5, bit=3)
    assert verify_archive(str(archive)).corrupt == [name]
    run = fz.invoke(["verify", str(archive)])
    assert run.exit_code == 2 and run.stdout == ""
    assert run.stderr == (f"quant: error: {archive}: tensor {name!r}: corrupt: stored bytes do not match "
                          "their checksum\n")
    out = tmp_path / "back.safetensors"
    run = fz.invoke(["dequantize", str(archive), "-o", str(out)])
    assert run.exit_code == 2 and f"tensor {name!r}: corrupt" in run.stderr and not out.exists()


def test_verify_several_archives_and_json(archive, tmp_path):
    good = tmp_path / "good.qnt.safetensors"
    good.write_bytes(archive.read_bytes())
    flip(archive, "encoder.layer.0.output.dense.weight/scale")
    flip(archive, "embeddings.LayerNorm.weight")  # a kept tensor: stored under its own name
    missing = tmp_path / "nope.qnt.safetensors"
    run = fz.invoke(["verify", str(good), str(archive), str(missing), "--json"])
    assert run.exit_code == 2
    doc = json.loads(run.stdout)
    assert doc["ok"] is False
    assert [a["ok"] for a in doc["archives"]] == [True, False, False]
    assert sorted(doc["archives"][1]["corrupt"]) == ["embeddings.LayerNorm.weight",
                                                    "encoder.layer.0.output.dense.weight"]
    assert doc["archives"][2]["error"] == "no such file"
    lines = run.stderr.splitlines()
    assert len(lines) == 2 and "(and 1 more)" in lines[0] and lines[1] == f"quant: error: {missing}: no such file"


def test_verify_refuses_a_manifest_edit_and_a_plain_weights_file(archive, tiny_model):
    data = bytearray(archive.read_bytes())
    at = data.find(b"sqnr_db")
    data[at] ^= 0x20  # "Sqnr_db": the manifest no longer matches its checksum
    archive.write_bytes(bytes(data))
    run = fz.invoke(["verify", str(archive)])
    assert run.exit_code == 2 and run.stderr.endswith("corrupt: the manifest does not match its checksum\n")
    run = fz.invoke(["verify", tiny_model])
    assert run.exit_code == 2 and "not a quant archive" in run.stderr


def test_verify_help_has_an_example():
    run = fz.invoke(["verify", "--help"])
    assert run.exit_code == 0 and "Example:" in run.stdout


def test_every_byte_of_every_stored_array_is_covered(tmp_path):
    """Exhaustive on a small archive: each byte of each stored array, one bit each (cycling)."""
    src = tmp_path / "w.npy"
    np.save(src, np.random.default_rng(1).standard_normal((4, 10)).astype(np.float32))
    out = tmp_path / "w.qnt.safetensors"
    quantize_file([str(src)], str(out), Spec(bits=3, scheme="asymmetric", granularity="group", group_size=4))
    original = out.read_bytes()
    with SafetensorsFile(str(out)) as st:
        spans = [(e.start, e.end) for e in st.entries.values()]
    checked = 0
    for start, end in spans:
        for at in range(start, end):
            data = bytearray(original)
            data[at] ^= 1 << (at % 8)
            out.write_bytes(bytes(data))
            assert verify_archive(str(out)).corrupt == ["w"], at
            checked += 1
    assert checked == sum(e - s for s, e in spans) > 20


@pytest.mark.parametrize("spec", [Spec(method="bf16"), Spec(bits=4, scheme="asymmetric", granularity="group",
                                                             group_size=64)])
def test_float16_at_its_largest_value_decodes_within_float16(tmp_path, spec):
    """A float16 tensor at 65504 decodes (quantization error) past 65504; in its own dtype it
    saturates at 65504 instead of being refused, so verify and dequantize agree."""
    import quantcli
    from quantcli.api import dequantize_file
    from quantcli.io.safetensors import header_bytes

    h = np.full((4, 64), 65504, np.float16)
    src = tmp_path / "h.safetensors"
    src.write_bytes(header_bytes([("h", "F16", h.shape, h.nbytes)], {"format": "pt"}) + h.tobytes())
    arch = str(tmp_path / "h.qnt.safetensors")
    quantize_file([str(src)], arch, spec)
    assert verify_archive(arch).ok
    back = quantcli.load(arch)["h"]
    assert back.dtype == np.float16 and np.all(back == h)
    dequantize_file(arch, str(tmp_path / "back.safetensors"))
    with SafetensorsFile(str(tmp_path / "back.safetensors")) as f:
        assert np.all(f.read("h") == h)
