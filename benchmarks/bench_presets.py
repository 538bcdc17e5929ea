"""Measure every `--preset` on all-MiniLM-L6-v2 with the installed command and compare with the
figures `quant quantize --help` shows (quantcli/presets.py): exit 1 when one drifts.

    python benchmarks/bench_presets.py              # fixed-rate presets and lossless
    python benchmarks/bench_presets.py --budgets    # also best-2.5 / best-3.5 / best-4.5 (slower)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import real_model  # noqa: E402

import minilm  # noqa: E402

from quantcli import presets  # noqa: E402

QUANT = [sys.executable, "-m", "quantcli"]


def measure(model: str, name: str, tmp: str, ref, weights, sentences) -> tuple[dict, str]:
    out = os.path.join(tmp, f"{name}.qnt.safetensors")
    t = time.perf_counter()
    r = subprocess.run(QUANT + ["quantize", model, "-o", out, "--preset", name, "--json"], capture_output=True,
                       text=True, check=True)
    seconds = time.perf_counter() - t
    totals = json.loads(r.stdout)["totals"]
    if name == "lossless":
        text = f"{8 * totals['archive_bytes'] / totals['quantized_elements']:.2f} b/w ({100 * totals['ratio']:.1f}% of the file)"
    else:
        cos = minilm.embedding_cosine(weights, minilm.load_archive(out), sentences, reference=ref)
        digits = 5 if cos > 0.9999 else 4
        budget = presets.BUDGET.fullmatch(name)
        text = (f"{totals['bits_per_weight']:.2f} b/w, cos {cos:.3f}" if budget else
                f"{totals['bits_per_weight']:.3f} b/w, {totals['overall_sqnr_db']:.2f} dB, cos {cos:.{digits}f}")
    os.unlink(out)
    return {"seconds": seconds, **totals}, text


def main() -> int:
    model = real_model()
    names = list(presets.PRESETS) + ([f"best-{b}" for b in presets.BUDGET_MEASURED] if "--budgets" in sys.argv else [])
    weights = minilm.load_weights(model)
    sentences = minilm.read_sentences(minilm.EVAL_SENTENCES)
    ref = minilm.embed(weights, sentences)
    drift = 0
    print("| preset | measured | shown in --help | seconds |")
    print("|---|---|---|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            totals, text = measure(model, name, tmp, ref, weights, sentences)
            shown = presets.get(name).measured
            same = re.sub(r"\s+", " ", shown) == text
            drift += not same
            print(f"| {name} | {text} | {'same' if same else shown} | {totals['seconds']:.1f} |", flush=True)
    return 1 if drift else 0


if __name__ == "__main__":
    raise SystemExit(main())
