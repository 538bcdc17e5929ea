"""Record calibration statistics for `quant quantize --importance FILE`: what each weight is
applied to, and how much the model's output moves when it is wrong, measured by running a model on
sample text (`quant collect-importance`, docs/IMPORTANCE.md).

    quant collect-importance MODEL_DIR_OR_ID TEXT_FILE -o OUT.safetensors [--gram] [--sensitivity]
        [--max-tokens N] [--batch B] [--max-length L]
    quant collect-importance --numpy-minilm MODEL.safetensors TEXT_FILE -o OUT.safetensors [...]

TEXT_FILE holds one sentence a line (empty lines are skipped). The first form runs a Hugging Face
model (a folder or a hub id) with torch + transformers (`AutoModel`, so the base model without
a task head) and hooks every nn.Linear and nn.Embedding; those two packages are imported on that
path only (imported lazily: without them that path stops with one line naming what to install).
The second needs numpy alone: the BERT forward pass of quantcli/bert.py, with its WordPiece
tokenizer (vocab.txt beside the model, or --vocab).

OUT is a safetensors file of float32 arrays, each a mean over the real tokens of the calibration
text (padding never counts):
  NAME        [in]          mean of x_j^2, for a weight NAME [out, in] used as y = x @ NAME.T
  NAME.gram   [in, in]      mean of x x^T (with --gram); its diagonal is NAME, to the bit
  NAME.rows   [rows]        for a lookup table NAME [rows, dim]: the fraction of tokens that read
                            each row (sums to 1)
  NAME.sensitivity  []      with --sensitivity, for every tensor of 2 or more dimensions the forward
                            pass uses: the relative output error per unit of that tensor's relative
                            error (`sensitivities`)
  __metadata__              format "quant-importance", tokens (token rows seen), source
NAMEs are the checkpoint's own tensor names (a model loaded with a prefix such as `bert.` that its
file lacks, or the other way round, is matched to the file's names). Sums are kept in float64.
A Linear whose input has no token axis (BERT's pooler, which sees one [CLS] row per sentence) is
averaged over the rows it did see. The numpy forward pass mean-pools, as sentence-transformers
does, so it never runs the pooler and the file has no entry for it; the torch path records it
because BertModel computes it. The output is written atomically (temp file, then rename).
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time
from typing import Any, Callable

import numpy as np

from . import bert
from ..errors import ConfigError, InputError, one_line
from ..io.output import SafetensorsWriter, check_output
from ..io.safetensors import SafetensorsFile

FORMAT = "quant-importance"
DEFAULT_BATCH = 32
SENSITIVITY_NOISE = 0.1  # the perturbation's RMS, relative to the tensor's: a relative squared error of 0.01
SENSITIVITY_DRAWS = 2  # independent perturbations averaged per tensor
SENSITIVITY_SENTENCES = 64  # the leading calibration sentences the perturbed forward passes run on


class Statistics:
    """Running float64 sums of what each weight sees, turned into the file's means by `arrays`."""

    def __init__(self, gram: bool = False):
        self.gram = gram
        self.sumsq: dict[str, np.ndarray] = {}
        self.outer: dict[str, np.ndarray] = {}
        self.seen: dict[str, int] = {}
        self.counts: dict[str, np.ndarray] = {}
        self.tokens = 0
        self.sensitivity: dict[str, float] = {}
        self._last: tuple[Any, np.ndarray, np.ndarray | None] | None = None

    def linear(self, name: str, rows: np.ndarray) -> None:
        """Add the input rows [n, in] of one Linear. The same array given again (query, key and
        value share their input) reuses the products computed for it."""
        if self._last is not None and self._last[0] is rows:
            sq, gram = self._last[1], self._last[2]
        else:
            x = np.asarray(rows, dtype=np.float64).reshape(-1, rows.shape[-1])
            gram = x.T @ x if self.gram else None
            sq = np.diagonal(gram).copy() if gram is not None else np.einsum("ij,ij->j", x, x)
            self._last = (rows, sq, gram)
        if name in self.sumsq:
            if self.sumsq[name].shape != sq.shape:
                raise InputError(f"input width changed from {self.sumsq[name].shape[0]} to {sq.shape[0]}",
                                 tensor=name)
            self.sumsq[name] = self.sumsq[name] + sq
            if gram is not None:
                self.outer[name] = self.outer[name] + gram
        else:
            self.sumsq[name] = sq.copy()
            if gram is not None:
                self.outer[name] = gram.copy()
        self.seen[name] = self.seen.get(name, 0) + int(np.prod(rows.shape[:-1]))

    def lookup(self, name: str, ids: np.ndarray, rows: int) -> None:
        """Add the row ids [n] that real tokens read from a table of `rows` rows."""
        ids = np.asarray(ids).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= rows):
            raise InputError(f"row id out of range for a table of {rows} rows", tensor=name)
        counts = np.bincount(ids, minlength=rows).astype(np.float64)
        self.counts[name] = self.counts[name] + counts if name in self.counts else counts

    def arrays(self) -> dict[str, np.ndarray]:
        """Every entry of the file, float32, by name (sorted)."""
        out: dict[str, np.ndarray] = {}
        for name, sq in self.sumsq.items():
            out[name] = (sq / self.seen[name]).astype(np.float32)
            if name in self.outer:
                g = self.outer[name] / self.seen[name]
                g = ((g + g.T) * 0.5).astype(np.float32)  # exactly symmetric
                np.fill_diagonal(g, out[name])  # the diagonal is the NAME entry, to the bit
                out[name + ".gram"] = g
        for name, counts in self.counts.items():
            out[name + ".rows"] = (counts / counts.sum()).astype(np.float32)
        for name, value in self.sensitivity.items():
            out[name + ".sensitivity"] = np.array(value, np.float32)
        return dict(sorted(out.items()))


