"""Doctests of the package run in a scratch folder holding the files their examples name."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _doctest_folder(request, tmp_path, monkeypatch):
    if not isinstance(request.node, pytest.DoctestItem):
        yield
        return
    from quantcli import Spec, quantize_file
    from quantcli.io.output import SafetensorsWriter

    rng = np.random.default_rng(0)
    monkeypatch.chdir(tmp_path)
    np.save("w.npy", rng.standard_normal((64, 128)).astype(np.float32))
    np.save("q.npy", rng.standard_normal((4, 64)).astype(np.float32))
    writer = SafetensorsWriter("model.safetensors")
    writer.add("layer.0.weight", rng.standard_normal((32, 64)).astype(np.float32))
    writer.add("layer.0.bias", rng.standard_normal(32).astype(np.float32))
    writer.finish({"format": "pt"})
    quantize_file(["w.npy"], "w.qnt.safetensors")
    quantize_file(["model.safetensors"], "m.pq.safetensors", Spec(method="pq", subvector_dim=4, centroids=16))
    yield
