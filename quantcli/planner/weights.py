"""What the planner minimises: each tensor's relative error times a weight (the objective).

relative      n_t: element-weighted relative error (n_t x MSE_t / mean x_t^2).
mse           sum x_t^2: the total squared error (what SQNR over the model measures).
auto          the default, data-free and structural (docs/PLANNER.md, "The default objective"):
              relative, with two measured exceptions:
              * the token table (`token_table`): the tensor with the most rows, a vocabulary
                (at least TABLE_MIN_ROWS rows and TABLE_ASPECT x more rows than columns) that no
                other tensor of the checkpoint mirrors in shape (no separate or copied head), and
                that `input_only` knows to be read only by index (the shapes cannot tell it from a
                tied table whose head is not stored: coarsening Whisper's was measured to ruin it),
                weighs 1 / EMBED_FACTOR^2 of its elements, so its step is EMBED_FACTOR times
                coarser relative to its RMS (a weighted tensor's best step goes as
                sqrt(signal / weight)). A token's row is read once per token, while a layer's
                matrix acts on every token in every layer.
              * tensors of outlying scale (`scale_outliers`): a tensor whose mean square is more
                than OUTLIER_RATIO x the element-weighted median of the planned tensors' weighs
                n_t x mean x_t^2 / median, as `mse` would weigh it against a typical tensor: fixed
                tables such as Whisper's sinusoidal positions (RMS 0.71 against 0.027) are added to
                activations as they are, so their absolute error is what the network sees.
sensitivity   with statistics that hold NAME.sensitivity (`quant collect-importance
              --sensitivity`): each tensor weighs its measured output change per unit of relative
              error, kept within SENSITIVITY_CLAMP x of the `auto` weight (rescaled to the same
              total); tensors without a sensitivity keep their `auto` weight.
relative-emb  the name of the default before issue 20, kept as a synonym of `auto` (scripts that
              spell it get the default, which gives all-MiniLM-L6-v2 exactly what it gave).
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping, Sequence

import numpy as np

OBJECTIVES = ("relative", "mse", "auto", "sensitivity", "relative-emb")
DEFAULT_OBJECTIVE = "auto"
EMBED_FACTOR = 4.0
TABLE_MIN_ROWS = 1024  # a vocabulary, not a type table
TABLE_ASPECT = 8  # rows >= 8 x columns: MiniLM's words 30522 x 384 (79x), Whisper's tokens 51865 x 512 (101x);
# not positional tables: MiniLM's 512 x 384, GPT-2's 1024 x 768, Whisper's 1500 x 512 and 448 x 512
OUTLIER_RATIO = 4.0  # mean square > 4 x the median's, i.e. RMS > 2 x the median RMS
SENSITIVITY_CLAMP = 16.0

# The evidence that a token table is read only by index, which shapes cannot give (measured: a tied
# table whose head is not stored, Whisper's, has the same shape signature and must not be coarsened):
# a BERT-family input table in a checkpoint with no tensor of a head or a decoder stack.
_ENCODER_EMBEDDING = re.compile(r"(^|\.)embeddings\.word_embeddings\.weight$")
_HEAD_OR_DECODER = re.compile(r"(^|\.)(lm_head|cls|generator_lm_head|generator_predictions|decoder|output_embeddings|"
                              r"embed_out|lm_loss)(\.|$)|^output\.weight$")


def input_only(names: Iterable[str]) -> set[str]:
    """Names of tables known to be inputs only: a BERT-style `...embeddings.word_embeddings.weight`
    in a checkpoint with no tensor of an output head or a decoder (`lm_head`, `cls.predictions`,
    `decoder`, ...). The token-table rule needs this besides the shapes (docs/PLANNER.md)."""
    names = list(names)
    if any(_HEAD_OR_DECODER.search(n) for n in names):
        return set()
    return {n for n in names if _ENCODER_EMBEDDING.search(n)}


def token_table(shapes: Mapping[str, Sequence[int]], planned: Iterable[str]) -> str | None:
    """The planned tensor that is the checkpoint's token table, or None (docstring above): the
    planned 2-D tensor with the most rows when it has TABLE_MIN_ROWS rows or more, TABLE_ASPECT
    times more rows than columns, and no other tensor of `shapes` (every tensor of the checkpoint,
    kept ones included) has its shape or its transpose's (a head, tied by copy or untied).

    >>> token_table({"emb": (30522, 384), "pos": (512, 384), "q": (384, 384)}, ["emb", "pos", "q"])
    'emb'
    >>> token_table({"emb": (30522, 384), "head": (30522, 384)}, ["emb"]) is None
    True
    """
    tables = [n for n in planned if len(shapes[n]) == 2]
    if not tables:
        return None
    name = max(tables, key=lambda n: (shapes[n][0], -tables.index(n)))
    rows, cols = shapes[name]
    if rows < TABLE_MIN_ROWS or rows < TABLE_ASPECT * cols:
        return None
    if any(other != name and tuple(s) in ((rows, cols), (cols, rows)) for other, s in shapes.items()):
        return None
    return name


def scale_outliers(elements: Sequence[int], signals: Sequence[float]) -> list[float]:
    """Per tensor, the factor on its element weight: mean square / median mean square for tensors
    whose mean square exceeds OUTLIER_RATIO x the element-weighted median, else 1.

    >>> scale_outliers([100, 100, 100], [1.0, 1.2, 50.0])
    [1.0, 1.0, 41.666666666666664]
    """
    if not elements:
        return []
    n = np.asarray(elements, np.float64)
    ms = np.asarray(signals, np.float64) / np.maximum(n, 1.0)
    order = np.argsort(ms, kind="stable")
    cumulative = np.cumsum(n[order])
    median = float(ms[order][np.searchsorted(cumulative, cumulative[-1] / 2)])
    if not median > 0:
        return [1.0] * len(elements)
    return [float(m / median) if m > OUTLIER_RATIO * median else 1.0 for m in ms]


def auto_weights(elements: Sequence[int], signals: Sequence[float], names: Sequence[str],
                 shapes: Mapping[str, Sequence[int]] | None) -> list[float]:
    """The default objective's weights (module docstring). Without `shapes` the token-table rule
    cannot look and is left out; it also needs `input_only` evidence for the table."""
    table = token_table(shapes, names) if shapes is not None else None
    if table is not None and shapes is not None and table not in input_only(shapes):
        table = None
    return [float(n) * f / (EMBED_FACTOR ** 2 if name == table else 1.0)
            for n, f, name in zip(elements, scale_outliers(elements, signals), names)]


def sensitivity_weights(base: Sequence[float], names: Sequence[str], sensitivity: Mapping[str, float]) -> list[float]:
    """Each tensor's measured sensitivity, rescaled so the covered tensors weigh in total what
    `base` gives them, and kept within SENSITIVITY_CLAMP x of its `base` weight (a noisy or
    degenerate estimate moves bits, it cannot starve a tensor); uncovered tensors keep `base`.

    >>> sensitivity_weights([1.0, 1.0, 2.0], ["a", "b", "c"], {"a": 3.0, "b": 1.0})
    [1.5, 0.5, 2.0]
    """
    covered = [i for i, name in enumerate(names) if name in sensitivity]
    total = sum(sensitivity[names[i]] for i in covered)
    if not covered or not total > 0:
        return [float(b) for b in base]
    scale = sum(base[i] for i in covered) / total
    out = [float(b) for b in base]
    for i in covered:
        out[i] = float(min(max(sensitivity[names[i]] * scale, base[i] / SENSITIVITY_CLAMP), base[i] * SENSITIVITY_CLAMP))
    return out


def objective_weights(elements: list[int], signals: list[float], names: list[str], objective: str,
                      all_names: Iterable[str], *, shapes: Mapping[str, Sequence[int]] | None = None,
                      sensitivity: Mapping[str, float] | None = None) -> list[float]:
    """The weight of each planned tensor's relative error under `objective`.

    `all_names` are every tensor of the checkpoint (kept ones included); `shapes` maps every
    tensor of the checkpoint to its shape (the `auto` rule looks at it; without it the token
    table rule is off); `sensitivity` maps tensor names to NAME.sensitivity from the statistics
    (`Importance.sensitivity`; `sensitivity` without it is `auto`)."""
    del all_names  # `shapes` names every tensor too (the table rule reads them); kept for callers
    if objective == "mse":
        return [float(s) for s in signals]
    if objective == "relative":
        return [float(n) for n in elements]
    base = auto_weights(elements, signals, names, shapes)
    if objective == "sensitivity" and sensitivity:
        return sensitivity_weights(base, names, sensitivity)
    return base
