"""Real checkpoints: sharded inputs, recipes, dry runs, --jobs determinism, sharded outputs."""

import json
import os

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file
from typer.testing import CliRunner

from quantcli import ConfigError, InputError, Spec, dequantize_file, quantize_file
from quantcli.api import parse_size, plan_file
from quantcli.cli.commands import app
from quantcli.recipe import load_recipe
from quantcli.io.safetensors import SafetensorsFile
from quantcli.io.sources import Sources


@pytest.fixture
def sharded(tmp_path):
    """index.json + 3 shards, bf16 and fp32, one shard holding a stale duplicate the index does not name."""
    rng = np.random.default_rng(0)
    d = tmp_path / "ckpt"
    d.mkdir()
    t = {
        "layers.0.attn.weight": rng.normal(0, 0.02, (64, 48)).astype(ml_dtypes.bfloat16),
        "layers.0.mlp.weight": rng.normal(0, 0.02, (96, 48)).astype(np.float32),
        "layers.0.norm.weight": np.ones(48, ml_dtypes.bfloat16),
        "layers.1.attn.weight": rng.normal(0, 0.02, (64, 48)).astype(ml_dtypes.bfloat16),
        "layers.1.mlp.weight": rng.normal(0, 0.02, (96, 48)).astype(np.float32),
        "embed.weight": rng.normal(0, 0.02, (100, 48)).astype(np.float32),
        "position_ids": np.arange(16, dtype=np.int64),
    }
    shards = {"model-00001-of-00003.safetensors": ["embed.weight", "position_ids", "layers.0.attn.weight"],
              "model-00002-of-00003.safetensors": ["layers.0.mlp.weight", "layers.0.norm.weight"],
              "model-00003-of-00003.safetensors": ["layers.1.attn.weight", "layers.1.mlp.weight"]}
    for shard, names in shards.items():
        content = {n: t[n] for n in names}
        if shard.startswith("model-00003"):
            content["layers.0.mlp.weight"] = np.zeros((96, 48), np.float32)  # stale copy
        save_file(content, str(d / shard))
    weight_map = {n: s for s, names in shards.items() for n in names}
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return d, t


def test_sharded_round_trip(sharded, tmp_path):
    d, t = sharded
    arc = str(tmp_path / "m.qnt.safetensors")
    r = quantize_file([str(d)], arc, Spec(bits=4, granularity="group", group_size=16))
    assert {x.name for x in r.tensors} == set(t)
    mlp = next(x for x in r.tensors if x.name == "layers.0.mlp.weight")
    assert mlp.sqnr_db > 15  # the real tensor, not the zeros of the stale copy
    out = tmp_path / "restored"
    dequantize_file(arc, str(out), shard_size="40kB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(t)
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in t.values())
    files = sorted(os.listdir(out))
    assert len(files) > 2 and all(f.startswith("model-") for f in files if f.endswith(".safetensors"))
    with Sources([str(out)]) as s:
        back = {ref.name: ref for ref in s.refs}
        for name, x in t.items():
            assert (back[name].shape, back[name].np_dtype) == (x.shape, x.dtype)
        np.testing.assert_array_equal(back["position_ids"].load(), t["position_ids"])
        np.testing.assert_array_equal(back["layers.0.norm.weight"].load(), t["layers.0.norm.weight"])
        for shard in {index["weight_map"][n] for n in t}:
            with SafetensorsFile(str(out / shard)) as st:
                assert st.entries and sum(e.nbytes for e in st.entries.values()) <= 40_000 or len(st.entries) == 1


def test_single_shard_folder_output(sharded, tmp_path):
    d, t = sharded
    arc = str(tmp_path / "m.qnt.safetensors")
    quantize_file([str(d / "model.safetensors.index.json")], arc)
    out = tmp_path / "one"
    dequantize_file(arc, str(out) + os.sep)
    assert os.listdir(out) == ["model.safetensors"]


@pytest.mark.parametrize("text, size", [("2GB", 2 * 10**9), ("500MB", 5 * 10**8), ("1GiB", 2**30), ("1000", 1000),
                                        ("1.5kB", 1500)])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["two", "-1GB", "5XB", "0"])
def test_parse_size_rejects(text):
    with pytest.raises(ConfigError):
        parse_size(text)


@pytest.fixture
def workers_always(monkeypatch):
    """Use worker processes even for the small test inputs."""
    import quantcli.pipeline.parallel
    monkeypatch.setattr(quantcli.pipeline.parallel, "PARALLEL_MIN_BYTES", 0)


def test_jobs_do_not_change_bytes(sharded, tmp_path, workers_always):
    d, _ = sharded
    outs = []
    for jobs in (1, 2, 3):
        out = tmp_path / f"j{jobs}.qnt.safetensors"
        quantize_file([str(d)], str(out), Spec(bits=3, scheme="asymmetric", granularity="group", group_size=8),
                      jobs=jobs)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]


