"""What the planner minimises: each tensor's relative error times a weight (the objective).

relative      n_t: element-weighted relative error (the default; n_t x MSE_t / mean x_t^2).
mse           sum x_t^2: the total squared error (what SQNR over the model measures).
relative-emb  relative, except that the input token embeddings of an encoder-only model weigh
              1 / EMBED_FACTOR^2 of their elements: their best step is then EMBED_FACTOR times
              coarser relative to their RMS (the step of a weighted tensor goes as
              sqrt(signal / weight)). An error in a token's embedding row is one additive
              perturbation of that token before the first LayerNorm, while an error in an encoder
              matrix acts on every token in every layer; on all-MiniLM-L6-v2 sentence-embedding
              cosine wants that table ~4x coarser (docs/STUDY-ecsq.md, docs/PLANNER.md).

The rule fires only on names it can vouch for (`input_embeddings`): a table that is also the
output head (tied embeddings of a decoder or of a masked-LM head) must not be coarsened, and a
checkpoint may omit a tied head entirely, so the absence of a head tensor proves nothing by itself.
"""

from __future__ import annotations

import re
from typing import Iterable

OBJECTIVES = ("relative", "mse", "relative-emb")
EMBED_FACTOR = 4.0

# BERT-family encoders (BERT, RoBERTa, DistilBERT, ELECTRA, MiniLM, MPNet, XLM-R ...)
_ENCODER_EMBEDDING = re.compile(r"(^|\.)embeddings\.word_embeddings\.weight$")
# any tensor of a head that could share the token table, or of a decoder stack
_HEAD_OR_DECODER = re.compile(r"(^|\.)(lm_head|cls|generator_lm_head|generator_predictions|decoder|output_embeddings|"
                              r"embed_out|lm_loss)(\.|$)|^output\.weight$")


def input_embeddings(names: Iterable[str]) -> set[str]:
    """Names of token-embedding tables that are inputs only: a BERT-style
    `...embeddings.word_embeddings.weight` in a checkpoint with no tensor of an output head or a
    decoder (`lm_head`, `cls.predictions`, `decoder`, ...). Decoder LLMs (`embed_tokens`, `wte`,
    `tok_embeddings`) never match: their table is the output head whenever the embeddings are tied,
    and a tied checkpoint usually stores no head tensor at all."""
    names = list(names)
    if any(_HEAD_OR_DECODER.search(n) for n in names):
        return set()
    return {n for n in names if _ENCODER_EMBEDDING.search(n)}


def objective_weights(elements: list[int], signals: list[float], names: list[str], objective: str,
                      all_names: Iterable[str]) -> list[float]:
    """The weight of each tensor's relative error under `objective`; `all_names` are every tensor
    of the checkpoint (kept ones included: a head that is kept still shares the table)."""
    if objective == "mse":
        return [float(s) for s in signals]
    coarse = input_embeddings(all_names) if objective == "relative-emb" else set()
    return [float(n) / (EMBED_FACTOR ** 2 if name in coarse else 1.0) for n, name in zip(elements, names)]
