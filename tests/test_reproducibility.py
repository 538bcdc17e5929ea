"""Same input, options and seed -> byte-identical archives: across runs, processes, hash seeds, input
locations and clocks. The archive holds no timestamp (SOURCE_DATE_EPOCH changes nothing)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from quantcli.archive.container import KEY_MANIFEST
from quantcli.io.safetensors import SafetensorsFile

OPTIONS = [
    ["--bits", "4", "--scheme", "asymmetric", "--granularity", "group", "--group-size", "16"],
    ["--bits", "3", "--granularity", "tensor", "--include-1d"],
    ["--method", "bf16", "--skip", "embeddings"],
    ["--method", "vq", "--bits", "6", "--vector-dim", "2", "--seed", "7"],
]


def quantize(inputs, out, options, env_extra=None, cwd=None):
    env = dict(os.environ, **(env_extra or {}))
    r = subprocess.run([sys.executable, "-m", "quantcli", "quantize", *inputs, "-o", str(out), "-q", *options],
                       capture_output=True, text=True, env=env, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return hashlib.sha256(open(out, "rb").read()).hexdigest()


@pytest.mark.parametrize("options", OPTIONS, ids=["int4-group", "int3-tensor", "bf16", "vq"])
def test_identical_across_processes_hash_seeds_and_clocks(tiny_model, tmp_path, options):
    runs = [quantize([tiny_model], tmp_path / "a.qnt.safetensors", options, {"PYTHONHASHSEED": "1"}),
            quantize([tiny_model], tmp_path / "b.qnt.safetensors", options, {"PYTHONHASHSEED": "2"}),
            quantize([tiny_model], tmp_path / "c.qnt.safetensors", options,
                     {"PYTHONHASHSEED": "random", "SOURCE_DATE_EPOCH": "86400", "TZ": "Asia/Kolkata"})]
    assert len(set(runs)) == 1


def test_identical_whatever_the_input_path_and_working_folder(tmp_path):
    """Names come from the files, not from where they are: a copy elsewhere gives the same bytes."""
    rng = np.random.default_rng(3)
    first, second = tmp_path / "x", tmp_path / "y" / "deeper"
    second.mkdir(parents=True)
    first.mkdir()
    np.save(first / "w.npy", rng.standard_normal((16, 32)).astype(np.float32))
    shutil.copy(first / "w.npy", second / "w.npy")
    a = quantize([str(first / "w.npy")], tmp_path / "a.qnt.safetensors", ["--bits", "5"])
    b = quantize(["w.npy"], tmp_path / "b.qnt.safetensors", ["--bits", "5"], cwd=str(second))
    assert a == b


def test_no_timestamps_or_hosts_in_the_archive(tiny_model, tmp_path):
    out = tmp_path / "m.qnt.safetensors"
    quantize([tiny_model], out, OPTIONS[0])
    with SafetensorsFile(str(out)) as st:
        assert set(st.metadata) == {"format", "quant.format", "quant.version", "quant.producer", "quant.manifest",
                                    "quant.manifest.sha256"}
        manifest = json.loads(st.metadata[KEY_MANIFEST])
    keys = {k for t in manifest["tensors"] for k in t} | {k for t in manifest["tensors"] for k in t["params"]}
    assert keys <= {"name", "dtype", "shape", "method", "params", "arrays", "sha256", "metrics", "note", "bits",
                    "scheme", "granularity", "group_size", "scale_dtype"}
    raw = out.read_bytes()
    header = raw[8:8 + int.from_bytes(raw[:8], "little")]
    for needle in (str(tmp_path).encode(), os.uname().nodename.encode(), os.path.basename(tiny_model).encode()):
        assert needle not in header


@pytest.mark.parametrize("options", OPTIONS[:1] + OPTIONS[3:], ids=["int4-group", "vq"])
def test_identical_across_jobs(tiny_model, tmp_path, options):
    runs = {quantize([tiny_model], tmp_path / f"j{jobs}.qnt.safetensors", [*options, "--jobs", str(jobs)])
            for jobs in (1, 2, 4)}
    assert len(runs) == 1
