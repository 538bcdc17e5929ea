"""Shared by the benchmark scripts: where the real model is, fetched on first use."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, ".cache", "all-minilm-l6-v2", "model.safetensors")


def real_model(path: str = MODEL) -> str:
    """all-MiniLM-L6-v2's model.safetensors, downloaded by tools/fetch_model.py if missing."""
    if path == MODEL and not os.path.exists(path):
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "fetch_model.py")], check=True)
    return path
