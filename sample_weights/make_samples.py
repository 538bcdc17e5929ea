"""Make the small sample weight files in this folder (deterministic; run from anywhere).

    python sample_weights/make_samples.py
"""

from __future__ import annotations

import os

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))

SEED_MATRIX = np.array([[0.1, -0.5, 0.0, 1.0],
                        [2.5, -1.2, 0.7, -0.3],
                        [0.9, 1.5, -2.0, 0.2]], dtype=np.float32)


def transformer_like(rng: np.random.Generator, layers: int = 2, hidden: int = 128, ffn: int = 512,
                     vocab: int = 1000) -> dict[str, np.ndarray]:
    """A tiny BERT-shaped model: embeddings, attention and MLP weights, 1-D norms and biases,
    and an int64 position-id buffer, with weight scales like a trained model's."""
    t: dict[str, np.ndarray] = {
        "embeddings.word_embeddings.weight": rng.normal(0, 0.05, (vocab, hidden)),
        "embeddings.position_embeddings.weight": rng.normal(0, 0.02, (256, hidden)),
        "embeddings.LayerNorm.weight": 1 + rng.normal(0, 0.05, hidden),
        "embeddings.LayerNorm.bias": rng.normal(0, 0.02, hidden),
        "embeddings.position_ids": np.arange(256, dtype=np.int64)[None, :],
    }
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            t[p + f"attention.self.{name}.weight"] = rng.normal(0, hidden ** -0.5, (hidden, hidden))
            t[p + f"attention.self.{name}.bias"] = rng.normal(0, 0.02, hidden)
        t[p + "attention.output.dense.weight"] = rng.normal(0, hidden ** -0.5, (hidden, hidden))
        t[p + "attention.output.LayerNorm.weight"] = 1 + rng.normal(0, 0.05, hidden)
        t[p + "intermediate.dense.weight"] = rng.normal(0, hidden ** -0.5, (ffn, hidden))
        t[p + "intermediate.dense.bias"] = rng.normal(0, 0.02, ffn)
        t[p + "output.dense.weight"] = rng.normal(0, ffn ** -0.5, (hidden, ffn))
        t[p + "output.LayerNorm.weight"] = 1 + rng.normal(0, 0.05, hidden)
    return {k: (v if v.dtype == np.int64 else v.astype(np.float32)) for k, v in t.items()}


def main() -> None:
    rng = np.random.default_rng(20261127)
    np.save(os.path.join(HERE, "seed_matrix.npy"), SEED_MATRIX)
    np.save(os.path.join(HERE, "gaussian_256x512.npy"), rng.normal(0, 0.02, (256, 512)).astype(np.float32))
    heavy = rng.standard_t(3, (256, 512)) * 0.02
    outliers = rng.choice(heavy.size, 40, replace=False)
    heavy.reshape(-1)[outliers] *= 25  # a few large outliers, as in real attention/MLP weights
    np.save(os.path.join(HERE, "heavy_tailed_256x512.npy"), heavy.astype(np.float32))
    model = transformer_like(rng)
    save_file(model, os.path.join(HERE, "tiny_transformer.safetensors"))
    bf16 = {k: (v if v.dtype == np.int64 else v.astype(ml_dtypes.bfloat16)) for k, v in model.items()}
    save_file(bf16, os.path.join(HERE, "tiny_transformer_bf16.safetensors"))


if __name__ == "__main__":
    main()
