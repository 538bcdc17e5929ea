"""One regression test per validation gap the audit and the fuzzer found (docs/SECURITY.md)."""

from __future__ import annotations

import io
import json
import os
import tracemalloc
import zipfile

import numpy as np
import pytest

import fuzzing as fz
from fuzzing import cli, one_error
from quantcli import ArchiveError, InputError, open_archive
from quantcli.io.safetensors import MAX_ELEMENTS, MAX_NDIM, SafetensorsFile
from quantcli.io.sources import Sources


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return fz.build_seeds(str(tmp_path_factory.mktemp("seeds")))






def st_file(path, header: dict, body: bytes = b"") -> str:
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + body)
    return str(path)


def npy_file(path, shape: str, descr: str = "<f4", body: bytes = b"\0" * 64) -> str:
    h = ("{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)).encode()
    h += b" " * (-(10 + len(h) + 1) % 64) + b"\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h + body)
    return str(path)


# -- safetensors reader -------------------------------------------------------------------------

@pytest.mark.parametrize("shape, message", [
    ([1] * (MAX_NDIM + 1), f"more than {MAX_NDIM}"),
    ([0, 2**64], "too large"),          # numpy would refuse even an empty array of these dims
    ([0, 2**40, 2**40], "too large"),
    ([2**31, 2**31, 2**31], "too large"),  # product beyond int64: never wraps to a small size
    ([-1, 4], "malformed shape"),
    ([True, 4], "malformed shape"),
])
def test_safetensors_shapes_out_of_range(tmp_path, shape, message):
    path = st_file(tmp_path / "x.safetensors", {"a": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}})
    with pytest.raises(InputError, match=message):
        SafetensorsFile(path)
    one_error(cli("inspect", path), "tensor 'a'", message)


def test_safetensors_limits_accept_the_largest_legal_empty_shape(tmp_path):
    path = st_file(tmp_path / "x.safetensors", {"a": {"dtype": "U8", "shape": [0, MAX_ELEMENTS],
                                                     "data_offsets": [0, 0]}})
    with SafetensorsFile(path) as st:
        assert st.read("a").shape == (0, MAX_ELEMENTS)


@pytest.mark.parametrize("dtype", [["F32"], {"x": 1}, 7, None])
def test_safetensors_non_string_dtype(tmp_path, dtype):
    path = st_file(tmp_path / "x.safetensors", {"a": {"dtype": dtype, "shape": [1], "data_offsets": [0, 4]}},
                   b"\0" * 4)
    one_error(cli("inspect", path), "unsupported dtype")


def test_safetensors_header_nested_too_deeply(tmp_path):
    path = tmp_path / "x.safetensors"
    text = b'{"a":' + b"[" * 100000 + b"]" * 100000 + b"}"
    path.write_bytes(len(text).to_bytes(8, "little") + text)
    one_error(cli("inspect", path), "nested too deeply")
    one_error(cli("quantize", path, "-o", tmp_path / "o.qnt.safetensors"), "nested too deeply")
    assert sorted(os.listdir(tmp_path)) == ["x.safetensors"]


def test_index_nested_too_deeply(tmp_path):
    path = tmp_path / "model.safetensors.index.json"
    path.write_text("[" * 100000 + "]" * 100000)
    one_error(cli("quantize", path, "-o", tmp_path / "o.qnt.safetensors"), "cannot read index", "nested")


# -- .npy / .npz ---------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, message", [
    ("(-4,)", "malformed shape"),
    ("(4294967296, 4294967296, 4)", "too large"),   # wrapped to 0 in int64 before the fix
    ("(0, 9223372036854775807)", "too large"),
    ("(True, 4)", "malformed shape"),
])
def test_npy_shapes_out_of_range(tmp_path, shape, message):
    path = npy_file(tmp_path / "x.npy", shape)
    one_error(cli("inspect", path), message)
    one_error(cli("quantize", path, "-o", tmp_path / "o.qnt.safetensors"), message)


def _zip(path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> str:
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return str(path)


def test_npz_member_declaring_more_than_it_holds_is_refused_before_allocating(tmp_path):
    """A 40 GB shape in a 200-byte member: refused from the zip directory, nothing allocated."""
    member = open(npy_file(tmp_path / "m.npy", "(100000, 100000)"), "rb").read()
    path = _zip(tmp_path / "x.npz", {"a.npy": member})
    tracemalloc.start()
    with pytest.raises(InputError, match="its .npy header needs 40000000128"):
        Sources([path])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 10 * 1024 * 1024
    one_error(cli("quantize", path, "-o", tmp_path / "o.qnt.safetensors"), "tensor 'a'")


def _patch_central(path, csize=None, usize=None):
    data = bytearray(open(path, "rb").read())
    cd = data.rfind(b"PK\x01\x02")
    if csize is not None:
        data[cd + 20:cd + 24] = csize.to_bytes(4, "little")
    if usize is not None:
        data[cd + 24:cd + 28] = usize.to_bytes(4, "little")
    open(path, "wb").write(bytes(data))


def test_npz_zip_bomb_ratio_is_refused(tmp_path):
    """A deflated member whose header and directory agree on 400 MB, from ~100 compressed bytes:
    beyond what deflate can expand to, so it is refused before anything is inflated."""
    member = open(npy_file(tmp_path / "m.npy", "(100000000,)"), "rb").read()
    path = _zip(tmp_path / "x.npz", {"a.npy": member}, zipfile.ZIP_DEFLATED)
    _patch_central(path, usize=128 + 400_000_000)
    one_error(cli("inspect", path), "tensor 'a'", "zip bomb")


def test_npz_member_claiming_more_compressed_bytes_than_the_file(tmp_path):
    member = open(npy_file(tmp_path / "m.npy", "(16,)"), "rb").read()
    path = _zip(tmp_path / "x.npz", {"a.npy": member})
    _patch_central(path, csize=2**31)
    one_error(cli("inspect", path), "tensor 'a'", "more than the file holds")


def test_npz_with_data_before_the_zip_and_unknown_compression(tmp_path):
    buf = io.BytesIO()
    np.savez(buf, w=np.ones((2, 2), np.float32))
    prefixed = tmp_path / "p.npz"
    prefixed.write_bytes(b"junk" + buf.getvalue())
    one_error(cli("inspect", prefixed), "does not start with a zip header")
    data = bytearray(buf.getvalue())
    for sig, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):  # compression method in both headers
        at = data.find(sig)
        data[at + offset:at + offset + 2] = (99).to_bytes(2, "little")
    odd = tmp_path / "c.npz"
    odd.write_bytes(bytes(data))
    one_error(cli("inspect", odd), "tensor 'w'")


