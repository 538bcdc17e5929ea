"""A float32 numpy forward pass of all-MiniLM-L6-v2, to score quantized weights by what they do.

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
"""

from __future__ import annotations

import functools
import os
import sys
import time
import unicodedata
from typing import Callable

import numpy as np
from scipy.special import erf

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from quantcli.safetensors_io import SafetensorsFile  # noqa: E402

MODEL_DIR = os.path.join(ROOT, ".cache", "all-minilm-l6-v2")
MODEL = os.path.join(MODEL_DIR, "model.safetensors")
VOCAB = os.path.join(MODEL_DIR, "vocab.txt")
EVAL_SENTENCES = os.path.join(HERE, "sentences_eval.txt")
CALIB_SENTENCES = os.path.join(HERE, "sentences_calib.txt")

LAYERS, HEADS, HIDDEN = 6, 12, 384
LN_EPS = 1e-12
MAX_TOKENS = 128
MAX_WORD_CHARS = 100  # BERT maps longer words to [UNK] without trying pieces


# ----------------------------------------------------------------------------- tokenizer

def _is_punct(ch: str) -> bool:
    """BERT counts every non-alphanumeric ASCII symbol as punctuation, plus Unicode's P* classes."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class Tokenizer:
    """BERT's uncased WordPiece tokenizer over a vocab.txt (one token a line, id = line number)."""

    def __init__(self, vocab_path: str = VOCAB, max_tokens: int = MAX_TOKENS):
        with open(vocab_path, encoding="utf-8") as f:
            self.vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
        self.max_tokens = max_tokens
        self.cls, self.sep, self.unk = self.vocab["[CLS]"], self.vocab["[SEP]"], self.vocab["[UNK]"]

    def basic(self, text: str) -> list[str]:
        """Words and punctuation marks: cleaned, lowercased, accents stripped."""
        out = []
        for ch in text:  # control characters go, whitespace becomes a space, CJK stands alone
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD:
                continue
            cat = unicodedata.category(ch)
            if ch in " \t\n\r" or cat == "Zs":
                out.append(" ")
            elif cat in ("Cc", "Cf"):
                continue
            elif _is_cjk(cp):
                out.append(f" {ch} ")
            else:
                out.append(ch)
        words = []
        for word in "".join(out).lower().split():
            word = "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")
            start = 0
            for i, ch in enumerate(word):
                if _is_punct(ch):
                    if i > start:
                        words.append(word[start:i])
                    words.append(ch)
                    start = i + 1
            if start < len(word):
                words.append(word[start:])
        return words

    def wordpiece(self, word: str) -> list[int]:
        """Greedy longest-match pieces of one word; [UNK] for the whole word if any part has none."""
        if len(word) > MAX_WORD_CHARS:
            return [self.unk]
        ids, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    start = end
                    break
            else:
                return [self.unk]
        return ids

    def encode(self, text: str) -> list[int]:
        """[CLS] pieces [SEP], truncated so the whole is at most max_tokens long."""
        ids = [i for word in self.basic(text) for i in self.wordpiece(word)]
        return [self.cls] + ids[:self.max_tokens - 2] + [self.sep]


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


def _f32(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32) if a.dtype.kind == "f" or a.dtype.name == "bfloat16" else a


def read_sentences(path: str) -> list[str]:
    """Non-empty lines of a sentence file."""
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


# ----------------------------------------------------------------------------- forward pass

def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    xc = x - mu
    var = (xc * xc).mean(-1, keepdims=True)
    return xc / np.sqrt(var + LN_EPS) * w + b


def _dense(x: np.ndarray, w: dict[str, np.ndarray], name: str) -> np.ndarray:
    """A torch Linear, x @ W.T + b, with W.T precomputed contiguous by `_linear_ready` (BLAS runs
    about twice as fast on it as on a transposed view) and x flattened so it is one BLAS call."""
    wt = w[name + ".weight.T"]
    return (x.reshape(-1, x.shape[-1]) @ wt).reshape(*x.shape[:-1], wt.shape[1]) + w[name + ".bias"]


def _linear_ready(w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The weights plus a contiguous transpose of every encoder Linear's weight."""
    out = dict(w)
    for name, a in w.items():
        if name.startswith("encoder.") and name.endswith(".weight") and a.ndim == 2:
            out[name + ".T"] = np.ascontiguousarray(a.T, dtype=np.float32)
    return out


def hidden_states(w: dict[str, np.ndarray], ids: np.ndarray, mask: np.ndarray,
                  record: Callable[[str, np.ndarray], None] | None = None) -> np.ndarray:
    """Last hidden states [B, T, hidden] of token ids [B, T] with mask [B, T] (1 = real token).

    The depth and width come from the weights (all-MiniLM-L6-v2: 6 layers, 384 wide; 12 heads
    always), so small synthetic models of the same architecture run too. `record(name, rows)`, when
    given, sees what each weight is applied to, real tokens only (padding rows are left out): for
    every encoder Linear the rows of its input x, float32 [real tokens, in], under the weight's
    name; for each embedding table the int64 row ids read, [real tokens]. It only observes: the
    result is the same with or without it."""
    f32 = np.float32
    if "encoder.layer.0.attention.self.query.weight.T" not in w:
        w = _linear_ready(w)
    b, t = ids.shape
    real = mask.astype(bool)

    if record is not None:
        record("embeddings.word_embeddings.weight", ids[real])
        record("embeddings.position_embeddings.weight", np.broadcast_to(np.arange(t, dtype=np.int64), (b, t))[real])
        record("embeddings.token_type_embeddings.weight", np.zeros(int(real.sum()), np.int64))

    def dense(a: np.ndarray, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """_dense, shown to `record` first (`rows`: a[real] when the caller already has it)."""
        if record is not None:
            record(name + ".weight", a[real] if rows is None else rows)
        return _dense(a, w, name)

    x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:t]
         + w["embeddings.token_type_embeddings.weight"][0])
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    hidden = x.shape[-1]
    layers = sum(1 for name in w if name.endswith(".attention.self.query.weight"))
    head = hidden // HEADS
    bias = ((1.0 - mask[:, None, None, :]) * np.finfo(f32).min).astype(f32)  # padding gets no attention
    scale = f32(1.0 / np.sqrt(head))
    for i in range(layers):
        p = f"encoder.layer.{i}."
        x_rows = x[real] if record is not None else None  # one gather shared by query, key and value
        q, k, v = (dense(x, p + "attention.self." + n, x_rows).reshape(b, t, HEADS, head).transpose(0, 2, 1, 3)
                   for n in ("query", "key", "value"))
        s = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(0, 2, 1, 3).reshape(b, t, hidden)
        x = _layer_norm(dense(ctx, p + "attention.output.dense") + x,
                        w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"])
        h = dense(x, p + "intermediate.dense")
        h = h * f32(0.5) * (f32(1.0) + erf(h * f32(1.0 / np.sqrt(2.0))))
        x = _layer_norm(dense(h, p + "output.dense") + x,
                        w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
    return x


def pad_batch(encoded: list[list[int]], idx: "np.ndarray | list[int]") -> tuple[np.ndarray, np.ndarray]:
    """(token ids [batch, longest], mask 1/0 of real tokens) for the sentences `idx` of `encoded`."""
    t = max(len(encoded[i]) for i in idx)
    ids = np.zeros((len(idx), t), np.int64)
    mask = np.zeros((len(idx), t), np.float32)
    for r, i in enumerate(idx):
        ids[r, :len(encoded[i])] = encoded[i]
        mask[r, :len(encoded[i])] = 1.0
    return ids, mask


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