def read_sentences(path: str) -> list[str]:
    """The non-empty lines of a UTF-8 text file, stripped."""
    try:
        with open(path, encoding="utf-8") as f:
            sentences = [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        raise InputError("no such file", path=path) from None
    except IsADirectoryError:
        raise InputError("is a folder, not a text file", path=path) from None
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text (byte {e.start})", path=path) from None
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror}", path=path) from None
    if not sentences:
        raise InputError("holds no sentences (every line is empty)", path=path)
    return sentences


def within_budget(lengths: list[int], max_tokens: int | None) -> int:
    """How many sentences, taken in file order, fit in `max_tokens` token rows (all when None)."""
    if max_tokens is None:
        return len(lengths)
    n = int(np.searchsorted(np.cumsum(lengths), max_tokens, side="right"))
    if n == 0:
        raise ConfigError(f"--max-tokens {max_tokens} is smaller than the first sentence ({lengths[0]} tokens)")
    return n


def batches(lengths: list[int], batch: int) -> list[np.ndarray]:
    """Sentence indices in batches of similar length, so little of each batch is padding."""
    order = np.argsort(lengths, kind="stable")
    return [order[lo:lo + batch] for lo in range(0, len(order), batch)]


# ----------------------------------------------------------------------------- numpy path

MINILM_SHAPES = {"embeddings.word_embeddings.weight": 2, "embeddings.position_embeddings.weight": 2,
                 "embeddings.token_type_embeddings.weight": 2, "embeddings.LayerNorm.weight": 1,
                 "encoder.layer.0.attention.self.query.weight": 2}


def collect_numpy_minilm(model: str, sentences: list[str], stats: Statistics, vocab: str | None,
                         max_tokens: int | None, batch: int, max_length: int | None,
                         sensitivity: bool = False) -> int:
    """Run quantcli/bert.py's forward pass over the sentences; returns how many were used. With
    `sensitivity`, also the sensitivity of every tensor the pass uses (on the mean-pooled,
    normalised sentence embeddings of the leading sentences, as sentence-transformers computes them)."""
    vocab = vocab or os.path.join(os.path.dirname(os.path.abspath(model)), "vocab.txt")
    if not os.path.isfile(vocab):
        raise InputError("no vocab.txt beside the model; name one with --vocab", path=vocab)
    with SafetensorsFile(model) as f:
        weights = {name: bert.as_float32(f.read(name)) for name in f.entries}
    for name, ndim in MINILM_SHAPES.items():
        if name not in weights or weights[name].ndim != ndim:
            raise InputError(f"not a BERT checkpoint like all-MiniLM-L6-v2: no {ndim}-D tensor {name!r}", path=model)
    hidden = weights["embeddings.word_embeddings.weight"].shape[1]
    if hidden % bert.HEADS:
        raise InputError(f"width {hidden} does not split into {bert.HEADS} heads", path=model)
    positions = weights["embeddings.position_embeddings.weight"].shape[0]
    limit = min(max_length or bert.MAX_TOKENS, positions)
    try:
        tok = bert.Tokenizer(vocab, limit)
    except (KeyError, UnicodeDecodeError) as e:
        raise InputError(f"not a BERT vocab.txt ({type(e).__name__}: {e})", path=vocab) from None
    encoded = [tok.encode(s) for s in sentences]
    if max(max(e) for e in encoded) >= weights["embeddings.word_embeddings.weight"].shape[0]:
        raise InputError("the vocabulary is larger than the model's word embeddings", path=vocab)
    n = within_budget([len(e) for e in encoded], max_tokens)
    encoded = encoded[:n]
    tables = {name: weights[name].shape[0] for name in
              ("embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
               "embeddings.token_type_embeddings.weight")}

    def record(name: str, rows: np.ndarray) -> None:
        if rows.dtype.kind in "iu":
            stats.lookup(name, rows, tables[name])
        else:
            stats.linear(name, rows)

    ready = bert._linear_ready(weights)
    for idx in batches([len(e) for e in encoded], batch):
        ids, mask = bert.pad_batch(encoded, idx)
        bert.hidden_states(ready, ids, mask, record=record)
        stats.tokens += int(mask.sum())
    if sensitivity:
        used = [name for name in [*tables, *stats.sumsq] if weights[name].ndim >= 2]
        probe = [(ids, mask) for ids, mask in (bert.pad_batch(encoded, idx) for idx in
                 batches([len(e) for e in encoded[:SENSITIVITY_SENTENCES]], batch))]

        def run(name: str | None, delta: np.ndarray | None) -> np.ndarray:
            w = ready if name is None else {**weights, name: weights[name] + delta}
            if name is not None and name + ".T" in ready:
                w = {**ready, name: w[name], name + ".T": np.ascontiguousarray(w[name].T)}
            out = []
            for ids, mask in probe:
                h = bert.hidden_states(w, ids, mask)
                pooled = (h * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
                out.append(pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12))
            return np.concatenate(out)

        stats.sensitivity = sensitivities({name: weights[name] for name in used}, run)
    return n


