import json
import os

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from quantcli import ArchiveError, Spec, open_archive, quantize_file
from quantcli.archive.container import ArchiveWriter, Archive, KEY_MANIFEST, KEY_MANIFEST_SHA
from quantcli.archive.storage import store
from quantcli.methods import KEEP, get_method
from quantcli.io.safetensors import SafetensorsFile, header_bytes


def write(path, tensors, spec=Spec()):
    w = ArchiveWriter(str(path))
    for name, x in tensors.items():
        method = get_method(KEEP if x.ndim < 2 or x.dtype.kind != "f" else spec.method)
        enc = method.encode(x if method.kept else x.astype(np.float32), spec)
        w.add(name, {"f": "F32", "i": "I64"}.get(x.dtype.kind, "F32"), x.shape, enc.method, enc.params,
              store(enc, x.shape))
    return w.finish()


@given(x=hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=3, max_side=6),
                    elements=st.floats(-10, 10, width=32)),
       bias=hnp.arrays(np.float32, st.integers(0, 5), elements=st.floats(-1, 1, width=32)),
       bits=st.integers(2, 8))
def test_write_read_identity(tmp_path_factory, x, bias, bits):
    path = tmp_path_factory.mktemp("a") / "a.qnt.safetensors"
    spec = Spec(bits=bits, granularity="group", group_size=4)
    size = write(path, {"w": x, "b": bias}, spec)
    assert size == os.path.getsize(path)
    enc = get_method("uniform").encode(x, spec)
    with Archive(str(path)) as a:
        assert [t.name for t in a.tensors] == ["w", "b"]
        back = a.encoding(a.by_name["w"])
        assert back.params == enc.params
        for role in enc.arrays:
            np.testing.assert_array_equal(back.arrays[role], enc.arrays[role])
            assert back.arrays[role].dtype == enc.arrays[role].dtype
        np.testing.assert_array_equal(a.decode(a.by_name["b"]), bias)
        np.testing.assert_array_equal(a.decode(a.by_name["w"]), get_method("uniform").decode(enc, x.shape))


def test_byte_identical_on_rerun(tiny_model, tmp_path):
    spec = Spec(bits=4, scheme="asymmetric", granularity="group", group_size=16)
    a, b = tmp_path / "a.qnt.safetensors", tmp_path / "b.qnt.safetensors"
    quantize_file([tiny_model], str(a), spec)
    quantize_file([tiny_model], str(b), spec)
    assert a.read_bytes() == b.read_bytes()


def test_readable_by_safetensors_library(tiny_model, tmp_path):
    from safetensors import safe_open
    out = tmp_path / "m.qnt.safetensors"
    quantize_file([tiny_model], str(out), Spec(bits=4, granularity="group", group_size=8))
    with safe_open(str(out), framework="numpy") as f:
        keys = set(f.keys())
        assert "encoder.layer.0.attention.self.query.weight/codes" in keys
        assert "embeddings.LayerNorm.weight" in keys  # kept tensors keep their names
        assert f.metadata()["quant.format"] == "quant-archive"


def _rewrite_manifest(path, edit):
    """Rewrite an archive's manifest through `edit(doc)`, re-signing it so only `edit` is wrong."""
    with SafetensorsFile(str(path)) as st:
        arrays = {n: st.read(n) for n in st.entries}
        meta = dict(st.metadata)
        entries = sorted(st.entries.values(), key=lambda e: e.start)
    doc = json.loads(meta[KEY_MANIFEST])
    edit(doc)
    meta[KEY_MANIFEST] = json.dumps(doc)
    import hashlib
    meta[KEY_MANIFEST_SHA] = hashlib.sha256(meta[KEY_MANIFEST].encode()).hexdigest()
    head = header_bytes([(e.name, e.dtype, e.shape, e.nbytes) for e in entries], meta)
    with open(path, "wb") as f:
        f.write(head)
        for e in entries:
            f.write(arrays[e.name].tobytes())


