"""benchmarks/minilm.py: the WordPiece tokenizer and the numpy forward pass of all-MiniLM-L6-v2.

The token ids below were checked once against transformers' BertTokenizer and BertTokenizerFast on
the same vocab.txt (all 592 sentence-file lines plus accent, CJK, control-character and overlong-word
cases agreed exactly), and the embeddings against transformers' BertModel in torch (max abs
difference 1.6e-7 over those sentences); torch is not a dependency, so the figures are pinned here.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import minilm  # noqa: E402

pytestmark = pytest.mark.skipif(not (os.path.exists(minilm.MODEL) and os.path.exists(minilm.VOCAB)),
                                reason="all-MiniLM-L6-v2 or its vocab.txt is absent (run tools/fetch_model.py)")


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    return minilm.load_weights()


def test_tokenizer_ids():
    tok = minilm.tokenizer()
    assert tok.encode("The quick brown fox jumps over the lazy dog.") == [
        101, 1996, 4248, 2829, 4419, 14523, 2058, 1996, 13971, 3899, 1012, 102]
    # accents stripped, case folded, each punctuation mark alone, "unaffable" split into una ##ffa ##ble
    assert tok.basic("Héllo, WORLD!! naïve café; unaffable") == [
        "hello", ",", "world", "!", "!", "naive", "cafe", ";", "unaffable"]
    assert tok.encode("Héllo, WORLD!! naïve café; unaffable") == [
        101, 7592, 1010, 2088, 999, 999, 15743, 7668, 1025, 14477, 20961, 3468, 102]
    assert [tok.vocab["una"], tok.vocab["##ffa"], tok.vocab["##ble"]] == [14477, 20961, 3468]
    assert tok.encode("x" * 101 + " ok") == [101, tok.unk, 7929, 102]  # over 100 characters: [UNK]


def test_tokenizer_truncates_to_128():
    ids = minilm.tokenizer().encode("word " * 300)
    assert len(ids) == 128 and ids[0] == 101 and ids[-1] == 102


def test_sentence_files_are_disjoint_and_sized():
    ev = minilm.read_sentences(minilm.EVAL_SENTENCES)
    ca = minilm.read_sentences(minilm.CALIB_SENTENCES)
    assert len(ev) >= 280 and len(ca) >= 280
    assert len(set(ev)) == len(ev) and len(set(ca)) == len(ca) and not set(ev) & set(ca)


def test_embeddings_unit_norm_and_order_independent(weights):
    sentences = minilm.read_sentences(minilm.EVAL_SENTENCES)[:20]
    e = minilm.embed(weights, sentences, batch=7)
    assert e.shape == (20, 384) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    # batching and padding must not change a sentence's embedding
    alone = np.stack([minilm.embed(weights, [s])[0] for s in sentences[:4]])
    np.testing.assert_allclose(e[:4], alone, atol=2e-6)
    assert minilm.embedding_cosine(weights, weights, sentences) == pytest.approx(1.0, abs=1e-6)


def test_paraphrases_closer_than_unrelated(weights):
    def cos(a: str, b: str) -> float:
        ea, eb = minilm.embed(weights, [a, b])
        return float(ea @ eb)

    # measured: 0.7185, 0.6468, -0.0540, 0.0216
    assert cos("A man is playing a guitar.", "Someone is strumming a guitar.") == pytest.approx(0.7185, abs=2e-3)
    assert cos("A woman is peeling a potato.", "Someone is removing the skin from a potato.") > 0.6
    assert cos("A man is playing a guitar.", "The stock market fell sharply today.") < 0.1
    assert cos("The cat is sleeping on a warm windowsill.", "The jury found the defendant not guilty.") < 0.1


def test_archive_weights(weights, tmp_path):
    """Decoded archive tensors drive the same forward pass; 8 bits barely moves the embeddings, 3 bits does."""
    import quantcli
    sentences = minilm.read_sentences(minilm.EVAL_SENTENCES)[:40]
    ref = minilm.embed(weights, sentences)
    cosines = []
    for bits in (8, 3):
        out = str(tmp_path / f"m{bits}.qnt.safetensors")
        quantcli.quantize_file([minilm.MODEL], out, quantcli.Spec(bits=bits), jobs=1)
        q = minilm.load_archive(out)
        assert set(q) == set(weights) and q["embeddings.position_ids"].dtype == np.int64
        cosines.append(minilm.embedding_cosine(weights, q, sentences, reference=ref))
    assert cosines[0] > 0.999  # measured 0.99954
    assert 0.50 < cosines[1] < 0.62  # measured 0.5661