# ----------------------------------------------------------------------------- sensitivity

def relative_change(reference: np.ndarray, output: np.ndarray) -> float:
    """mean ||output - reference||^2 / mean ||reference||^2 over the rows (float64)."""
    ref = np.asarray(reference, np.float64)
    d = np.asarray(output, np.float64) - ref
    return float((d * d).sum() / max(float((ref * ref).sum()), np.finfo(np.float64).tiny))


def sensitivities(tensors: dict[str, np.ndarray], run: Callable[[str | None, np.ndarray | None], np.ndarray], *,
                  noise: float = SENSITIVITY_NOISE, draws: int = SENSITIVITY_DRAWS, seed: int = 0,
                  divergence: Callable[[np.ndarray, np.ndarray], float] = relative_change) -> dict[str, float]:
    """How much the model's output moves per unit of each tensor's relative error.

    `run(None, None)` is the float model's output on the calibration inputs; `run(name, delta)` the
    output with `delta` added to that tensor alone. Each tensor gets `draws` Gaussian perturbations
    whose RMS is `noise` times the tensor's (a relative squared error of noise^2, about what a
    quantizer at 20 dB leaves); its sensitivity is the mean `divergence(reference, perturbed)`
    (default: the relative mean square change of the output) divided by noise^2. Small errors act
    to second order, so this is the output's relative error per unit of relative weight error, the
    unit the planner's objective adds up (docs/PLANNER.md). A tensor of zeros gets 0. Deterministic
    for a given seed; the perturbations of a tensor do not depend on the other tensors.

    Example:
        >>> w = {"a": np.ones((4, 4)), "b": np.ones((4, 4))}
        >>> run = lambda name, d: np.ones(4) * 4 + (0 if d is None else (d.sum(1) if name == "a" else 0))
        >>> s = sensitivities(w, run)
        >>> s["b"], round(s["a"], 1) > 0
        (0.0, True)
    """
    reference = run(None, None)
    out: dict[str, float] = {}
    for i, (name, w) in enumerate(tensors.items()):
        w64 = np.asarray(w, np.float64)
        rms = float(np.sqrt(np.mean(w64 * w64))) if w64.size else 0.0
        if rms == 0.0:
            out[name] = 0.0
            continue
        rng = np.random.default_rng([seed, i])
        total = 0.0
        for _ in range(draws):
            delta = rng.standard_normal(w.shape) * (noise * rms)
            total += divergence(reference, run(name, delta.astype(w.dtype)))
        out[name] = total / draws / (noise * noise)
    return out


# ----------------------------------------------------------------------------- torch path

def checkpoint_names(model: str) -> list[str] | None:
    """The tensor names in the model's own .safetensors files (a local folder, or the hub cache
    once transformers has fetched the model), or None when there are none to read."""
    folder = model if os.path.isdir(model) else None
    if folder is None:
        try:
            from huggingface_hub import try_to_load_from_cache
            found = try_to_load_from_cache(model, "config.json")
        except Exception:  # an id the hub library refuses, or no such library: use the model's names
            return None
        folder = os.path.dirname(found) if isinstance(found, str) else None
    files = sorted(glob.glob(os.path.join(folder, "*.safetensors"))) if folder else []
    if not files:
        return None
    names: list[str] = []
    for path in files:
        with SafetensorsFile(path) as f:
            names.extend(f.entries)
    return names


