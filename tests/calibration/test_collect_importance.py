"""quant collect-importance (quantcli/collect.py): the calibration statistics `--importance FILE` reads.

Most tests run the numpy path on a tiny random model of MiniLM's architecture (2 layers, 24 wide,
12 heads of 2) with its own small vocabulary; the statistics are checked against sums computed
here from the forward pass's own inputs. They run the installed command through typer's runner.
The torch tests compare the transformers path with the numpy one and skip when torch or
transformers is not installed (they are not test dependencies).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from typer.testing import CliRunner

from quantcli.calibration import collect as collect_lib
from quantcli.cli.commands import app
from quantcli.errors import InputError
from quantcli.io.output import SafetensorsWriter
from quantcli.io.safetensors import SafetensorsFile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import minilm  # noqa: E402


def main(argv: list[str]) -> int:
    """`quant collect-importance ARGV`: its exit status; its stderr is passed on to capsys."""
    result = CliRunner().invoke(app, ["collect-importance", *argv])
    sys.stderr.write(result.stderr)
    return result.exit_code


WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "ran", "far", "away", "big", "small", "red", "blue",
         "##s", "##ed", ".", ",", "!"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
SENTENCES = ["the cat sat on the mat.", "", "a dog ran far away!", "cats, dogs.",
             "the big red dog sat on a small blue mat, far away.", "a cat.", "   ", "red blue red blue red",
             "the zebra ran."]  # "zebra" is [UNK]; two lines are empty
HIDDEN, INTER, LAYERS, POSITIONS = 24, 48, 2, 20
LINEARS = [f"encoder.layer.{i}.{n}.weight" for i in range(LAYERS) for n in
           ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
            "intermediate.dense", "output.dense")]
TABLES = {"embeddings.word_embeddings.weight": len(VOCAB), "embeddings.position_embeddings.weight": POSITIONS,
          "embeddings.token_type_embeddings.weight": 2}


def tiny_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights with every tensor name and shape of a BERT checkpoint, pooler included."""
    rng = np.random.default_rng(seed)
    shapes = {name: (rows, HIDDEN) for name, rows in TABLES.items()}
    shapes.update({"embeddings.LayerNorm.weight": (HIDDEN,), "embeddings.LayerNorm.bias": (HIDDEN,),
                   "pooler.dense.weight": (HIDDEN, HIDDEN), "pooler.dense.bias": (HIDDEN,)})
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        for n in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            shapes[p + n + ".weight"], shapes[p + n + ".bias"] = (HIDDEN, HIDDEN), (HIDDEN,)
        shapes[p + "intermediate.dense.weight"], shapes[p + "intermediate.dense.bias"] = (INTER, HIDDEN), (INTER,)
        shapes[p + "output.dense.weight"], shapes[p + "output.dense.bias"] = (HIDDEN, INTER), (HIDDEN,)
        for n in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[p + n + ".weight"], shapes[p + n + ".bias"] = (HIDDEN,), (HIDDEN,)
    out = {}
    for name, shape in shapes.items():
        a = rng.normal(0, 0.3, shape)
        out[name] = (a + 1.0 if name.endswith("LayerNorm.weight") else a).astype(np.float32)
    return out


