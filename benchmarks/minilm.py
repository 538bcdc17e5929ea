"""all-MiniLM-L6-v2 as a sentence encoder, to score quantized weights by what they do.

The model is a 6-layer BERT (12 heads, hidden 384, GELU in its erf form, post-LayerNorm with eps
1e-12). sentence-transformers turns it into a sentence encoder by mean-pooling the last hidden
states over the real (unpadded) tokens and L2-normalising; `embed` does the same. The tokenizer is
BERT's uncased WordPiece: clean and lowercase the text, strip accents, split on whitespace and
punctuation (each CJK character alone), then split each word greedily into the longest pieces in
vocab.txt ("##" marks a continuation), wrapped in [CLS] ... [SEP] and cut to 128 tokens.

    weights = load_weights(MODEL)
    e = embed(weights, ["A man is playing a guitar."])          # [1, 384], unit rows
    embedding_cosine(weights, load_archive("m.qnt.safetensors"), sentences)

Run as a script it prints sanity figures and the forward pass's time on sentences_eval.txt.

The tokenizer and the forward pass live in the package (quantcli/bert.py, which
`quant collect-importance --numpy-minilm` runs); this module adds the files, the embeddings and
the scores.
"""

from __future__ import annotations

import functools
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from quantcli.calibration.bert import (HEADS, LN_EPS, MAX_TOKENS, MAX_WORD_CHARS, Tokenizer, _dense,  # noqa: E402,F401
                           _layer_norm, _linear_ready, hidden_states, pad_batch)
from quantcli.calibration.bert import as_float32 as _f32  # noqa: E402
from quantcli.io.safetensors import SafetensorsFile  # noqa: E402

MODEL_DIR = os.path.join(ROOT, ".cache", "all-minilm-l6-v2")
MODEL = os.path.join(MODEL_DIR, "model.safetensors")
VOCAB = os.path.join(MODEL_DIR, "vocab.txt")
EVAL_SENTENCES = os.path.join(HERE, "sentences_eval.txt")
CALIB_SENTENCES = os.path.join(HERE, "sentences_calib.txt")
LAYERS, HIDDEN = 6, 384


@functools.lru_cache(maxsize=4)
def tokenizer(vocab_path: str = VOCAB) -> Tokenizer:
    return Tokenizer(vocab_path)


# ----------------------------------------------------------------------------- weights

def load_weights(path: str = MODEL) -> dict[str, np.ndarray]:
    """Every tensor of a .safetensors file, by name (float tensors as float32)."""
    with SafetensorsFile(path) as f:
        return {name: _f32(f.read(name)) for name in f.entries}


def load_archive(path: str) -> dict[str, np.ndarray]:
    """Every tensor of a quant archive, decoded to the values a user of the archive gets."""
    import quantcli
    with quantcli.open_archive(path) as archive:
        return {t.name: _f32(archive.decode(t)) for t in archive.tensors}



def read_sentences(path: str) -> list[str]:
    """Non-empty lines of a sentence file."""
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def embed(weights: dict[str, np.ndarray], sentences: list[str], batch: int = 64,
          vocab: str = VOCAB) -> np.ndarray:
    """Unit-length sentence embeddings [n, 384]: mean of the last hidden states over real tokens.

    Sentences are batched by length so little time goes to padding; the order of the input is kept."""
    tok = tokenizer(vocab)
    weights = _linear_ready(weights)
    encoded = [tok.encode(s) for s in sentences]
    order = np.argsort([len(e) for e in encoded], kind="stable")
    out = np.empty((len(sentences), HIDDEN), np.float32)
    for lo in range(0, len(order), batch):
        idx = order[lo:lo + batch]
        ids, mask = pad_batch(encoded, idx)
        h = hidden_states(weights, ids, mask)
        pooled = (h * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
        out[idx] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return out


def embedding_cosine(weights_float: dict[str, np.ndarray], weights_quant: dict[str, np.ndarray],
                     sentences: list[str], reference: np.ndarray | None = None) -> float:
    """Mean cosine between each sentence's embedding under the two weight sets.

    Pass `reference` (embed(weights_float, sentences)) to skip recomputing the float side."""
    a = embed(weights_float, sentences) if reference is None else reference
    b = embed(weights_quant, sentences)
    return float(np.mean(np.sum(a * b, axis=1)))


def main() -> int:
    w = load_weights()
    sentences = read_sentences(EVAL_SENTENCES)
    embed(w, sentences[:8])
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        e = embed(w, sentences)
        times.append(time.perf_counter() - t0)
    print(f"{len(sentences)} sentences: forward pass median {np.median(times):.2f} s of 3 runs")
    print(f"float vs float cosine: {embedding_cosine(w, w, sentences, reference=e):.6f}")
    pairs = [("A man is playing a guitar.", "Someone is strumming a guitar."),
             ("A man is playing a guitar.", "The stock market fell sharply today.")]
    for a, b in pairs:
        ea, eb = embed(w, [a, b])
        print(f"{float(ea @ eb):.4f}  {a!r} vs {b!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