def name_map(params: list[str], names: list[str] | None) -> tuple[dict[str, str], list[str]]:
    """Each module weight's name in the checkpoint: itself, or the one file name that equals it
    once a leading `prefix.` is added to or taken from either side. Also returns the weights the
    checkpoint does not hold (a head transformers added and initialised itself): not recorded."""
    if names is None:
        return {p: p for p in params}, []
    out, absent = {}, []
    for p in params:
        hits = [n for n in names if n == p or n.endswith("." + p) or p.endswith("." + n)]
        exact = [n for n in hits if n == p]
        if len(exact) == 1 or len(hits) == 1:
            out[p] = (exact or hits)[0]
        elif not hits:
            absent.append(p)
        else:
            raise InputError(f"module weight {p!r} matches {len(hits)} tensors of the checkpoint "
                             f"({', '.join(hits[:3])})")
    return out, absent


def collect_torch(model: str, sentences: list[str], stats: Statistics, max_tokens: int | None,
                  batch: int, max_length: int | None, sensitivity: bool = False) -> int:
    """Run a Hugging Face model with hooks on every nn.Linear and nn.Embedding. With
    `sensitivity`, also the sensitivity of every parameter of 2 or more dimensions that the
    checkpoint holds, on the last hidden states of the real tokens of the leading sentences."""
    try:
        import torch
        from transformers import AutoModel, AutoTokenizer
    except ImportError as e:
        raise ConfigError(f"a Hugging Face model needs torch and transformers ({e.name} is missing): "
                          "pip install torch transformers (or use --numpy-minilm for all-MiniLM-L6-v2)") from None
    try:
        net = AutoModel.from_pretrained(model, dtype=torch.float32).eval()
        if net.main_input_name != "input_ids":  # audio or images in (Whisper: input_features)
            raise InputError(f"the model reads {net.main_input_name}, not text: collect-importance runs models "
                             "whose input is token ids (docs/IMPORTANCE.md)", path=model)
        tokenizer = AutoTokenizer.from_pretrained(model)
    except (OSError, ValueError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise InputError(f"cannot load with transformers: {one_line(first)[:300]}", path=model) from None
    if tokenizer.pad_token is None:  # decoder LMs (GPT-2) have none; padding is masked out of every statistic
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    if max_length is None:
        max_length = sentence_transformers_length(model) or min(int(tokenizer.model_max_length), 512)
    max_length = min(max_length, getattr(net.config, "max_position_embeddings", None) or max_length)
    lengths = [len(ids) for ids in tokenizer(sentences, truncation=True, max_length=max_length)["input_ids"]]
    n = within_budget(lengths, max_tokens)
    modules = {name: m for name, m in net.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Embedding))}
    names, absent = name_map([name + ".weight" for name in modules], checkpoint_names(model))
    if absent:
        print(f"quant collect-importance: not in the checkpoint, not recorded: {', '.join(absent)}", file=sys.stderr)
    modules = {name: m for name, m in modules.items() if name + ".weight" in names}
    mask: list[np.ndarray] = []  # the current batch's [B, T] real-token mask

    def real_rows(name: str, a: Any) -> np.ndarray:
        """The rows of a hook's input that belong to real tokens."""
        m = mask[0]
        a = a.detach().cpu().numpy()
        lead = a.shape[:-1] if a.dtype.kind == "f" else a.shape
        if lead == m.shape:
            return a[m]
        if a.dtype.kind != "f" and lead == (1, m.shape[1]):  # position ids shared by the batch
            return np.broadcast_to(a, m.shape)[m]
        if a.dtype.kind == "f" and lead == (m.shape[0],):  # one row per sentence (the pooler)
            return a
        raise InputError(f"input of shape {list(a.shape)} fits no token layout of a batch {list(m.shape)}",
                         tensor=names[name + ".weight"])

    def hook(name: str, module: Any) -> Callable[..., None]:
        if isinstance(module, torch.nn.Embedding):
            return lambda _m, args: stats.lookup(names[name + ".weight"], real_rows(name, args[0]),
                                                 module.num_embeddings)
        return lambda _m, args: stats.linear(names[name + ".weight"], real_rows(name, args[0]))

    handles = [m.register_forward_pre_hook(hook(name, m)) for name, m in modules.items()]
    try:
        with torch.inference_mode():
            for idx in batches(lengths[:n], batch):
                enc = tokenizer([sentences[i] for i in idx], padding=True, truncation=True,
                                max_length=max_length, return_tensors="pt")
                mask[:] = [enc["attention_mask"].numpy().astype(bool)]
                net(**enc)
                stats.tokens += int(mask[0].sum())
    finally:
        for h in handles:
            h.remove()
    if sensitivity:
        stats.sensitivity = torch_sensitivities(net, tokenizer, [sentences[i] for i in range(n)], max_length, batch)
    return n


