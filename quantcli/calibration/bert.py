"""A numpy forward pass of BERT-style encoders (all-MiniLM-L6-v2 and models of its architecture),
for `quant collect-importance --numpy-minilm` without torch.

The model is a BERT encoder (12 heads; depth and width read from the weights), GELU in its erf
form, post-LayerNorm with eps 1e-12. The tokenizer is BERT's uncased WordPiece: clean and lowercase
the text, strip accents, split on whitespace and punctuation (each CJK character alone), then split
each word greedily into the longest pieces in vocab.txt ("##" marks a continuation), wrapped in
[CLS] ... [SEP] and cut to 128 tokens. benchmarks/minilm.py builds its sentence embeddings on this
module; tests/test_minilm_forward.py pins it against transformers' figures.
"""

from __future__ import annotations

import unicodedata
from typing import Callable

import numpy as np

HEADS = 12
LN_EPS = 1e-12
MAX_TOKENS = 128
MAX_WORD_CHARS = 100  # BERT maps longer words to [UNK] without trying pieces


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, elementwise: the rational approximation of Abramowitz and Stegun 7.1.26
    in float64 (|error| <= 1.5e-7, about float32's resolution near 1). One path on every install
    (no scipy when present, another result when not), so statistics do not depend on the install."""
    a = np.abs(x.astype(np.float64))
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    y = 1.0 - poly * np.exp(-a * a)
    return (np.sign(x) * y).astype(x.dtype)


def as_float32(a: np.ndarray) -> np.ndarray:
    """Float tensors (bfloat16 included) as float32; others as they are."""
    return a.astype(np.float32) if a.dtype.kind == "f" or a.dtype.name == "bfloat16" else a


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

    def __init__(self, vocab_path: str, max_tokens: int = MAX_TOKENS):
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
