"""Shared fixtures: the seed's matrix, small weight files, the real model's path."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "sample_weights"))

from make_samples import SEED_MATRIX, transformer_like  # noqa: E402

settings.register_profile("quant", deadline=None, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile("quant")

MODEL_PATH = os.environ.get("QUANT_MODEL", os.path.join(ROOT, ".cache", "all-minilm-l6-v2", "model.safetensors"))


@pytest.fixture
def seed_matrix() -> np.ndarray:
    return SEED_MATRIX.copy()


@pytest.fixture
def tiny_model(tmp_path) -> str:
    """A small transformer-shaped fp32 .safetensors file (with 1-D norms and an int64 tensor)."""
    from safetensors.numpy import save_file
    path = tmp_path / "tiny.safetensors"
    save_file(transformer_like(np.random.default_rng(0), layers=1, hidden=32, ffn=64, vocab=50), str(path))
    return str(path)


@pytest.fixture(scope="session")
def real_model() -> str:
    if not os.path.exists(MODEL_PATH):
        pytest.fail(f"the real model is missing at {MODEL_PATH}: run `python tools/fetch_model.py` first "
                    "(the README's test command does)")
    return MODEL_PATH
