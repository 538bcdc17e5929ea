"""The default objective's rules decide by structure, never by tensor names (issue 20): the token
table is found by its shape and coarsened only when the checkpoint's config.json declares that no
output head reads it (planner/weights.py, docs/PLANNER.md)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcli.io.sources import CONFIG_MAX_BYTES, model_configs
from quantcli.planner import Budget, plan_budget
from quantcli.planner.weights import EMBED_FACTOR, head_free, objective_weights

BERT = {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": 2048}  # all-MiniLM-L6-v2's, in short


@pytest.mark.parametrize("config, expect", [
    (BERT, True),                                                           # a headless encoder
    ({**BERT, "tie_word_embeddings": True}, True),                          # BertConfig's default: no evidence of a head
    ({"architectures": ["XLMRobertaModel", "BertModel"]}, True),
    ({"architectures": ["T5EncoderModel"], "tie_word_embeddings": True}, True),
    ({"tie_word_embeddings": False}, True),                                 # declared untied: never the head
    ({"architectures": ["LlamaForCausalLM"], "tie_word_embeddings": False}, True),
    ({"architectures": ["BertForMaskedLM"]}, False),
    ({"architectures": ["BertForSequenceClassification"]}, False),          # any head class: no claim
    ({"architectures": ["GPT2LMHeadModel"], "tie_word_embeddings": True}, False),
    ({"architectures": ["XLMWithLMHeadModel"]}, False),
    ({"architectures": ["WhisperForConditionalGeneration"], "is_encoder_decoder": True}, False),
    ({"architectures": ["WhisperModel"], "is_encoder_decoder": True}, False),  # a generating decoder's table
    ({"architectures": ["BertModel"], "is_decoder": True}, False),
    ({"architectures": ["BertModel", "BertForMaskedLM"]}, False),
    ({"architectures": []}, False), ({"architectures": "BertModel"}, False), ({"architectures": [7]}, False),
    ({"model_type": "bert"}, False),                                        # no architectures: no evidence
])
def test_head_free(config, expect):
    assert head_free([config]) is expect
    assert head_free([config, None]) is False  # every input folder must have the evidence
    assert head_free([config, BERT]) is expect


def test_head_free_without_configs():
    assert head_free(None) is False and head_free([]) is False and head_free([None]) is False


def _weights(names, shapes, configs):
    elements = [int(np.prod(shapes[n])) for n in names]
    return objective_weights(elements, [float(n) for n in elements], names, "auto", names, shapes=shapes,
                             configs=configs)


def test_table_rule_needs_shape_and_config():
    names = ["emb", "q", "pos"]
    shapes = {"emb": (2048, 64), "q": (64, 64), "pos": (32, 64)}
    coarse = _weights(names, shapes, [BERT])
    assert coarse == [2048 * 64 / EMBED_FACTOR ** 2, 64 * 64, 32 * 64]
    assert _weights(names, shapes, None) == [2048 * 64, 64 * 64, 32 * 64]  # no config: no evidence
    assert _weights(names, shapes, [{"architectures": ["BertForMaskedLM"]}])[0] == 2048 * 64
    # a stored head turns it off whatever the config says: a copy, a transposed one, a bias over the vocabulary
    for head in [(2048, 64), (64, 2048), (2048,), (1, 2048)]:
        assert _weights(names, {**shapes, "h": head}, [BERT])[0] == 2048 * 64
    # a config alone finds no table where the shapes show none (not a vocabulary: 8x taller needed)
    assert _weights(["w", "q"], {"w": (1024, 256), "q": (64, 64)}, [BERT])[0] == 1024 * 256


@settings(max_examples=40, deadline=None)
@given(st.permutations(["embeddings.word_embeddings.weight", "model.decoder.embed_tokens.weight", "wte",
                        "lm_head.weight", "x"]), st.booleans())
def test_no_tensor_name_decides(labels, with_config):
    """The same shapes under any names get the same weights: names that the old rule keyed on
    (`word_embeddings`, `decoder`, `lm_head`) change nothing; only the config does."""
    shapes = [(4096, 128), (128, 128), (512, 128), (128, 512), (64, 128)]
    names = list(labels)
    got = _weights(names, dict(zip(names, shapes)), [BERT] if with_config else None)
    expect = _weights(["a", "b", "c", "d", "e"], dict(zip("abcde", shapes)), [BERT] if with_config else None)
    assert got == expect
    assert (got[0] < 4096 * 128) is with_config


def _write_config(folder, doc):
    with open(os.path.join(folder, "config.json"), "w") as f:
        f.write(doc if isinstance(doc, str) else json.dumps(doc))


def test_model_configs(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    _write_config(a, BERT)
    files = [str(a / "m-1.safetensors"), str(a / "m-2.safetensors"), str(b / "x.npz")]
    assert model_configs(files) == [BERT, None]  # one entry per folder, in input order; b has none
    for broken in ["{not json", "[1, 2]", "null", "\xff", "[" * 100_000, " " * CONFIG_MAX_BYTES + json.dumps(BERT)]:
        _write_config(b, broken)
        assert model_configs([str(b / "x.npz")]) == [None], broken[:20]
    (b / "config.json").unlink()
    (b / "config.json").mkdir()  # unreadable as a file: no evidence, no error
    assert model_configs([str(b / "x.npz")]) == [None]
    (b / "config.json").rmdir()
    os.mkfifo(b / "config.json")  # a pipe with no writer would block a reader forever: never opened
    assert model_configs([str(b / "x.npz")]) == [None]
    (b / "config.json").unlink()
    os.symlink("/dev/zero", b / "config.json")  # endless: never read
    assert model_configs([str(b / "x.npz")]) == [None]


def _checkpoint(folder, rng) -> str:
    tensors = {"t": (rng.standard_normal((2048, 64)) * 0.05).astype(np.float32)}
    for i in range(4):
        tensors[f"m{i}"] = (rng.standard_normal((256, 64)) * 0.05).astype(np.float32)
    from safetensors.numpy import save_file
    path = os.path.join(folder, "model.safetensors")
    save_file(tensors, path)
    return path


def test_planner_reads_the_config_beside_the_checkpoint(tmp_path):
    """End to end: the same weights plan the table coarser (fewer bytes) with a headless config
    beside them, exactly as without a config when it declares a head, and the others gain."""
    plans = {}
    for case, doc in [("none", None), ("bert", BERT), ("head", {"architectures": ["BertForMaskedLM"]})]:
        folder = tmp_path / case
        folder.mkdir()
        path = _checkpoint(str(folder), np.random.default_rng(0))
        if doc is not None:
            _write_config(folder, doc)
        plan = plan_budget([path], Budget("bpw", 3.0), sample=4096)
        plans[case] = {t.ref.name: t.choice.nbytes for t in plan.tensors if t.choice is not None}
    assert plans["head"] == plans["none"]
    assert plans["bert"]["t"] < plans["none"]["t"]
    assert all(plans["bert"][f"m{i}"] > plans["none"][f"m{i}"] for i in range(4))


def test_objectives_on_one_checkpoint():
    """relative weighs elements, mse signals; auto adds the two rules (a coarser table with the
    config's evidence, an outlying-scale tensor as mse); relative-emb is auto; sensitivity is auto
    where no sensitivity is measured and the measured ratios where they are."""
    names = ["a", "b", "pos"]
    shapes = {"a": (2048, 64), "b": (64, 64), "pos": (32, 64)}
    elements = [2048 * 64, 64 * 64, 32 * 64]
    signals = [elements[0] * 1.0, elements[1] * 1.5, elements[2] * 400.0]  # pos: RMS 20x the median
    kw = {"shapes": shapes, "configs": [BERT]}
    assert objective_weights(elements, signals, names, "relative", names, **kw) == [float(n) for n in elements]
    assert objective_weights(elements, signals, names, "mse", names, **kw) == signals
    auto = objective_weights(elements, signals, names, "auto", names, **kw)
    assert auto == [elements[0] / EMBED_FACTOR ** 2, float(elements[1]), elements[2] * 400.0]
    assert objective_weights(elements, signals, names, "relative-emb", names, **kw) == auto
    assert objective_weights(elements, signals, names, "auto", names, configs=[BERT])[0] == float(elements[0])
    sens = objective_weights(elements, signals, names, "sensitivity", names, **kw, sensitivity={"b": 2.0, "a": 1.0})
    assert sens[2] == auto[2] and sens[1] / sens[0] == pytest.approx(2.0) and sens[0] + sens[1] == auto[0] + auto[1]
    assert objective_weights(elements, signals, names, "sensitivity", names, **kw) == auto