def torch_sensitivities(net: Any, tokenizer: Any, sentences: list[str], max_length: int, batch: int) -> dict[str, float]:
    """`sensitivities` of a transformers model's parameters (2 or more dimensions, under the
    checkpoint's names; a tied table once), on the last hidden states of real tokens."""
    import torch
    params = {name: p for name, p in net.named_parameters() if p.dim() >= 2}
    file_names, _ = name_map(list(params), checkpoint_names(getattr(net, "name_or_path", "")))
    probe = sentences[:SENSITIVITY_SENTENCES]
    lengths = [len(ids) for ids in tokenizer(probe, truncation=True, max_length=max_length)["input_ids"]]
    encoded = [tokenizer([probe[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                         return_tensors="pt") for idx in batches(lengths, batch)]

    def run(name: str | None, delta: np.ndarray | None) -> np.ndarray:
        with torch.inference_mode():
            p = params[name] if name is not None else None
            saved = p.detach().clone() if p is not None else None
            try:
                if p is not None:
                    p.add_(torch.from_numpy(delta).to(p.dtype))
                return np.concatenate([net(**enc).last_hidden_state[enc["attention_mask"].bool()].double().numpy()
                                       for enc in encoded])
            finally:
                if p is not None and saved is not None:
                    p.copy_(saved)

    values = {name: p.detach().float().numpy() for name, p in params.items() if name in file_names}
    return {file_names[name]: s for name, s in sensitivities(values, run).items()}


def sentence_transformers_length(model: str) -> int | None:
    """max_seq_length from a sentence-transformers folder's sentence_bert_config.json, if any."""
    path = os.path.join(model, "sentence_bert_config.json")
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f).get("max_seq_length")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and value > 0 else None


# ----------------------------------------------------------------------------- command line

def write(path: str, stats: Statistics, source: str) -> int:
    """The statistics as a safetensors file at `path`, atomically; returns its size."""
    writer = SafetensorsWriter(path)
    try:
        for name, array in stats.arrays().items():
            writer.add(name, array)
    except BaseException:
        writer.close()
        raise
    return writer.finish({"format": FORMAT, "tokens": str(stats.tokens), "source": source})


def collect_importance(model: str, text: str, output: str, *, gram: bool = False, sensitivity: bool = False,
                       max_tokens: int | None = None, batch: int = DEFAULT_BATCH, max_length: int | None = None,
                       numpy_minilm: bool = False, vocab: str | None = None) -> str:
    """Collect the statistics of `model` on the sentences of `text` and write them to `output`
    (atomically); returns the one-line summary.

    Raises ConfigError for bad options or a missing torch/transformers, InputError for unreadable
    inputs (one line each, naming the file).

    Example:
        collect_importance("model/", "calib.txt", "imp.safetensors", sensitivity=True)
    """
    for flag, value in (("--batch", batch), ("--max-tokens", max_tokens), ("--max-length", max_length)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be at least 1, not {value}")
    if vocab and not numpy_minilm:
        raise ConfigError("--vocab goes with --numpy-minilm only")
    inputs = [text] + ([model] if os.path.exists(model) else [])
    check_output(output, inputs, suffix=".safetensors")
    sentences = read_sentences(text)
    stats = Statistics(gram=gram)
    t0 = time.perf_counter()
    if numpy_minilm:
        n = collect_numpy_minilm(model, sentences, stats, vocab, max_tokens, batch, max_length, sensitivity)
        kind = "numpy all-MiniLM-L6-v2"
    else:
        n = collect_torch(model, sentences, stats, max_tokens, batch, max_length, sensitivity)
        kind = "transformers"
    source = f"{os.path.basename(os.path.normpath(model))} ({kind}) on {os.path.basename(text)}, {n} sentences"
    size = write(output, stats, source)
    extra = f", {len(stats.sensitivity)} sensitivities" if sensitivity else ""
    return (f"{n} sentences, {stats.tokens} tokens, {len(stats.sumsq)} linear + {len(stats.counts)} lookup "
            f"tensors{extra} -> {output} ({size} bytes) in {time.perf_counter() - t0:.1f} s")