def test_jobs_error_leaves_nothing(tmp_path, workers_always):
    x = np.ones((8, 8), np.float32)
    bad = x.copy()
    bad[3, 3] = np.inf
    save_file({f"w{i}": (bad if i == 5 else x) for i in range(10)}, str(tmp_path / "m.safetensors"))
    with pytest.raises(InputError, match="tensor 'w5': holds 1 NaN or Inf"):
        quantize_file([str(tmp_path / "m.safetensors")], str(tmp_path / "o.qnt.safetensors"), jobs=2)
    assert os.listdir(tmp_path) == ["m.safetensors"]


RECIPE = """
[default]
bits = 4
scheme = "asymmetric"
granularity = "group"
group_size = 16

[[rule]]
pattern = "embed"
keep = true

[[rule]]
pattern = 'attn\\.weight$'
bits = 8
granularity = "channel"
scheme = "symmetric"
"""


def test_recipe_first_match_wins(sharded, tmp_path):
    d, _ = sharded
    (tmp_path / "r.toml").write_text(RECIPE)
    r = quantize_file([str(d)], str(tmp_path / "m.qnt.safetensors"), recipe=str(tmp_path / "r.toml"))
    by = {t.name: t for t in r.tensors}
    assert by["embed.weight"].note == "kept: recipe rule 1 (embed)"
    assert by["layers.0.attn.weight"].label == "int8 sym channel"
    assert by["layers.1.mlp.weight"].label == "int4 asym g16"
    assert by["layers.0.norm.weight"].note.startswith("kept: 1-D")


@pytest.mark.parametrize("text, message", [
    ("[default]\nbitz = 3\n", "unknown key"),
    ("[[rule]]\nbits = 3\n", "needs a pattern"),
    ("[[rule]]\npattern = '('\n", "not a valid regular expression"),
    ("[default]\nbits = 99\n", "--bits"),
    ("[weird]\n", "unknown section"),
    ("not toml [", "not a valid TOML"),
])
def test_bad_recipes(tmp_path, text, message):
    (tmp_path / "r.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_recipe(str(tmp_path / "r.toml"))


def test_empty_skip_differs_from_no_skip(sharded, tmp_path):
    d, _ = sharded
    a = quantize_file([str(d)], str(tmp_path / "a.qnt.safetensors"))
    b = quantize_file([str(d)], str(tmp_path / "b.qnt.safetensors"), skip="")
    assert sum(t.quantized for t in a.tensors) == 5 and sum(t.quantized for t in b.tensors) == 0


def test_dry_run_sizes_match_the_archive(sharded, tmp_path):
    d, _ = sharded
    (tmp_path / "r.toml").write_text(RECIPE)
    plan = plan_file([str(d)], recipe=str(tmp_path / "r.toml"))
    r = quantize_file([str(d)], str(tmp_path / "m.qnt.safetensors"), recipe=str(tmp_path / "r.toml"))
    assert plan.stored_bytes == [t.stored_bytes for t in r.tensors]
    assert 0 <= plan.predicted_archive_bytes - r.archive_bytes < 0.01 * r.archive_bytes  # an upper bound, close


def test_cli_dry_run_writes_nothing(sharded, tmp_path):
    d, _ = sharded
    before = sorted(os.listdir(tmp_path))
    res = CliRunner().invoke(app, ["quantize", str(d), "--dry-run", "--json", "--bits", "4", "--granularity",
                                   "group", "--group-size", "16", "--skip", "embed"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["dry_run"] and doc["totals"]["bits_per_weight"] == pytest.approx(4 + 16 / 16)
    assert sorted(os.listdir(tmp_path)) == before
    res = CliRunner().invoke(app, ["quantize", str(d), "-o", str(tmp_path / "x.qnt.safetensors"), "--jobs", "0"])
    assert res.exit_code == 2 and "--jobs must be at least 1" in res.stderr


@pytest.mark.parametrize("processes", [False, True])
def test_parallel_reads_of_one_file_get_their_own_tensor(tmp_path, monkeypatch, processes):
    """Many tensors of one shard read at once (threads of the planner, or worker processes):
    positional reads, no shared file offset."""
    import quantcli.pipeline.parallel
    monkeypatch.setattr(quantcli.pipeline.parallel, "PARALLEL_MIN_BYTES", 0 if processes else 10**18)
    rng = np.random.default_rng(5)
    tensors = {f"w{i:02d}": rng.normal(0, 1 + i, (256, 192)).astype(np.float32) for i in range(24)}
    save_file(tensors, str(tmp_path / "m.safetensors"))
    a, b = tmp_path / "a.qnt.safetensors", tmp_path / "b.qnt.safetensors"
    quantize_file([str(tmp_path / "m.safetensors")], str(a), jobs=1)
    r = quantize_file([str(tmp_path / "m.safetensors")], str(b), jobs=4)
    assert a.read_bytes() == b.read_bytes()
    for t in r.tensors:  # each scale matches its own tensor's range, not a neighbour's
        assert t.max_abs_err < (1 + int(t.name[1:])) * 6 / 127
