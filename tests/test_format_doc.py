"""Decode archives with numpy + json only, following docs/FORMAT.md, and compare with the library."""

import hashlib
import json

import numpy as np
import pytest

from quantcli import Spec, open_archive, quantize_file

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


def log_table(bits):
    mags = [2.0 ** -k for k in range(2 ** (bits - 1) - 1)]
    return np.array(sorted([0.0] + mags + [-m for m in mags]), np.float32)


def nf_table(bits):
    from statistics import NormalDist
    inv = NormalDist().inv_cdf
    offset = 1 - (1 / (2 * (2**bits - 1)) + 1 / 2 ** (bits + 1)) / 2
    pos = [inv(p) for p in np.linspace(offset, 0.5, 2 ** (bits - 1) + 1)[:-1]]
    neg = [-inv(p) for p in np.linspace(offset, 0.5, 2 ** (bits - 1))[:-1]]
    return (np.array(sorted(pos + neg + [0.0])) / inv(offset)).astype(np.float32)


def column_groups(values, per_block, rows, cols, g):
    return values * per_block[:, np.arange(cols) // g]


def decode_by_hand(entry, arrays):
    shape = entry["shape"]
    p = entry["params"]
    n = int(np.prod(shape))
    rows = shape[0] if shape else 1
    cols = n // rows if rows else 0
    get = lambda role: arrays[entry["arrays"][role]]  # noqa: E731
    if entry["method"] in ("nf", "log"):
        table = nf_table(p["bits"]) if entry["method"] == "nf" else log_table(p["bits"])
        levels = table[unpack(get("codes"), p["bits"], n)].reshape(rows, cols)
        s = get("scale").astype(np.float32)
        out = {"tensor": lambda: levels * s[0], "channel": lambda: levels * s[:, None],
               "group": lambda: column_groups(levels, s, rows, cols, p["group_size"])}[p["granularity"]]()
        return out.reshape(shape)
    if entry["method"] == "kmeans":
        codes = unpack(get("codes"), p["bits"], n).reshape(rows, cols)
        cb = get("codebook").astype(np.float32)
        if p["normalize"] == "group":
            return column_groups(cb[0][codes], get("scale").astype(np.float32), rows, cols,
                                 p["group_size"]).reshape(shape)
        owner = {"tensor": np.zeros(rows, int), "channel": np.arange(rows),
                 "group": np.arange(rows) // p.get("group_size", 1)}[p["granularity"]]
        return cb[owner[:, None], codes].reshape(shape)
    if entry["method"] == "pq":
        m_sub, s = p["subspaces"], p["subvector_dim"]
        codes = unpack(get("codes"), p["bits"], rows * m_sub).reshape(rows, m_sub)
        assert codes.max() < p["centroids"]
        full = cols - m_sub * (s - 1)
        widths = [s if m < full else s - 1 for m in range(m_sub)]
        books = get("codebooks").astype(np.float32)
        return np.concatenate([books[m, codes[:, m], :widths[m]] for m in range(m_sub)], axis=1).reshape(shape)
    if entry["method"] == "vq":
        d = p["vector_dim"]
        count = rows * (cols + p["pad"]) // d
        pieces = get("codebook").astype(np.float32)[unpack(get("codes"), p["bits"], count)]
        return pieces.reshape(rows, cols + p["pad"])[:, :cols].reshape(shape)
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
    Spec(method="nf", bits=4, granularity="group", group_size=12),
    Spec(method="nf", bits=3, granularity="channel"),
    Spec(method="log", bits=4, granularity="tensor"),
    Spec(method="kmeans", bits=3, normalize="group", group_size=16),
    Spec(method="kmeans", bits=2, granularity="group", codebook_rows=5),
    Spec(method="kmeans", bits=4, granularity="channel"),
    Spec(method="vq", bits=6, vector_dim=3),
    Spec(method="pq", subspaces=5, centroids=6),  # 32 columns in 5 subspaces: widths 7,7,6,6,6
    Spec(method="pq", subvector_dim=4, centroids=16),
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
