"""What the planner minimises: each tensor's relative error times a weight (the objective).

relative      n_t: element-weighted relative error (n_t x MSE_t / mean x_t^2).
mse           sum x_t^2: the total squared error (what SQNR over the model measures).
auto          the default, data-free and structural (docs/PLANNER.md, "The default objective"):
              relative, with two measured exceptions:
              * the token table (`token_table`): the tensor with the most rows, a vocabulary
                (at least TABLE_MIN_ROWS rows and TABLE_ASPECT x more rows than columns) whose row
                count no other tensor of the checkpoint has as a dimension (no stored head: neither
                a copy, an untied head nor a head's bias), when the checkpoint's config.json
                declares that no output head reads it (`head_free`: shapes alone cannot tell a
                table read only by index from a tied table whose head is not stored, and coarsening
                Whisper's was measured to ruin it), weighs 1 / EMBED_FACTOR^2 of its elements, so
                its step is EMBED_FACTOR times coarser relative to its RMS (a weighted tensor's
                best step goes as sqrt(signal / weight)). A token's row is read once per token,
                while a layer's matrix acts on every token in every layer.
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

from typing import Any, Iterable, Mapping, Sequence

import numpy as np

OBJECTIVES = ("relative", "mse", "auto", "sensitivity", "relative-emb")
DEFAULT_OBJECTIVE = "auto"
EMBED_FACTOR = 4.0
TABLE_MIN_ROWS = 1024  # a vocabulary, not a type table
TABLE_ASPECT = 8  # rows >= 8 x columns: MiniLM's words 30522 x 384 (79x), Whisper's tokens 51865 x 512 (101x);
# not positional tables: MiniLM's 512 x 384, GPT-2's 1024 x 768, Whisper's 1500 x 512 and 448 x 512
OUTLIER_RATIO = 4.0  # mean square > 4 x the median's, i.e. RMS > 2 x the median RMS
SENSITIVITY_CLAMP = 16.0

# transformers' naming of model classes: a class with a task head is `<Name>For<Task>` or has an LM
# head in its name (`GPT2LMHeadModel`, `XLMWithLMHeadModel`); a base model is `<Name>Model`.
_HEAD_CLASS_MARKS = ("For", "Head")


def _declares_no_head(config: Mapping[str, Any]) -> bool:
    """One config.json's evidence that nothing reads the token table but by index: the table is
    declared untied from any output layer (`tie_word_embeddings: false`), or every class in
    `architectures` is a base model with no head (`BertModel`, not `BertForMaskedLM`) and the
    config declares no decoder (`is_decoder`, `is_encoder_decoder`: a generating decoder's table
    is its tied head in use). `tie_word_embeddings` alone is no evidence: BertConfig's default is
    true, and a headless BERT never uses its table as a head."""
    if config.get("tie_word_embeddings") is False:
        return True
    archs = config.get("architectures")
    if not isinstance(archs, list) or not archs or config.get("is_decoder") or config.get("is_encoder_decoder"):
        return False
    return all(isinstance(a, str) and a.endswith("Model") and not any(m in a for m in _HEAD_CLASS_MARKS)
               for a in archs)


def head_free(configs: Sequence[Mapping[str, Any] | None] | None) -> bool:
    """True when every input folder has a config.json (`io.sources.model_configs`) and each declares
    that no output head reads the token table (`_declares_no_head`); no config, no evidence.

    >>> head_free([{"architectures": ["BertModel"], "model_type": "bert"}])
    True
    >>> head_free([{"architectures": ["WhisperForConditionalGeneration"], "is_encoder_decoder": True}])
    False
    >>> head_free([{"architectures": ["GPT2LMHeadModel"]}]), head_free([None]), head_free([])
    (False, False, False)
    """
    return configs is not None and len(configs) > 0 and all(c is not None and _declares_no_head(c) for c in configs)


def token_table(shapes: Mapping[str, Sequence[int]], planned: Iterable[str]) -> str | None:
    """The planned tensor that is the checkpoint's token table, or None (docstring above): the
    planned 2-D tensor with the most rows when it has TABLE_MIN_ROWS rows or more, TABLE_ASPECT
    times more rows than columns, and no other tensor of `shapes` (every tensor of the checkpoint,
    kept ones included) has a dimension of its row count (a stored head: a copy, an untied or
    transposed one, or a head's bias over the vocabulary).

    >>> token_table({"emb": (30522, 384), "pos": (512, 384), "q": (384, 384)}, ["emb", "pos", "q"])
    'emb'
    >>> token_table({"emb": (30522, 384), "head": (30522, 384)}, ["emb"]) is None
    True
    >>> token_table({"emb": (30522, 384), "head.bias": (30522,)}, ["emb"]) is None
    True
    """
    tables = [n for n in planned if len(shapes[n]) == 2]
    if not tables:
        return None
    name = max(tables, key=lambda n: (shapes[n][0], -tables.index(n)))
    rows, cols = shapes[name]
    if rows < TABLE_MIN_ROWS or rows < TABLE_ASPECT * cols:
        return None
    if any(other != name and rows in tuple(s) for other, s in shapes.items()):
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
                 shapes: Mapping[str, Sequence[int]] | None,
                 configs: Sequence[Mapping[str, Any] | None] | None = None) -> list[float]:
    """The default objective's weights (module docstring). The token-table rule needs `shapes`
    (to find the table) and `configs` declaring no head (`head_free`); without either it is off."""
    table = token_table(shapes, names) if shapes is not None and head_free(configs) else None
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
                      sensitivity: Mapping[str, float] | None = None,
                      configs: Sequence[Mapping[str, Any] | None] | None = None) -> list[float]:
    """The weight of each planned tensor's relative error under `objective`.

    `all_names` are every tensor of the checkpoint (kept ones included); `shapes` maps every
    tensor of the checkpoint to its shape and `configs` are the input folders' config.json
    (`io.sources.model_configs`; the token-table rule needs both); `sensitivity` maps tensor
    names to NAME.sensitivity from the statistics (`Importance.sensitivity`; `sensitivity`
    without it is `auto`)."""
    del all_names  # `shapes` names every tensor too (the table rule reads them); kept for callers
    if objective == "mse":
        return [float(s) for s in signals]
    if objective == "relative":
        return [float(n) for n in elements]
    base = auto_weights(elements, signals, names, shapes, configs)
    if objective == "sensitivity" and sensitivity:
        return sensitivity_weights(base, names, sensitivity)
    return base
