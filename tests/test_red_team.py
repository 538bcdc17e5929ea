"""Issue 22: the outside red team's classes, each refused with one line naming the file and tensor
(exit 2), never an internal error, a warning on stderr or a non-finite value from a verified archive."""

from __future__ import annotations

import numpy as np
import pytest

import fuzzing as fz
from fuzzing import cli, one_error


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return fz.build_seeds(str(tmp_path_factory.mktemp("seeds")))


def resigned(seed, tmp_path, edit, name="a.qnt.safetensors") -> str:
    path = tmp_path / name
    path.write_bytes(fz._resign(seed, edit))
    return str(path)


def _t(m, name="w"):
    return next(t for t in m["tensors"] if t["name"] == name)


# -- 1. manifest numbers JSON cannot hold ------------------------------------------------------

@pytest.mark.parametrize("field, key, value, message", [
    ("metrics", "mse", float("nan"), "metrics.mse is nan"),
    ("metrics", "sqnr_db", float("inf"), "metrics.sqnr_db is inf"),
    ("metrics", "max_abs_err", float("-inf"), "metrics.max_abs_err is -inf"),
    ("metrics", "mse", 10**400, "metrics.mse is an integer of 1329 bits"),
    ("params", "extra", float("nan"), "params.extra is nan"),
    ("params", "extra", [1, {"x": 10**400}], "params.extra[1].x is an integer"),
])
def test_manifest_numbers_json_cannot_hold_are_refused_on_open(seeds, tmp_path, field, key, value, message):
    def edit(m, arrays, meta):
        _t(m)[field][key] = value
    path = resigned(seeds["archive-int8-sym-channel"], tmp_path, edit)
    for args in (["inspect", path, "--json"], ["inspect", path], ["verify", path],
                 ["dequantize", path, "-o", tmp_path / "o.safetensors"]):
        one_error(cli(*args), path, "tensor 'w'", message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.qnt.safetensors"]


def test_large_but_plain_manifest_numbers_still_open(seeds, tmp_path):
    def edit(m, arrays, meta):
        _t(m)["metrics"]["mse"] = 1e308
        _t(m)["params"]["extra"] = 2**63 - 1
    path = resigned(seeds["archive-int8-sym-channel"], tmp_path, edit)
    run = cli("inspect", path, "--json")
    assert run.exit_code == 0 and not run.stderr, run.stderr
