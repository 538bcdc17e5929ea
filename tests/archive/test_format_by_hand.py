"""Decode archives with numpy + json only, following docs/FORMAT.md, and compare with the library."""

import hashlib
import json

import numpy as np
import pytest

from quantcli import Spec, open_archive, quantize_file

NP_DTYPES = {"F32": "<f4", "F16": "<f2", "U8": "u1", "I64": "<i8", "F64": "<f8", "BF16": "<u2"}


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


def decode_by_hand(entry, arrays, codes_of=None):
    """Version 1: codes bit-packed (section 3). `codes_of(count)`, when given, supplies the codes
    instead (version 2: decoded from their codec, section 6)."""
    shape = entry["shape"]
    p = entry["params"]
    n = int(np.prod(shape))
    rows = shape[0] if shape else 1
    cols = n // rows if rows else 0
    get = lambda role: arrays[entry["arrays"][role]]  # noqa: E731
    if codes_of is None:
        codes_of = lambda count: unpack(get("codes"), p["bits"], count)  # noqa: E731
    if entry["method"] in ("nf", "log"):
        table = nf_table(p["bits"]) if entry["method"] == "nf" else log_table(p["bits"])
        levels = table[codes_of(n)].reshape(rows, cols)
        s = get("scale").astype(np.float32)
        out = {"tensor": lambda: levels * s[0], "channel": lambda: levels * s[:, None],
               "group": lambda: column_groups(levels, s, rows, cols, p["group_size"])}[p["granularity"]]()
        return out.reshape(shape)
    if entry["method"] == "kmeans":
        codes = codes_of(n).reshape(rows, cols)
        cb = get("codebook").astype(np.float32)
        if p["normalize"] == "group":
            return column_groups(cb[0][codes], get("scale").astype(np.float32), rows, cols,
                                 p["group_size"]).reshape(shape)
        owner = {"tensor": np.zeros(rows, int), "channel": np.arange(rows),
                 "group": np.arange(rows) // p.get("group_size", 1)}[p["granularity"]]
        return cb[owner[:, None], codes].reshape(shape)
    if entry["method"] == "pq":
        m_sub, s = p["subspaces"], p["subvector_dim"]
        codes = codes_of(rows * m_sub).reshape(rows, m_sub)
        assert codes.max() < p["centroids"]
        full = cols - m_sub * (s - 1)
        widths = [s if m < full else s - 1 for m in range(m_sub)]
        books = get("codebooks").astype(np.float32)
        return np.concatenate([books[m, codes[:, m], :widths[m]] for m in range(m_sub)], axis=1).reshape(shape)
    if entry["method"] == "vq":
        d = p["vector_dim"]
        count = rows * (cols + p["pad"]) // d
        pieces = get("codebook").astype(np.float32)[codes_of(count)]
        return pieces.reshape(rows, cols + p["pad"])[:, :cols].reshape(shape)
    if entry["method"] == "keep":
        return arrays[entry["arrays"]["values"]]
    if entry["method"] in ("fp16",):
        return arrays[entry["arrays"]["values"]].astype(np.float32)
    p = entry["params"]
    n = int(np.prod(shape))
    rows = shape[0] if shape else 1
    cols = n // rows if rows else 0
    codes = codes_of(n).reshape(rows, cols).astype(np.float32)
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


# -- version 2: entropy-coded arrays (FORMAT.md section 6), decoded with numpy + json + zstandard --

def varints(buf):
    """LEB128 values of `buf`, each 1-3 bytes and canonical (6.3)."""
    out, value, shift, length = [], 0, 0, 0
    for b in buf:
        value |= (b & 0x7F) << shift
        shift, length = shift + 7, length + 1
        if not b & 0x80:
            assert length <= 3 and (length == 1 or value >> (7 * (length - 1)))  # canonical
            out.append(value)
            value, shift, length = 0, 0, 0
    assert length == 0
    return out


def rans_by_hand(buf, alphabet, lanes, table_nbytes, n):
    """The `rans` stream of 6.3: n codes, lanes decoded a step (one code each) at a time."""
    if lanes == 0:
        assert n == 0 and len(buf) == 0 and table_nbytes == 0
        return np.zeros(0, np.int64)
    assert 1 <= lanes <= n and (len(buf) - table_nbytes - 8 * lanes) % 4 == 0
    table = varints(buf[:table_nbytes])
    lo, m, f = table[0], table[1], table[2:]
    assert m >= 2 and lo + m <= alphabet and len(f) == m and sum(f) == 1 << 16 and max(f) <= 64512
    assert f[0] > 0 and f[-1] > 0
    freq = np.zeros(alphabet, np.uint64)
    freq[lo:lo + m] = f
    cum = np.cumsum(freq) - freq
    sym = np.repeat(np.arange(alphabet), freq.astype(np.int64))  # slot -> symbol
    x = np.frombuffer(buf[table_nbytes:table_nbytes + 8 * lanes], "<u8").astype(np.uint64)
    assert np.all(x >= 2**32)
    words = np.frombuffer(buf[table_nbytes + 8 * lanes:], "<u4").astype(np.uint64)
    out = np.empty(n, np.int64)
    pos = 0
    for start in range(0, n, lanes):  # code i is lane i mod L's; within a step, lanes in order
        a = min(lanes, n - start)
        xa = x[:a]
        slot = xa & np.uint64(0xFFFF)
        s = sym[slot]
        xa = freq[s] * (xa >> np.uint64(16)) + slot - cum[s]
        low = np.flatnonzero(xa < np.uint64(2**32))
        assert pos + low.size <= words.size
        xa[low] = (xa[low] << np.uint64(32)) | words[pos:pos + low.size]
        pos += low.size
        x[:a] = xa
        out[start:start + a] = s
    assert pos == words.size and np.all(x == np.uint64(2**32))
    return out


NEXT_STATE = [[0, 2], [2, 0], [1, 3], [3, 1]]


def uleb(buf, pos):
    """One canonical LEB128 varint of 1-4 bytes at buf[pos:] and the position after it."""
    value, shift, start = 0, 0, pos
    while True:
        b = buf[pos]
        value |= (b & 0x7F) << shift
        shift, pos = shift + 7, pos + 1
        if not b & 0x80:
            break
    assert pos - start <= 4 and (pos - start == 1 or buf[pos - 1] != 0)
    return value, pos


def crans_by_hand(buf, rows, cols):
    """The `crans` stream of 6.6: codes [rows, cols], one code at a time in column-major order."""
    split, rho, nb, base = buf[0], buf[1], buf[2], buf[3]
    assert split <= 1 and rho <= 3 and 1 <= nb <= 32
    km1, pos = uleb(buf, 4)
    z, pos = uleb(buf, pos)
    lanes, pos = uleb(buf, pos)
    tnb, pos = uleb(buf, pos)
    alphabet, off = km1 + 1, (z // 2 if z % 2 == 0 else -(z + 1) // 2)
    assert 1 <= lanes <= rows and (len(buf) - pos - tnb - 8 * lanes) % 4 == 0
    bits = [(buf[pos + b // 8] >> (b % 8)) & 1 for b in range(8 * tnb)]
    at = 0

    def gamma():
        nonlocal at
        zeros = 0
        while bits[at] == 0:
            zeros, at = zeros + 1, at + 1
        v = 0
        for _ in range(zeros + 1):
            v, at = 2 * v + bits[at], at + 1
        return v

    tables = []
    for _ in range(nb * (2 if split else 1)):
        pc = bits[at] | bits[at + 1] << 1 | bits[at + 2] << 2 | bits[at + 3] << 3
        at += 4
        if pc == 15:
            tables.append(None)
            continue
        p = pc + 6
        lo, m = gamma() - 1, gamma()
        f, prev = {}, 0
        for i in range(m):
            g = gamma() - 1
            prev += g // 2 if g % 2 == 0 else -(g + 1) // 2
            assert 0 <= prev <= 2**p - 2 ** (p - 6)
            f[lo + i] = prev
        assert m >= 1 and lo + m <= alphabet and f[lo] > 0 and f[lo + m - 1] > 0 and sum(f.values()) == 2**p
        cum, c = {}, 0
        for sym in sorted(f):
            cum[sym], c = c, c + f[sym]
        tables.append((p, f, cum))
    assert at <= len(bits) and len(bits) - at < 8 and not any(bits[at:])
    pos += tnb
    x = [int.from_bytes(buf[pos + 8 * i:pos + 8 * i + 8], "little") for i in range(lanes)]
    assert all(v >= 2**32 for v in x)
    pos += 8 * lanes
    words = [int.from_bytes(buf[q:q + 4], "little") for q in range(pos, len(buf), 4)]
    out = np.zeros((rows, cols), np.int64)
    state, total, wp, i = [0] * rows, [0] * rows, 0, 0
    for j in range(cols):
        for r in range(rows):
            bucket = 0
            if j > 0 and nb > 1:
                v = 16 * total[r] // j + 16
                e = v.bit_length() - 1
                level = (e - 4) * 2**rho + ((v >> (e - rho)) & (2**rho - 1))
                bucket = 1 + min(max(level - base, 0), nb - 2)
            p, f, cum = tables[2 * bucket + (state[r] >> 1) if split else bucket]
            lane = i % lanes
            slot = x[lane] % 2**p
            s = next(sym for sym in f if cum[sym] <= slot < cum[sym] + f[sym])
            x[lane] = f[s] * (x[lane] >> p) + slot - cum[s]
            if x[lane] < 2**32:
                x[lane] = (x[lane] << 32) | words[wp]
                wp += 1
            out[r, j] = s
            k = s + off
            state[r] = NEXT_STATE[state[r]][k & 1]
            total[r] = min(total[r] + abs(k), 2**40)
            i += 1
    assert wp == len(words) and all(v == 2**32 for v in x)
    return out


def ecsq_by_hand(entry, codes):
    """Method ecsq (6.7): levels (with the DQ state machine), then the optional shrink."""
    p, shape = entry["params"], entry["shape"]
    rows = shape[0] if shape else 1
    k = codes.reshape(rows, -1).astype(np.int64) + p["offset"]
    assert k.size == 0 or int(k.max()) - p["offset"] < p["levels"]
    level = k.copy()
    if p.get("dq"):
        for r in range(rows):
            state = 0
            for j in range(k.shape[1]):
                level[r, j] = 2 * k[r, j] - (np.sign(k[r, j]) if state >= 2 else 0)
                state = NEXT_STATE[state][k[r, j] & 1]
    if "shrink" in p:
        d = np.where(np.abs(level) == 1, p["shrink"][0], p["shrink"][1])
        vals = (level - np.sign(level) * d / 256).astype(np.float32)
    else:
        vals = level.astype(np.float32)
    return (vals * np.float32(p["step"])).reshape(shape)


def lossless_by_hand(buf, params, dtype, n):
    """The `lossless` streams of 6.4 merged back into n elements of `dtype` (a numpy dtype)."""
    import zstandard
    k = dtype.itemsize
    planes = params["planes"]
    assert len(planes) == k and sum(p["nbytes"] for p in planes) == len(buf) == params["nbytes"]
    split = params["transform"] == "rotl1h10"
    widths = [8] * (k - 2) + [6, 10] if split else [8] * k
    v = np.zeros(n, np.uint64)
    start = 0
    for i, (p, w) in enumerate(zip(planes, widths)):
        chunk = buf[start:start + p["nbytes"]]
        start += p["nbytes"]
        if p["codec"] == "raw":
            assert len(chunk) == -(-n * w // 8)
            values = unpack(np.frombuffer(chunk, np.uint8), w, n)
        elif p["codec"] == "rans":
            values = rans_by_hand(chunk, 2 ** w, p["lanes"], p["table_nbytes"], n)
        else:
            assert w == 8 and zstandard.frame_content_size(chunk) == n
            values = np.frombuffer(zstandard.ZstdDecompressor().decompress(chunk), np.uint8)
        assert values.size == n
        shift = 8 * k - 10 if split and i == k - 1 else 8 * i  # the 10-bit head is the word's top
        v |= values.astype(np.uint64) << np.uint64(shift)
    if params["transform"] in ("rotl1", "rotl1h10"):
        v = (v >> np.uint64(1)) | ((v & np.uint64(1)) << np.uint64(8 * k - 1))
    return v.astype(f"<u{k}").view(dtype)


HAND_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "F64": np.dtype("<f8"), "I64": np.dtype("<i8"),
               "BF16": np.dtype("<u2"), "U8": np.dtype("u1")}  # bfloat16 compared as its raw bits
SCALE_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}


def plain_layout(entry, role):
    """(safetensors dtype, shape) of a plain logical array (sections 3-4, 6.5)."""
    p, shape = entry["params"], entry["shape"]
    if entry["method"] in ("keep", "lossless"):
        return entry["dtype"] if entry["method"] == "keep" else p["dtype"], shape
    rows = shape[0] if shape else 1
    cols = int(np.prod(shape)) // rows if rows else 0
    blocks = {"tensor": [1], "channel": [rows], "group": [rows, -(-cols // p.get("group_size", 1))]}
    return ("U8" if role == "zero" else SCALE_DTYPES[p["scale_dtype"]]), blocks[p["granularity"]]


def decode_v2_by_hand(entry, arrays):
    codecs = entry.get("codecs", {})
    logical = dict(arrays)
    for role, cp in codecs.items():
        stored = arrays[entry["arrays"][role]]
        assert stored.dtype == np.uint8 and stored.shape == (cp["nbytes"],)
        if cp["codec"] == "lossless":
            code, shape = plain_layout(entry, role)
            n = int(np.prod(shape))
            logical[entry["arrays"][role]] = lossless_by_hand(stored.tobytes(), cp, HAND_DTYPES[code], n).reshape(shape)
        elif cp["codec"] == "rans":
            assert role == "codes" and 2 <= cp["alphabet"] <= max(2, 2 ** entry["params"]["bits"])
    if entry["method"] == "lossless":
        return logical[entry["arrays"]["values"]]
    if entry["method"] == "ecsq":
        shape, n = entry["shape"], int(np.prod(entry["shape"]))
        rows = shape[0] if shape else 1
        stored = arrays[entry["arrays"]["codes"]]
        cp = codecs.get("codes")
        if cp is None:
            codes = unpack(stored, entry["params"]["bits"], n)
        elif cp["codec"] == "crans":
            codes = crans_by_hand(stored.tobytes(), rows, n // rows)
        else:
            codes = rans_by_hand(stored.tobytes(), cp["alphabet"], cp["lanes"], cp["table_nbytes"], n)
        return ecsq_by_hand(entry, codes)
    if "codes" in codecs:
        cp = codecs["codes"]
        buf = arrays[entry["arrays"]["codes"]].tobytes()
        return decode_by_hand(entry, logical, lambda count: rans_by_hand(
            buf, cp["alphabet"], cp["lanes"], cp["table_nbytes"], count))
    return decode_by_hand(entry, logical)


def v2_inputs(tmp_path, tiny_model):
    import ml_dtypes
    from safetensors.numpy import save_file
    rng = np.random.default_rng(9)
    row = rng.normal(0, 0.05, 4096).astype(np.float32)  # low mantissa bytes near-uniform: zstd is tried
    save_file({"f32": rng.normal(0, 0.05, (40, 48)).astype(np.float32),
               "f16": rng.normal(0, 0.5, (30, 20)).astype(np.float16),
               "f64": rng.normal(0, 1, (12, 9)),
               "bf16": rng.normal(0, 1, (16, 24)).astype(ml_dtypes.bfloat16),
               "repeats": np.tile(row, (16, 1)),  # repeated rows: zstd finds them in the mantissa planes
               "scalar": np.array(2.5, np.float32),
               "big": rng.normal(0, 0.05, (300, 256)).astype(np.float32),  # 10-bit heads: rotl1h10
               "big-bf16": rng.normal(0, 0.05, (300, 256)).astype(ml_dtypes.bfloat16)},
              str(tmp_path / "l.safetensors"))
    return [
        ([tiny_model], Spec(codec="entropy")),  # rans codes; kept norms and int64 ids through lossless
        ([tiny_model], Spec(bits=4, scheme="asymmetric", granularity="group", group_size=8, codec="entropy")),
        ([str(tmp_path / "l.safetensors")], Spec(method="lossless")),
        ([tiny_model], Spec(method="ecsq", step=0.004)),  # crans codes
        ([tiny_model], Spec(method="ecsq", step=0.004, trellis=True)),  # crans with the DQ split, shrink
    ]


def test_decode_version_2_by_the_document(tiny_model, tmp_path):
    seen = set()
    for i, (inputs, spec) in enumerate(v2_inputs(tmp_path, tiny_model)):
        out = str(tmp_path / f"v2-{i}.qnt.safetensors")
        quantize_file(inputs, out, spec)
        meta, arrays = read_container(out)
        assert meta["quant.version"] == "2"
        manifest = json.loads(meta["quant.manifest"])
        with open_archive(out) as archive:
            for entry in manifest["tensors"]:
                for cp in entry.get("codecs", {}).values():
                    seen.add(cp["codec"])
                    seen.update("plane-" + p["codec"] for p in cp.get("planes", []))
                    seen.add("transform-" + cp.get("transform", ""))
                mine = decode_v2_by_hand(entry, arrays)
                theirs = archive.decode(archive.by_name[entry["name"]])
                if entry["dtype"] == "BF16":
                    theirs = theirs.view(np.uint16)
                assert mine.shape == tuple(entry["shape"]) and mine.dtype == theirs.dtype, entry["name"]
                assert mine.tobytes() == theirs.tobytes(), entry["name"]
    assert seen >= {"rans", "crans", "lossless", "plane-raw", "plane-rans", "plane-zstd", "transform-rotl1",
                    "transform-rotl1h10", "transform-none"}


def test_previous_ecsq_archives_decode_by_the_document():
    """Archives written before crans (rans codes, no shrink) decode by 6.3 and 6.7 as well."""
    import os
    for name in ("ecsq-rans", "ecsq-rans-trellis"):
        path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "golden", f"{name}.qnt.safetensors")
        meta, arrays = read_container(path)
        with open_archive(path) as archive:
            for entry in json.loads(meta["quant.manifest"])["tensors"]:
                mine = decode_v2_by_hand(entry, arrays)
                assert mine.tobytes() == archive.decode(archive.by_name[entry["name"]]).tobytes()