# -- archives (edits re-signed with honest checksums, so only validation can catch them) -----------

def resigned(seed, tmp_path, edit, name="a.qnt.safetensors"):
    path = tmp_path / name
    path.write_bytes(fz._resign(seed, edit))
    return str(path)


def _t(m, name="w"):
    return next(t for t in m["tensors"] if t["name"] == name)


def test_archive_shape_that_wraps_int64_is_refused(seeds, tmp_path):
    def edit(m, arrays, meta):
        _t(m)["shape"] = [2**32, 2**32, 4]  # np.prod(..., int64) == 0: it used to match empty codes
    path = resigned(seeds["archive-int3-sym-tensor"], tmp_path, edit)
    with pytest.raises(ArchiveError, match="too large"):
        open_archive(path)


def test_archive_huge_group_size_decodes_without_a_huge_buffer(seeds, tmp_path):
    """group_size 10^12 on 12-wide rows is legal (one group per row) and must not pad to 10^12."""
    from quantcli.methods import get_method
    seed = seeds["archive-int4-asym-group"]

    def edit(m, arrays, meta):
        t = _t(m)
        t["params"]["group_size"] = 10**12
        for role in ("scale", "zero"):
            arrays[t["arrays"][role]] = np.ascontiguousarray(arrays[t["arrays"][role]][:, :1])
    path = resigned(seed, tmp_path, edit)
    with open_archive(path) as a:
        t = a.by_name["w"]
        enc = a.encoding(t)
        tracemalloc.start()
        values = a.decode(t)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert values.shape == (6, 12) and peak < 1024 * 1024
    params = dict(enc.params, group_size=12)
    np.testing.assert_array_equal(values, get_method("uniform").decode(
        type(enc)("uniform", params, enc.arrays), (6, 12)))


@pytest.mark.parametrize("seed_name, role, value, message", [
    ("archive-int8-sym-channel", "codes", 255, "code 255 is outside the symmetric 8-bit range 0..254"),
    ("archive-int4-asym-group", "zero", 16, "zero point 16 is outside the 4-bit range 0..15"),
    ("archive-int4-asym-group", "scale", np.nan, "negative or non-finite scale"),
    ("archive-int8-sym-channel", "scale", -1.0, "negative or non-finite scale"),
])
def test_stored_values_out_of_range_are_refused_on_decode(seeds, tmp_path, seed_name, role, value, message):
    def edit(m, arrays, meta):
        arrays[_t(m)["arrays"][role]].reshape(-1)[0] = value
    path = resigned(seeds[seed_name], tmp_path, edit)
    one_error(cli("verify", path), "tensor 'w'", message)  # honest checksums: verify decodes, as dequantize
    one_error(cli("dequantize", path, "-o", tmp_path / "o.safetensors"), "tensor 'w'", message)
    assert not (tmp_path / "o.safetensors").exists()


@pytest.mark.parametrize("field, value, message", [
    ("metrics", {"mse": "abc"}, "malformed metric 'mse'"),
    ("metrics", {"sqnr_db": [1]}, "malformed metric 'sqnr_db'"),
    ("dtype", "I64", "needs a float original dtype"),
    ("dtype", ["F32"], "unknown dtype"),
    ("method", ["uniform"], "unknown method"),
])
def test_manifest_fields_out_of_range(seeds, tmp_path, field, value, message):
    def edit(m, arrays, meta):
        _t(m)[field] = value
    path = resigned(seeds["archive-int8-sym-channel"], tmp_path, edit)
    for command in ("inspect", "verify"):
        one_error(cli(command, path), "tensor 'w'", message)


@pytest.mark.parametrize("version", ["\u0661", "01", " 1", "1.0"])
def test_version_must_be_exactly_a_supported_one(seeds, tmp_path, version):
    def edit(m, arrays, meta):
        meta["quant.version"] = version
    path = resigned(seeds["archive-fp16"], tmp_path, edit)
    one_error(cli("verify", path), f"archive format version {version!r} is not supported")


def test_manifest_nested_too_deeply(seeds, tmp_path):
    label, data, expect = fz.manifest_edit(seeds["archive-fp16"], _Fixed("deep-manifest"))
    assert (label, expect) == ("resigned-deep-manifest", "reject-all")
    path = tmp_path / "a.qnt.safetensors"
    path.write_bytes(data)
    one_error(cli("verify", path), "nested too deeply")


class _Fixed(fz.Chooser):
    """Chooses `kind` where a list of mutation kinds is offered, the first item elsewhere."""

    def __init__(self, kind):
        self.kind = kind

    def int(self, lo, hi):
        return lo

    def choice(self, items):
        return self.kind if self.kind in items else items[0]
