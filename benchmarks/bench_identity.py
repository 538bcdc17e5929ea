"""Decoded values must not drift: quantize all-MiniLM-L6-v2 under a fixed list of settings and
compare SHA-256 digests of every dequantized tensor (and of the archive bytes) with the digests
pinned in benchmarks/identity_digests.json (captured before the architecture rework).

    python benchmarks/bench_identity.py            # check, exit 1 on any difference
    python benchmarks/bench_identity.py --capture  # (re)write the pinned digests
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import real_model  # noqa: E402

from quantcli import Spec, open_archive, quantize_file  # noqa: E402

PINNED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "identity_digests.json")

SETTINGS: dict[str, tuple[dict, dict]] = {
    "int8-sym-channel": ({}, {}),
    "int4-asym-g64": (dict(bits=4, scheme="asymmetric", granularity="group", group_size=64), {}),
    "int3-sym-tensor": (dict(bits=3, granularity="tensor"), {}),
    "int2-asym-channel": (dict(bits=2, scheme="asymmetric"), {}),
    "int4-sym-g128-search": (dict(bits=4, granularity="group", scale_search=True), {}),
    "int6-asym-tensor-1d": (dict(bits=6, scheme="asymmetric", granularity="tensor"), dict(include_1d=True)),
    "int8-asym-g32-f32": (dict(bits=8, scheme="asymmetric", granularity="group", group_size=32,
                               scale_dtype="float32"), {}),
    "nf4-g64": (dict(method="nf", bits=4, granularity="group", group_size=64), {}),
    "nf3-channel": (dict(method="nf", bits=3), {}),
    "log4-channel": (dict(method="log", bits=4), {}),
    "kmeans4-norm-g64": (dict(method="kmeans", bits=4, normalize="group", granularity="group", group_size=64), {}),
    "kmeans3-tensor": (dict(method="kmeans", bits=3, granularity="tensor"), {}),
    "fp16": (dict(method="fp16"), {}),
    "bf16": (dict(method="bf16"), {}),
}


def digests(model: str, spec: dict, options: dict, folder: str) -> dict[str, str]:
    out = os.path.join(folder, "a.qnt.safetensors")
    quantize_file([model], out, Spec(**spec), jobs=1, **options)
    decoded = hashlib.sha256()
    with open_archive(out) as archive:
        for t in archive.tensors:
            values = archive.decode(t)
            decoded.update(t.name.encode() + str(values.dtype).encode() + values.tobytes())
    with open(out, "rb") as f:
        stored = hashlib.sha256(f.read()).hexdigest()
    return {"decoded": decoded.hexdigest(), "archive": stored}


def main() -> int:
    capture = "--capture" in sys.argv
    model = real_model()
    pinned = {} if capture else json.load(open(PINNED))
    got, bad = {}, 0
    with tempfile.TemporaryDirectory() as folder:
        for name, (spec, options) in SETTINGS.items():
            got[name] = digests(model, spec, options, folder)
            if not capture:
                want = pinned[name]
                same = {k: got[name][k] == want[k] for k in want}
                bad += not same["decoded"]
                print(f"{name:24s} decoded {'same' if same['decoded'] else 'DIFFERENT'}  "
                      f"archive bytes {'same' if same['archive'] else 'different'}")
    if capture:
        with open(PINNED, "w") as f:
            json.dump(got, f, indent=1, sort_keys=True)
            f.write("\n")
        print(f"wrote {PINNED}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
