"""Handing an archive to a framework: `quantcli.open` reads like safetensors' `safe_open`, and
`quantcli.torch.load_model` loads into a module across wrapper prefixes and unsaved buffers,
checking names and shapes before anything is loaded."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import save_file
from typer.testing import CliRunner

import quantcli
from quantcli.cli.commands import app
from quantcli.torch import match_names

BERT = ["embeddings.word_embeddings.weight", "embeddings.position_ids", "encoder.layer.0.attention.self.query.weight",
        "encoder.layer.0.attention.self.query.bias", "pooler.dense.weight"]


def test_names_match_as_they_are():
    pairs, missing, unexpected = match_names(BERT[:1] + BERT[2:], BERT[:1] + BERT[2:])
    assert pairs == {n: n for n in BERT[:1] + BERT[2:]} and missing == [] and unexpected == []


def test_names_match_under_a_wrappers_prefix_and_unsaved_buffers_are_skipped():
    model = ["0.auto_model." + n for n in BERT if n != "embeddings.position_ids"]
    pairs, missing, unexpected = match_names(BERT, model, unsaved=["0.auto_model.embeddings.position_ids"])
    assert pairs == {n: "0.auto_model." + n for n in BERT if n != "embeddings.position_ids"}
    assert missing == [] and unexpected == []


def test_names_saved_from_a_wrapper_load_into_the_bare_model():
    pairs, missing, unexpected = match_names(["model." + n for n in BERT], BERT)
    assert pairs == {"model." + n: n for n in BERT} and missing == [] and unexpected == []


def test_what_does_not_match_is_reported_not_dropped():
    pairs, missing, unexpected = match_names(BERT + ["extra.weight"], BERT[1:] + ["head.weight"])
    assert missing == ["head.weight"] and unexpected == ["embeddings.word_embeddings.weight", "extra.weight"]
    assert set(pairs) == set(BERT[1:])


@pytest.fixture
def archive(tmp_path) -> str:
    rng = np.random.default_rng(0)
    src = tmp_path / "m.safetensors"
    save_file({"a.weight": rng.standard_normal((16, 32)).astype(np.float32),
               "a.bias": rng.standard_normal(16).astype(np.float32)}, str(src))
    out = tmp_path / "m.qnt.safetensors"
    assert CliRunner().invoke(app, ["quantize", str(src), "-o", str(out), "-q"]).exit_code == 0
    return str(out)


def test_open_reads_like_safe_open(archive):
    with quantcli.open(archive) as a:
        assert sorted(a.keys()) == ["a.bias", "a.weight"]
        w = a.get_tensor("a.weight")
        assert isinstance(w, np.ndarray) and w.shape == (16, 32) and np.array_equal(w, a["a.weight"])
        meta = a.metadata()
        assert meta["format"] == "quant-archive" and "quant.manifest" in meta
    with pytest.raises(quantcli.ConfigError):
        quantcli.open(archive, framework="jax")


def _torch():
    return pytest.importorskip("torch")


def test_open_with_framework_pt_gives_torch_tensors(archive):
    torch = _torch()
    with quantcli.open(archive, framework="pt") as a:
        t = a.get_tensor("a.weight")
        assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
        assert np.array_equal(t.numpy(), a["a.weight"])


def test_load_model_into_a_wrapper_with_an_unsaved_buffer(archive):
    torch = _torch()
    from quantcli.torch import load_model

    class Inner(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(32, 16)
            self.register_buffer("ids", torch.arange(4), persistent=False)

    wrapper = torch.nn.Sequential(Inner())
    assert load_model(wrapper, archive) == ([], [])
    assert torch.equal(wrapper[0].a.weight, torch.from_numpy(quantcli.load(archive)["a.weight"]))


def test_load_model_refuses_before_loading_anything(archive):
    torch = _torch()
    from quantcli.torch import load_model

    model = torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.Linear(16, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match="missing"):
        load_model(model, archive)
    wrong = torch.nn.ModuleDict({"a": torch.nn.Linear(16, 16)})
    with pytest.raises(RuntimeError, match="shape"):
        load_model(wrong, archive, strict=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    missing, unexpected = load_model(torch.nn.ModuleDict({"a": torch.nn.Linear(32, 16), "b": torch.nn.Linear(2, 2)}),
                                     archive, strict=False)
    assert missing == ["b.bias", "b.weight"] and unexpected == []


def test_load_with_a_dtype_too_narrow_for_the_values_is_refused(tmp_path):
    big = np.full((4, 8), 1e6, dtype=np.float32)
    big[0, 0] = 7e4  # beyond float16's 65504 after any 8-bit rounding
    save_file({"big.weight": big}, str(tmp_path / "b.safetensors"))
    out = tmp_path / "b.qnt.safetensors"
    assert CliRunner().invoke(app, ["quantize", str(tmp_path / "b.safetensors"), "-o", str(out), "-q"]).exit_code == 0
    with pytest.raises(quantcli.InputError, match="big.weight.*float16"):
        quantcli.load(str(out), dtype="float16")
    assert quantcli.load(str(out))["big.weight"].dtype == np.float32