@pytest.fixture
def archive_path(tiny_model, tmp_path):
    out = tmp_path / "m.qnt.safetensors"
    quantize_file([tiny_model], str(out), Spec(bits=4, scheme="asymmetric", granularity="group", group_size=8))
    return out


def first_quantized(doc):
    return next(t for t in doc["tensors"] if t["method"] != "keep")


@pytest.mark.parametrize("edit, message", [
    (lambda d: first_quantized(d).update(method="zstd9"), "unknown method 'zstd9'"),
    (lambda d: first_quantized(d)["params"].update(bits=3), "codes array is U8"),
    (lambda d: first_quantized(d)["params"].update(bits=99), "outside 2..8"),
    (lambda d: first_quantized(d)["params"].update(scheme="weird"), "not one of"),
    (lambda d: first_quantized(d)["params"].pop("group_size"), "missing param 'group_size'"),
    (lambda d: first_quantized(d).update(shape=[7, 7]), "expected"),
    (lambda d: first_quantized(d).update(dtype="Q4"), "unknown dtype"),
    (lambda d: d["tensors"].pop(), "belongs to no tensor"),
    (lambda d: d["tensors"].append(d["tensors"][0]), "listed twice"),
    (lambda d: d.pop("tensors"), "no tensor list"),
])
def test_reader_rejects_inconsistent_manifest(archive_path, edit, message):
    _rewrite_manifest(archive_path, edit)
    with pytest.raises(ArchiveError, match=message):
        open_archive(str(archive_path))


def test_future_version_refused(archive_path):
    data = archive_path.read_bytes().replace(b'"quant.version":"1"', b'"quant.version":"7"')
    archive_path.write_bytes(data)
    with pytest.raises(ArchiveError, match="version '7' is not supported"):
        open_archive(str(archive_path))


def test_manifest_tampering_detected(archive_path):
    data = archive_path.read_bytes()
    archive_path.write_bytes(data.replace(b"asymmetric", b"asymmetriC", 1))
    with pytest.raises(ArchiveError, match="manifest does not match its checksum"):
        open_archive(str(archive_path))


def test_flipped_bit_in_codes_detected(archive_path):
    with SafetensorsFile(str(archive_path)) as st:
        entry = next(e for e in st.entries.values() if e.name.endswith("/codes"))
    data = bytearray(archive_path.read_bytes())
    data[entry.start] ^= 0x10
    archive_path.write_bytes(bytes(data))
    with open_archive(str(archive_path)) as a:
        name = entry.name.rsplit("/", 1)[0]
        assert a.verify() == [name]
        with pytest.raises(ArchiveError, match="do not match their checksum"):
            a.decode(a.by_name[name])


def test_plain_safetensors_is_not_an_archive(tiny_model):
    with pytest.raises(ArchiveError, match="not a quant archive"):
        open_archive(tiny_model)


def test_checksum_is_over_stored_bytes_and_reading_gives_logical_codes(tmp_path):
    from quantcli.archive.container import tensor_digest
    x = np.random.default_rng(2).standard_normal((6, 10)).astype(np.float32)
    spec = Spec(bits=3, scheme="asymmetric", granularity="group", group_size=4)
    enc = get_method("uniform").encode(x, spec)
    path = tmp_path / "a.qnt.safetensors"
    write(path, {"w": x}, spec)
    stored, _ = store(enc, x.shape)
    assert stored["codes"].shape == (-(-60 * 3 // 8),) and enc.arrays["codes"].shape == (6, 10)
    with Archive(str(path)) as a:
        t = a.by_name["w"]
        assert t.sha256 == tensor_digest(stored).hexdigest()
        assert a.file.read(t.arrays["codes"]).tobytes() == stored["codes"].tobytes()
        back = a.encoding(t)
        np.testing.assert_array_equal(back.arrays["codes"], enc.arrays["codes"])
        assert back.arrays["codes"].dtype == np.uint8 and int(back.arrays["codes"].max()) < 8
