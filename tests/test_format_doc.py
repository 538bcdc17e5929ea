"""Decode archives with numpy + json only, following docs/FORMAT.md, and compare with the library."""

import hashlib
import json

import numpy as np
import pytest

from quantcli import Spec, dequantize_file, open_archive, quantize_file

NP_DTYPES = {"F32": "<f4", "F16": "<f2", "U8": "u1", "I64": "<i8", "F64": "<f8"}


def read_container(path):
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    assert (8 + n) % 8 == 0
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__")
    base = 8 + n
    arrays = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        arrays[name] = np.frombuffer(raw[base + b:base + e], dtype=NP_DTYPES[info["dtype"]]).reshape(info["shape"])
        assert (base + b) % np.dtype(NP_DTYPES[info["dtype"]]).itemsize == 0  # aligned
    return meta, arrays


def unpack(codes, bits, n):
    stream = np.unpackbits(codes, bitorder="little")[: n * bits].reshape(n, bits)
    return stream.astype(np.int64) @ (1 << np.arange(bits))


def decode_by_hand(entry, arrays):
    shape = entry["shape"]
    if entry["method"] == "keep":
        return arrays[entry["arrays"]["values"]]
    if entry["method"] in ("fp16",):
        return arrays[entry["arrays"]["values"]].astype(np.float32)
    p = entry["params"]
    n = int(np.prod(shape))
    rows = shape[0] if shape else 1
    cols = n // rows if rows else 0
    codes = unpack(arrays[entry["arrays"]["codes"]], p["bits"], n).reshape(rows, cols).astype(np.float32)
    scale = arrays[entry["arrays"]["scale"]].astype(np.float32)
    if p["scheme"] == "symmetric":
        offset = np.full(scale.shape, 2 ** (p["bits"] - 1) - 1, np.float32)
    else:
        offset = arrays[entry["arrays"]["zero"]].astype(np.float32)
    if p["granularity"] == "tensor":
        out = (codes - offset[0]) * scale[0]
    elif p["granularity"] == "channel":
        out = (codes - offset[:, None]) * scale[:, None]
    else:
        g = p["group_size"]
        idx = np.arange(cols) // g
        out = (codes - offset[:, idx]) * scale[:, idx]
    return out.reshape(shape)


@pytest.mark.parametrize("spec", [
    Spec(), Spec(granularity="tensor"),
    Spec(bits=4, scheme="asymmetric", granularity="group", group_size=12),
    Spec(bits=3, granularity="group", group_size=5, scale_dtype="float32"),
    Spec(method="fp16"),
])
def test_decode_by_the_document(tiny_model, tmp_path, spec):
    out = str(tmp_path / "m.qnt.safetensors")
    quantize_file([tiny_model], out, spec)
    meta, arrays = read_container(out)
    assert meta["quant.format"] == "quant-archive" and meta["quant.version"] == "1"
    assert hashlib.sha256(meta["quant.manifest"].encode()).hexdigest() == meta["quant.manifest.sha256"]
    manifest = json.loads(meta["quant.manifest"])
    claimed = {s for e in manifest["tensors"] for s in e["arrays"].values()}
    assert claimed == set(arrays)
    with open_archive(out) as archive:
        for entry in manifest["tensors"]:
            h = hashlib.sha256()
            for role in sorted(entry["arrays"]):
                h.update(arrays[entry["arrays"][role]].tobytes())
            assert h.hexdigest() == entry["sha256"]
            mine = decode_by_hand(entry, arrays)
            theirs = archive.decode(archive.by_name[entry["name"]])
            assert mine.shape == tuple(entry["shape"])
            np.testing.assert_array_equal(mine, theirs)
