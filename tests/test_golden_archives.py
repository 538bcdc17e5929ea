"""Golden archives: a small fixed input quantized with each method gives exactly these bytes.
A change here is a change of the archive format or of a method's values: it must be deliberate
(re-pin with QUANT_REPIN=1 and say why in the commit)."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from quantcli import Spec, quantize_file
from quantcli.output import SafetensorsWriter

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
}

PINNED = {
    "bf16": "1794d1fce836df7baca1c3fd008f442d18c79c20a0b6cd25d34f95c8209d938b",
    "fp16": "420368e6a4da200d57df148093748565716f4792edb1a626fca726a60fde0f85",
    "kmeans3-tensor": "f59209828ec3175e2f9bf11601727c9e228b298e25c16a14c60d1d366b2404be",
    "kmeans4-norm-g16": "5b088c5237f8f08dfa9ea6021e696d40959ae0604d4396255685d1be78a78fc8",
    "log3-channel": "8513244f368c05bfee7b7dc4ef49905444cfcc565150326a5985fd1581bc02d2",
    "nf4-g16": "e4832997d81d556db677bd8297702334b87381b9e3231243a03f0cdff18ed436",
    "pq-k16-s4": "ae45fcd2df82c37785ba26e779af588142c6761d2e314c6f74a4fa2aec39eb1a",
    "uniform-int3-tensor-search": "3830fb3085a72c34c8b4ced90b8680ba88b612d4ae12ef70393c39c75d310fad",
    "uniform-int4-asym-g16": "b31d3b9e399c6b33f67c5d14ecff03a018d1c48108e8513d5ef666fdb994c57b",
    "uniform-int8-channel": "e4443abdfb4c54c545c1b38cd125899cb7ff998946ae01e8cb3d26da98d34329",
    "vq6-d4": "44f45c5838115d5898434762dfffb51727398e6b3c7fc17074d5727e6d6f665c",
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
