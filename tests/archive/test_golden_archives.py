"""Golden archives: a small fixed input quantized with each method gives exactly these bytes.
A change here is a change of the archive format or of a method's values: it must be deliberate
(re-pin with QUANT_REPIN=1 and say why in the commit)."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from quantcli import Spec, quantize_file
from quantcli.io.output import SafetensorsWriter

SETTINGS = {
    "uniform-int8-channel": Spec(),
    "uniform-int4-asym-g16": Spec(bits=4, scheme="asymmetric", granularity="group", group_size=16),
    "uniform-int3-tensor-search": Spec(bits=3, granularity="tensor", scale_search=True),
    "nf4-g16": Spec(method="nf", bits=4, granularity="group", group_size=16),
    "log3-channel": Spec(method="log", bits=3),
    "kmeans3-tensor": Spec(method="kmeans", bits=3, granularity="tensor"),
    "kmeans4-norm-g16": Spec(method="kmeans", bits=4, normalize="group", group_size=16),
    "vq6-d4": Spec(method="vq", bits=6, vector_dim=4),
    "pq-k16-s4": Spec(method="pq", subvector_dim=4, centroids=16),
    "fp16": Spec(method="fp16"),
    "bf16": Spec(method="bf16"),
    "lossless": Spec(method="lossless"),  # small: the `rotl1` layout (rotl1h10: test_lossless_codec.py)
    "ecsq-step": Spec(method="ecsq", step=0.02),
    "ecsq-trellis": Spec(method="ecsq", step=0.02, trellis=True),
}

# lossless: the manifest records the input file's header and sha256 since issue 22 (archive/original.py)
# ecsq-step: 2,256 B since a codec record that costs more than it saves is not written (was 2,270 B)
PINNED = {
    "bf16": "4881e735198aca2c22cc0ebcfda02dfcc1848f22fafa012dd103e2b35991ad73",
    "ecsq-step": "2461d6d989f5bd16f4dea306d88ff81e688dc74cd45f7426d16f7a83114ea7f2",
    "ecsq-trellis": "f4d6a5cb9ffbdc018b7584ed37dc24e4a43e5719f100e52646b23d8793aad507",
    "fp16": "32c9f2aae595cfc9f969f9448892c228585c3b5b4bb3c98c7021599281182045",
    "kmeans3-tensor": "cde3c94822bc5fa32d9e8384f81be7eaf294cad765a2da29cbd85fb319e2af0a",
    "kmeans4-norm-g16": "89e6206e7ee8304d30d309f845518071342ee3a9ef0e099dfbf859f0a1cdfb4e",
    "lossless": "14068544cd1b43e281af4538b8f57ba2d4acfbf0a873c19a1e4eb5d32169ce29",
    "log3-channel": "ac6ea1352a949ad2d9e67f6046825e19affd7521d94a617c2919a244d47ddd8c",
    "nf4-g16": "65875454fbecca4aa3e9c3e92bed2aa005af20b0068c62e9acc463c8bb2267da",
    "pq-k16-s4": "651cbf7deaf165c57552871be3783f6b8955da8482a5d9e2d7a5486057e37f65",
    "uniform-int3-tensor-search": "d6efdabb3f5203ae2b0cab85a1a41eebcd77edcfd0bf6d49d710d03c8c803988",
    "uniform-int4-asym-g16": "10ef715a3567edcad7c1e48e30a6b592b43672740ed035f4d5229b7f29811acb",
    "uniform-int8-channel": "7f680e6aec7dff4b79f35d80703ad2bb3bdcbe521af83de840e76319c60a7f25",
    "vq6-d4": "f3aef07548964b3787fef702ea4d2020155d6959a2ac01c207cd026bbf64d70b",
}


def golden_input(path: str) -> None:
    """A fixed 2-D weight (a formula, no random generator) and a kept 1-D tensor."""
    i = np.arange(24 * 40, dtype=np.float64).reshape(24, 40)
    w = (np.sin(i * 0.37) * np.cos(i * 0.011) * (1 + (i % 7) / 3)).astype(np.float32)
    writer = SafetensorsWriter(path)
    writer.add("layer.weight", w)
    writer.add("layer.bias", np.linspace(-1, 1, 24, dtype=np.float32))
    writer.finish({"format": "pt"})


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_golden_archive_bytes(name, tmp_path):
    src = str(tmp_path / "golden.safetensors")
    golden_input(src)
    out = str(tmp_path / "g.qnt.safetensors")
    quantize_file([src], out, SETTINGS[name], jobs=1)
    digest = hashlib.sha256(open(out, "rb").read()).hexdigest()
    if os.environ.get("QUANT_REPIN"):
        print(f'    "{name}": "{digest}",')
        return
    assert digest == PINNED[name]