def write_model(folder: str, weights: dict[str, np.ndarray]) -> str:
    writer = SafetensorsWriter(os.path.join(folder, "model.safetensors"))
    for name, a in weights.items():
        writer.add(name, a)
    writer.finish()
    with open(os.path.join(folder, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(VOCAB) + "\n")
    return os.path.join(folder, "model.safetensors")


@pytest.fixture()
def tiny(tmp_path):
    """(model path, text path) of the tiny model and the sentences above."""
    model = write_model(str(tmp_path), tiny_weights())
    text = tmp_path / "calib.txt"
    text.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return model, str(text)


def read(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    with SafetensorsFile(path) as f:
        return {n: f.read(n) for n in f.entries}, f.metadata


def close(got: np.ndarray, expect: np.ndarray) -> None:
    """Equal to float32 precision: 1e-5 relative, or 1e-6 of the array's largest value."""
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6 * float(np.abs(expect).max()))


def collect(model: str, text: str, out: str, *extra: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    assert main(["--numpy-minilm", model, text, "-o", out, *extra]) == 0
    return read(out)


def direct(model: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
    """Every Linear's input rows and every table's row ids over the sentences, one at a time
    (no padding anywhere), straight from the forward pass: the reference the tool must match."""
    w = minilm.load_weights(model)
    tok = minilm.Tokenizer(os.path.join(os.path.dirname(model), "vocab.txt"), POSITIONS)
    rows: dict[str, list[np.ndarray]] = {}
    for s in SENTENCES:
        if s.strip():
            ids = np.array([tok.encode(s.strip())])
            minilm.hidden_states(w, ids, np.ones(ids.shape, np.float32),
                                 record=lambda name, r: rows.setdefault(name, []).append(r.copy()))
    lin = {n: np.concatenate(rows[n]).astype(np.float64) for n in LINEARS}
    ids_ = {n: np.concatenate(rows[n]) for n in TABLES}
    return lin, ids_, len(ids_["embeddings.word_embeddings.weight"])


def test_means_and_row_fractions_match_the_forward_pass(tiny, tmp_path):
    model, text = tiny
    got, meta = collect(model, text, str(tmp_path / "imp.safetensors"), "--gram", "--batch", "3")
    lin, ids, tokens = direct(model)
    assert meta["tokens"] == str(tokens) == str(sum(len(minilm.Tokenizer(
        os.path.join(os.path.dirname(model), "vocab.txt")).encode(s.strip())) for s in SENTENCES if s.strip()))
    for name in LINEARS:
        x = lin[name]
        close(got[name], (x * x).mean(0))  # batched float32 forward vs one by one: float32 rounding apart
        close(got[name + ".gram"], x.T @ x / len(x))
    for name, n in TABLES.items():
        expect = np.bincount(ids[name], minlength=n) / tokens
        np.testing.assert_allclose(got[name + ".rows"], expect, rtol=1e-6)
        assert abs(float(got[name + ".rows"].astype(np.float64).sum()) - 1.0) < 1e-6
    assert got["embeddings.token_type_embeddings.weight.rows"].tolist() == [1.0, 0.0]
    # rows count real tokens: 7 non-empty sentences, so [CLS] and [SEP] read 7 times each, [PAD] never
    words = got["embeddings.word_embeddings.weight.rows"] * tokens
    assert np.rint(words[[0, 2, 3]]).tolist() == [0, 7, 7] and round(float(words[1])) == 1


def test_gram_diagonal_is_the_mean_entry_and_gram_is_symmetric_psd(tiny, tmp_path):
    model, text = tiny
    got, _ = collect(model, text, str(tmp_path / "imp.safetensors"), "--gram")
    for name in LINEARS:
        g = got[name + ".gram"]
        assert np.array_equal(np.diagonal(g), got[name])  # to the bit
        assert np.array_equal(g, g.T)
        eig = np.linalg.eigvalsh(g.astype(np.float64))
        assert eig.min() >= -1e-6 * eig.max()
    plain, _ = collect(model, text, str(tmp_path / "plain.safetensors"))
    assert sorted(plain) == sorted(n for n in got if not n.endswith(".gram"))
    for name in plain:  # --gram changes nothing else
        np.testing.assert_allclose(plain[name], got[name], rtol=1e-6)


def test_padding_is_excluded(tiny, tmp_path):
    """Batches mixing long and short sentences (most rows padded) give what one-by-one gives."""
    model, text = tiny
    one, m1 = collect(model, text, str(tmp_path / "one.safetensors"), "--batch", "1", "--gram")
    many, m2 = collect(model, text, str(tmp_path / "many.safetensors"), "--batch", "64", "--gram")
    assert m1["tokens"] == m2["tokens"] and sorted(one) == sorted(many)
    for name in one:
        if name.endswith(".rows"):
            assert np.array_equal(one[name], many[name])
        else:
            close(many[name], one[name])


def test_file_names_shapes_and_metadata(tiny, tmp_path):
    model, text = tiny
    out = str(tmp_path / "imp.safetensors")
    got, meta = collect(model, text, out, "--gram")
    w = minilm.load_weights(model)
    expect = {n: (w[n].shape[1],) for n in LINEARS}
    expect.update({n + ".gram": (w[n].shape[1],) * 2 for n in LINEARS})
    expect.update({n + ".rows": (rows,) for n, rows in TABLES.items()})
    assert {n: a.shape for n, a in got.items()} == expect  # no pooler: mean pooling never runs it
    assert all(a.dtype == np.float32 for a in got.values())
    assert set(meta) == {"format", "tokens", "source"} and meta["format"] == "quant-importance"
    assert "model.safetensors" in meta["source"] and "calib.txt" in meta["source"]
    with open(out, "rb") as f:  # the official layout: 8-byte length, JSON header, float32 data
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    assert header["__metadata__"] == meta and header[LINEARS[0]]["dtype"] == "F32"


def test_max_tokens_takes_leading_sentences(tiny, tmp_path):
    model, text = tiny
    tok = minilm.Tokenizer(os.path.join(os.path.dirname(model), "vocab.txt"))
    lengths = [len(tok.encode(s.strip())) for s in SENTENCES if s.strip()]
    budget = lengths[0] + lengths[1] + lengths[2] - 1  # the third sentence does not fit
    got, meta = collect(model, text, str(tmp_path / "imp.safetensors"), "--max-tokens", str(budget))
    assert meta["tokens"] == str(lengths[0] + lengths[1]) and "2 sentences" in meta["source"]
    positions = np.bincount(np.concatenate([np.arange(n) for n in lengths[:2]]), minlength=POSITIONS)
    np.testing.assert_allclose(got["embeddings.position_embeddings.weight.rows"], positions / sum(lengths[:2]), rtol=1e-6)
    assert main(["--numpy-minilm", model, text, "-o", str(tmp_path / "x.safetensors"), "--max-tokens", "3"]) == 2


def test_record_does_not_change_the_forward_pass(tiny):
    model, _ = tiny
    w = minilm.load_weights(model)
    ids = np.array([[2, 5, 7, 8, 3, 0, 0], [2, 9, 10, 11, 12, 13, 3]])
    mask = (np.arange(7) < np.array([[5], [7]])).astype(np.float32)
    seen: list[str] = []
    plain = minilm.hidden_states(w, ids, mask)
    observed = minilm.hidden_states(w, ids, mask, record=lambda name, rows: seen.append(name))
    assert np.array_equal(plain, observed)
    assert sorted(seen) == sorted([*LINEARS, *TABLES])


@pytest.mark.skipif(not os.path.exists(minilm.MODEL), reason="all-MiniLM-L6-v2 is absent (run tools/fetch_model.py)")
def test_record_does_not_change_the_real_forward_pass():
    w = minilm.load_weights()
    tok = minilm.tokenizer()
    enc = [tok.encode(s) for s in minilm.read_sentences(minilm.CALIB_SENTENCES)[:6]]
    t = max(map(len, enc))
    ids = np.array([e + [0] * (t - len(e)) for e in enc])
    mask = (ids != 0).astype(np.float32)
    assert np.array_equal(minilm.hidden_states(w, ids, mask),
                          minilm.hidden_states(w, ids, mask, record=lambda name, rows: None))


def test_errors_are_one_line_and_leave_no_file(tiny, tmp_path, capsys):
    model, text = tiny
    out = tmp_path / "imp.safetensors"
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n", encoding="utf-8")
    cases = [([model, str(tmp_path / "missing.txt")], "no such file"),
             ([model, str(empty)], "holds no sentences"),
             ([str(tmp_path / "calib.txt"), text], "not a safetensors file"),
             ([model, text, "--batch", "0"], "--batch must be at least 1")]
    for args, message in cases:
        assert main(["--numpy-minilm", *args, "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert main(["--numpy-minilm", model, text, "-o", model]) == 2  # never overwrites an input
    assert "inputs are never overwritten" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["calib.txt", "empty.txt", "model.safetensors", "vocab.txt"]


def test_output_is_atomic(tiny, tmp_path, monkeypatch, capsys):
    """A failure while publishing leaves the old output as it was and no temp file behind."""
    model, text = tiny
    out = tmp_path / "imp.safetensors"
    out.write_bytes(b"old")
    import quantcli.io.output

    def refuse(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(quantcli.io.output.os, "replace", refuse)
    assert main(["--numpy-minilm", model, text, "-o", str(out)]) == 1
    assert "disk full" in capsys.readouterr().err
    assert out.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["calib.txt", "imp.safetensors", "model.safetensors", "vocab.txt"]


def test_torch_missing_names_what_to_install(tiny, tmp_path, monkeypatch, capsys):
    model, text = tiny
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    assert main([os.path.dirname(model), text, "-o", str(tmp_path / "imp.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "pip install torch transformers" in err and err.count("\n") == 1
    assert not (tmp_path / "imp.safetensors").exists()


def test_name_map_adapts_prefixes():
    names = ["encoder.layer.0.attention.self.query.weight", "embeddings.word_embeddings.weight"]
    got, absent = collect_lib.name_map(["bert.encoder.layer.0.attention.self.query.weight", "embeddings.word_embeddings.weight",
                               "pooler.dense.weight"], names)
    assert got == {"bert.encoder.layer.0.attention.self.query.weight": names[0],
                   "embeddings.word_embeddings.weight": names[1]} and absent == ["pooler.dense.weight"]
    got, _ = collect_lib.name_map(["encoder.layer.0.output.dense.weight"], ["model.encoder.layer.0.output.dense.weight"])
    assert got == {"encoder.layer.0.output.dense.weight": "model.encoder.layer.0.output.dense.weight"}
    with pytest.raises(InputError, match="matches 2 tensors"):
        collect_lib.name_map(["dense.weight"], ["a.dense.weight", "b.dense.weight"])


# ----------------------------------------------------------------------------- torch path

def _torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None and importlib.util.find_spec("transformers") is not None


needs_torch = pytest.mark.skipif(not _torch_available(), reason="torch and transformers are not installed")

BERT_CONFIG = {"model_type": "bert", "hidden_act": "gelu", "layer_norm_eps": 1e-12, "num_attention_heads": 12,
               "type_vocab_size": 2, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "pad_token_id": 0}


def hf_folder(folder: str, config: dict, vocab: str, model: str | None = None, max_length: int = 128) -> str:
    """A Hugging Face folder: config, tokenizer files, the weights (a link to `model` if given)."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({**BERT_CONFIG, **config}, f)
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"do_lower_case": True, "tokenizer_class": "BertTokenizer", "model_max_length": max_length}, f)
    with open(vocab, encoding="utf-8") as src, open(os.path.join(folder, "vocab.txt"), "w", encoding="utf-8") as dst:
        dst.write(src.read())
    if model is not None:
        os.symlink(os.path.abspath(model), os.path.join(folder, "model.safetensors"))
    return folder


def compare(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        if name.endswith(".rows"):
            assert np.array_equal(a[name], b[name]), name
        else:
            close(a[name], b[name])


@needs_torch
def test_torch_path_matches_numpy_path(tiny, tmp_path):
    model, text = tiny
    config = {"vocab_size": len(VOCAB), "hidden_size": HIDDEN, "num_hidden_layers": LAYERS,
              "intermediate_size": INTER, "max_position_embeddings": POSITIONS}
    folder = hf_folder(str(tmp_path / "hf"), config, os.path.join(os.path.dirname(model), "vocab.txt"), model)
    np_stats, np_meta = collect(model, text, str(tmp_path / "np.safetensors"), "--gram")
    assert main([folder, text, "-o", str(tmp_path / "pt.safetensors"), "--gram", "--batch", "4"]) == 0
    pt_stats, pt_meta = read(str(tmp_path / "pt.safetensors"))
    assert pt_meta["tokens"] == np_meta["tokens"]
    # BertModel runs its pooler on each sentence's [CLS] row; the numpy pass mean-pools instead
    pooler = {n: pt_stats.pop(n) for n in ("pooler.dense.weight", "pooler.dense.weight.gram")}
    compare(np_stats, pt_stats)
    assert np.array_equal(np.diagonal(pooler["pooler.dense.weight.gram"]), pooler["pooler.dense.weight"])


@needs_torch
def test_torch_path_keeps_the_checkpoint_prefix(tiny, tmp_path, capsys):
    """A checkpoint saved with `bert.` names (a task model) gets statistics under those names; a
    weight transformers made up because the file lacks it (here the pooler) gets none."""
    model, text = tiny
    w = tiny_weights()
    prefixed = {"bert." + n: a for n, a in w.items() if not n.startswith("pooler.")}
    folder = str(tmp_path / "hf")
    os.makedirs(folder)
    write_model(folder, prefixed)
    config = {"architectures": ["BertForMaskedLM"], "vocab_size": len(VOCAB), "hidden_size": HIDDEN,
              "num_hidden_layers": LAYERS, "intermediate_size": INTER, "max_position_embeddings": POSITIONS}
    hf_folder(folder, config, os.path.join(os.path.dirname(model), "vocab.txt"))
    np_stats, _ = collect(model, text, str(tmp_path / "np.safetensors"))
    assert main([folder, text, "-o", str(tmp_path / "pt.safetensors")]) == 0
    assert "not recorded: pooler.dense.weight" in capsys.readouterr().err
    pt_stats, _ = read(str(tmp_path / "pt.safetensors"))
    compare({"bert." + n: a for n, a in np_stats.items()}, pt_stats)


@needs_torch
@pytest.mark.skipif(not (os.path.exists(minilm.MODEL) and os.path.exists(minilm.VOCAB)),
                    reason="all-MiniLM-L6-v2 or its vocab.txt is absent (run tools/fetch_model.py)")
def test_torch_path_matches_numpy_path_on_minilm(tmp_path):
    config = {"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6, "intermediate_size": 1536,
              "max_position_embeddings": 512}
    folder = hf_folder(str(tmp_path / "hf"), config, minilm.VOCAB, minilm.MODEL)
    text = tmp_path / "calib.txt"
    text.write_text("\n".join(minilm.read_sentences(minilm.CALIB_SENTENCES)[:40]) + "\n", encoding="utf-8")
    np_stats, np_meta = read_after(["--numpy-minilm", minilm.MODEL, str(text), "--vocab", minilm.VOCAB],
                                   tmp_path / "np.safetensors")
    pt_stats, pt_meta = read_after([folder, str(text), "--max-length", "128"], tmp_path / "pt.safetensors")
    assert np_meta["tokens"] == pt_meta["tokens"]
    assert pt_stats.pop("pooler.dense.weight").shape == (384,)
    compare(np_stats, pt_stats)


def read_after(args: list[str], out) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    assert main([*args, "-o", str(out)]) == 0
    return read(str(out))


# ----------------------------------------------------------------------------- sensitivity

def test_sensitivity_entries_are_scalars_for_every_tensor_the_pass_uses(tiny, tmp_path):
    model, text = tiny
    got, meta = collect(model, text, str(tmp_path / "imp.safetensors"), "--sensitivity")
    sens = {n[:-len(".sensitivity")]: a for n, a in got.items() if n.endswith(".sensitivity")}
    assert sorted(sens) == sorted([*LINEARS, *TABLES])  # no pooler: mean pooling never runs it
    assert all(a.shape == () and a.dtype == np.float32 and np.isfinite(a) and a >= 0 for a in sens.values())
    assert float(sens["embeddings.token_type_embeddings.weight"]) > 0  # row 0 is read by every token
    again, _ = collect(model, text, str(tmp_path / "again.safetensors"), "--sensitivity")
    assert all(np.array_equal(got[n], again[n]) for n in got)  # seeded: the same file twice
    plain, _ = collect(model, text, str(tmp_path / "plain.safetensors"))
    assert sorted(plain) == sorted(n for n in got if not n.endswith(".sensitivity"))
    from quantcli.calibration.importance import Importance
    shapes = {n: a.shape for n, a in minilm.load_weights(model).items()}
    assert Importance.open(str(tmp_path / "imp.safetensors"), shapes).sensitivity.keys() == sens.keys()


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.01, 100.0))
def test_sensitivity_of_a_linear_map_with_white_inputs_is_one(seed, scale):
    """y = x @ W.T with inputs whose Gram is a multiple of the identity: a relative weight error e
    moves that part of the output by e exactly in expectation, at any scale of W. The output here
    is [x a.T, 2 x t.T] normalised so the two parts carry 1/5 and 4/5 of its energy: a weighs 0.2,
    t (read twice as strongly) 0.8, an unused tensor 0."""
    rng = np.random.default_rng(seed)
    x = np.linalg.qr(rng.normal(size=(256, 64)))[0] * 8.0  # orthogonal columns: x.T @ x = 64 I
    w = {"a": rng.normal(size=(48, 64)) * scale, "unused": rng.normal(size=(8, 8)), "t": rng.normal(size=(48, 64))}

    def run(name, delta):
        a = w["a"] + (delta if name == "a" else 0)
        t = w["t"] + (delta if name == "t" else 0)
        return np.concatenate([x @ a.T / np.linalg.norm(w["a"]), 2 * x @ t.T / np.linalg.norm(w["t"])], axis=1)

    s = collect_lib.sensitivities(w, run, draws=4)
    assert s["unused"] == 0.0
    assert s["a"] == pytest.approx(0.2, rel=0.1)
    assert s["t"] == pytest.approx(0.8, rel=0.1)


@needs_torch
def test_audio_model_is_refused_in_one_line(tmp_path, capsys):
    """Whisper reads audio features, not token ids: refused before any tokenizer is loaded, exit 2,
    one line naming the folder, no file left (docs/IMPORTANCE.md says why)."""
    from transformers import WhisperConfig, WhisperModel
    config = WhisperConfig(vocab_size=64, num_mel_bins=8, encoder_layers=1, decoder_layers=1, d_model=16,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                           decoder_ffn_dim=32, max_source_positions=16, max_target_positions=16, pad_token_id=1,
                           bos_token_id=1, eos_token_id=2, decoder_start_token_id=3)
    folder = str(tmp_path / "whisper")
    WhisperModel(config).save_pretrained(folder)
    text = tmp_path / "calib.txt"
    text.write_text("a sentence\n", encoding="utf-8")
    out = tmp_path / "imp.safetensors"
    capsys.readouterr()
    assert main([folder, str(text), "-o", str(out)]) == 2
    lines = [x for x in capsys.readouterr().err.splitlines() if "quant" in x]  # (transformers' loading bar aside)
    assert len(lines) == 1 and "reads input_features, not text" in lines[0] and folder in lines[0]
    assert not out.exists()


@needs_torch
def test_decoder_lm_without_a_pad_token(tmp_path):
    """A GPT-2-style model whose tokenizer has no padding token (decoder LMs) is collected: the
    batch is padded with its end token, and padding still counts for nothing."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
    words = ["<unk>", "<eos>", "a", "man", "is", "playing", "the", "guitar", "dog", "runs"]
    core = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", unk_token="<unk>")
    assert tokenizer.pad_token is None
    folder = str(tmp_path / "gpt2")
    GPT2LMHeadModel(GPT2Config(vocab_size=len(words), n_positions=16, n_embd=16, n_layer=1, n_head=2)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    text = tmp_path / "calib.txt"
    sentences = ["a man is playing the guitar", "a dog runs", "the man runs"]
    text.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    out = str(tmp_path / "imp.safetensors")
    assert main([folder, str(text), "-o", out, "--batch", "3"]) == 0
    stats, meta = read(out)
    assert meta["tokens"] == str(sum(len(s.split()) for s in sentences))  # 12 real tokens, 6 padding rows not counted
    rows = stats["transformer.wte.weight.rows"]
    assert rows[1] == 0 and abs(rows.sum() - 1) < 1e-6  # the end token, used only as padding, is never read
