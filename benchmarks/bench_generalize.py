"""Does the planner's default generalise? (issue 20) Downstream quality per model family.

For each model of the set, each budget and each objective, the installed `quant` plans and writes
an archive (`quant quantize MODEL -o A --target-bpw R [--objective O] --json`), the archive is
decoded, and a small forward pass scores it against the float model:

    minilm   all-MiniLM-L6-v2 (BERT sentence encoder, float32, 22.7M weights, no head): mean cosine
             between float and quantized sentence embeddings on benchmarks/sentences_eval.txt
             (the numpy forward pass of benchmarks/minilm.py)
    whisper  Whisper base (encoder-decoder, float16, 72.6M weights, token table tied to the output
             head): the text decoder's next-token KL(float || quant) in nats and top-1 agreement,
             teacher-forced on spoken eval sentences (benchmarks/whisper.py; torch + transformers)
    charlm   textgenrnn (decoder-only character LSTM language model, float32, 0.46M weights,
             untied head): next-character KL(float || quant) in nats and top-1 agreement on every
             character of the eval sentences (benchmarks/charlm.py; torch)

Reference rows (`--references`): the fixed-rate presets int4-g64 and nf4-g64 (`quant quantize
--preset NAME`), no planner.

Loss is what must be small: 1 - cos for an encoder, KL for a decoder. The last table checks the
acceptance of issue 20: the default within 10% of the better of `relative` and `mse`.
`--statistics` adds rows with sensitivities measured on benchmarks/sentences_calib.txt (disjoint
from the eval sentences; `quant collect-importance --sensitivity` for MiniLM, the same estimator
(`quantcli.calibration.collect.sensitivities`) with the next-token KL in benchmarks/whisper.py and
benchmarks/charlm.py for the others): `objective="sensitivity"` with those
statistics as `--importance` (`quant quantize --objective sensitivity --importance FILE`).

    python benchmarks/bench_generalize.py [--models minilm,whisper,charlm] [--rates 2.5,3.5,4.5]
        [--objectives default,relative,mse] [--sentences N] [--statistics] [--references]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import minilm  # noqa: E402
from common import real_model  # noqa: E402

QUANT = [sys.executable, "-m", "quantcli"]
CACHE = os.path.join(ROOT, ".cache", "generalize")


class Bench:
    """A model of the set: its checkpoint, its float weights and a scorer of decoded weights."""

    def __init__(self, name: str, path: str, loss_name: str, score: Callable[[dict[str, np.ndarray]], dict[str, float]],
                 loss: Callable[[dict[str, float]], float], folder: str | None = None):
        self.name, self.path, self.loss_name, self.score, self.loss = name, path, loss_name, score, loss
        self.folder = folder  # what `quant collect-importance` reads (a folder with config, or the file)


def minilm_bench(sentences: int) -> Bench:
    path = real_model()
    w = minilm.load_weights(path)
    text = minilm.read_sentences(minilm.EVAL_SENTENCES)[:sentences or None]
    ref = minilm.embed(w, text)

    def score(q: dict[str, np.ndarray]) -> dict[str, float]:
        return {"cos": float((minilm.embed(q, text) * ref).sum(axis=1).mean())}

    return Bench("minilm", path, "1-cos", score, lambda m: 1.0 - m["cos"])


def whisper_bench(sentences: int) -> Bench:
    import whisper
    path = whisper.fetch()
    text = minilm.read_sentences(minilm.EVAL_SENTENCES)[:sentences or 32]
    scorer = whisper.Scorer(minilm.load_weights(path), text, os.path.join(whisper.DIR, "audio"))
    return Bench("whisper", path, "KL", scorer.score, lambda m: m["kl"])


def charlm_bench(sentences: int) -> Bench:
    import charlm
    path = charlm.fetch()
    scorer = charlm.Scorer(charlm.load(), minilm.read_sentences(minilm.EVAL_SENTENCES)[:sentences or 150])
    return Bench("charlm", path, "KL", scorer.score, lambda m: m["kl"])


BENCHES = {"minilm": minilm_bench, "whisper": whisper_bench, "charlm": charlm_bench}
REFERENCES = ("int4-g64", "nf4-g64")


def quantize(model: str, out: str, rate: str, objective: str, extra: list[str]) -> dict[str, Any]:
    args = ["quantize", model, "-o", out, "--json", *extra]
    if objective in REFERENCES:
        args += ["--preset", objective]
    else:
        args += ["--target-bpw", rate]
    if objective not in ("default", *REFERENCES):
        args += ["--objective", objective]
    t = time.perf_counter()
    proc = subprocess.run(QUANT + args, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"quant {' '.join(args)} failed: {proc.stderr.strip()}")
    doc: dict[str, Any] = json.loads(proc.stdout)
    doc["_seconds"] = time.perf_counter() - t
    return doc


def statistics(bench: Bench) -> str:
    """The model's statistics file on the calibration sentences (made once, then cached)."""
    os.makedirs(CACHE, exist_ok=True)
    out = os.path.join(CACHE, f"{bench.name}_calib.safetensors")
    if not os.path.exists(out):
        if bench.name == "whisper":  # audio in, text out: the benchmark's own forward pass (benchmarks/whisper.py)
            import whisper
            whisper.collect_sensitivity(out, minilm.read_sentences(minilm.CALIB_SENTENCES)[:8],
                                        os.path.join(whisper.DIR, "audio-calib"))
        elif bench.name == "charlm":  # not a transformers model: the benchmark's forward pass (benchmarks/charlm.py)
            import charlm
            charlm.collect_sensitivity(out, minilm.read_sentences(minilm.CALIB_SENTENCES)[:64])
        else:
            full = os.path.join(CACHE, f"{bench.name}_calib_full.safetensors")
            if not os.path.exists(full):
                subprocess.run(QUANT + ["collect-importance", bench.path, minilm.CALIB_SENTENCES, "-o", full,
                                        "--sensitivity", "--numpy-minilm"], check=True)
            # the sensitivities alone: the rows then show what the allocation gains, without the
            # per-row/column weighting inside tensors that the other statistics bring (issue 14)
            from safetensors.numpy import load_file, save_file
            save_file({k: v for k, v in load_file(full).items() if k.endswith(".sensitivity")}, out,
                      metadata={"format": "quant-importance"})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="minilm,whisper,charlm")
    p.add_argument("--rates", default="2.5,3.5")
    p.add_argument("--objectives", default="default,relative,mse")
    p.add_argument("--sentences", type=int, default=0, help="eval sentences (default: minilm all, whisper 32, charlm 150)")
    p.add_argument("--statistics", action="store_true", help="also --importance rows")
    p.add_argument("--references", action="store_true", help="also the int4-g64 and nf4-g64 presets")
    args = p.parse_args()
    print(f"# {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
          f"python {platform.python_version()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    results: dict[tuple[str, str, str], float] = {}
    print("| model | objective | target bpw | bits/weight | SQNR dB | downstream | loss | s |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        bench = BENCHES[name](args.sentences)
        runs = [(o, []) for o in args.objectives.split(",")]
        if args.statistics:
            stats = statistics(bench)
            runs += [("sensitivity", ["--importance", stats])]
        jobs = [("-", r, []) for r in REFERENCES] if args.references else []
        jobs += [(rate, o, e) for rate in args.rates.split(",") for o, e in runs]
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "a.qnt.safetensors")
            for rate, objective, extra in jobs:
                doc = quantize(bench.path, out, rate, objective, extra)
                metrics = bench.score(minilm.load_archive(out))
                label = objective + (" +statistics" if extra else "")
                loss = bench.loss(metrics)
                results[(name, rate, label)] = loss
                t = doc["totals"]
                shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
                print(f"| {name} | {label} | {rate} | {t['bits_per_weight']:.3f} | {t['overall_sqnr_db']:.2f} | "
                      f"{shown} | {loss:.4f} | {doc['_seconds']:.0f} |", flush=True)
    print("\n| model | target bpw | objective | loss | best of relative, mse | ratio | acceptance |")
    print("|---|---|---|---|---|---|---|")
    for (name, rate, label), loss in results.items():
        best = min((results[(name, rate, o)] for o in ("relative", "mse") if (name, rate, o) in results),
                   default=None)
        if best is None or label not in ("default", "sensitivity +statistics"):
            continue
        ok = loss <= 1.1 * best if label == "default" else loss < best  # within 10%; with statistics: beats both
        print(f"| {name} | {rate} | {label} | {loss:.4f} | {best:.4f} | {loss / best:.3f} | {'yes' if ok else 'NO'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
