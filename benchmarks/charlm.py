"""textgenrnn's character language model (Max Woolf, MIT; float32, 0.43M weights) for the
generalisation benchmark: the decoder-only language model of the set.

The package `textgenrnn` on PyPI ships its pretrained weights in its source distribution
(`textgenrnn/textgenrnn_weights.hdf5`, a Keras HDF5 file, and `textgenrnn_vocab.json`). `fetch`
downloads the sdist (no dependencies, no install), reads the HDF5 file with h5py and writes its
tensors as safetensors, float32 as shipped, in PyTorch's layout (`to_torch_layout`: [out, in],
each CuDNN-saved gate block back in Keras's order, nothing rounded):

    embedding.weight       [465, 100]   characters -> vectors (index 0: padding)
    rnn_1.weight_ih        [512, 100]   LSTM 1, gates i, f, c, o; bias_ih, bias_hh [512] each
    rnn_1.weight_hh        [512, 128]
    rnn_2.weight_ih / _hh  [512, 128]   LSTM 2, on LSTM 1's output
    attention.weight       [1, 356]     attention pooling over the 40 steps of [embedding, h1, h2]
    output.weight          [465, 356]   the next-character head (untied), output.bias [465]

The model reads the last 40 characters (left-padded with index 0; unknown characters are 0) and
gives the next character's distribution. The downstream score: every character position of the
first N sentences of `benchmarks/sentences_eval.txt`, each sentence preceded by the meta token
`<s>` as textgenrnn's generator starts it; mean KL(float || quant) in nats per character and top-1
agreement. The forward pass is written here in torch (benchmarks only) and checked against the
reference, textgenrnn's own Keras model under TensorFlow:

    python benchmarks/charlm.py                       # fetch, convert, print the float model's figures
    TF_PYTHON benchmarks/charlm.py --keras-probs k.npy  # with tensorflow-cpu, tf-keras, h5py
    python benchmarks/charlm.py --check k.npy         # the port against the reference
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tarfile
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

DIR = os.path.join(ROOT, ".cache", "textgenrnn")
MODEL = os.path.join(DIR, "model.safetensors")
VOCAB = os.path.join(DIR, "vocab.json")
SDIST = "textgenrnn==2.0.0"
MEMBERS = {"weights": "textgenrnn-2.0.0/textgenrnn/textgenrnn_weights.hdf5",
           "vocab": "textgenrnn-2.0.0/textgenrnn/textgenrnn_vocab.json"}
MAXLEN, META = 40, "<s>"


def fetch() -> str:
    """.cache/textgenrnn/model.safetensors (and vocab.json), made on first use."""
    if os.path.exists(MODEL) and os.path.exists(VOCAB):
        return MODEL
    import h5py

    from quantcli.io.output import SafetensorsWriter
    os.makedirs(DIR, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation", "--quiet",
                        "-d", tmp, SDIST], check=True)
        with tarfile.open(glob.glob(os.path.join(tmp, "textgenrnn-*.tar.gz"))[0]) as tf:
            for key, member in MEMBERS.items():
                src = tf.extractfile(member)
                assert src is not None
                with open(os.path.join(tmp, key), "wb") as dst:
                    dst.write(src.read())
        tensors: dict[str, np.ndarray] = {}
        with h5py.File(os.path.join(tmp, "weights"), "r") as f:
            def visit(name: str, obj: object) -> None:
                if isinstance(obj, h5py.Dataset):  # "rnn_1/rnn_1/kernel:0" -> "rnn_1/kernel"
                    layer, _, leaf = name.partition("/")
                    tensors[f"{layer}/{leaf.split('/')[-1].split(':')[0]}"] = np.asarray(obj, np.float32)
            f.visititems(visit)
        tensors = to_torch_layout(tensors)
        writer = SafetensorsWriter(MODEL)
        for name in sorted(tensors):
            writer.add(name, np.ascontiguousarray(tensors[name]))
        writer.finish({"format": "pt", "source": f"textgenrnn_weights.hdf5 (MIT) from the sdist {SDIST}"})
        os.replace(os.path.join(tmp, "vocab"), VOCAB)
    return MODEL


def to_torch_layout(keras: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The HDF5 tensors in PyTorch's layout, `y = x @ W.T` ([out, in]) with torch.nn.LSTM's names.

    The LSTMs were trained with CuDNNLSTM, which saves each gate's [in, units] block of a kernel in
    CuDNN's order: the block is `k.T` laid out in Fortran order (Keras converts it back with
    `k.T.reshape(k.shape, order="F")` when it loads such weights into an LSTM), and two biases (input
    and recurrent, [8 x units]). The gates are i, f, c, o, torch's order too."""
    def gates(k: np.ndarray) -> np.ndarray:  # CuDNN-saved [in, 4 units] -> Keras [in, 4 units]
        return np.hstack([b.T.reshape(b.shape, order="F") for b in np.hsplit(k, 4)])
    out = {"embedding.weight": keras["embedding/embeddings"],
           "attention.weight": keras["attention/attention_W"].T,
           "output.weight": keras["output/kernel"].T, "output.bias": keras["output/bias"]}
    for i in (1, 2):
        bias = keras[f"rnn_{i}/bias"]
        out[f"rnn_{i}.weight_ih"] = gates(keras[f"rnn_{i}/kernel"]).T
        out[f"rnn_{i}.weight_hh"] = gates(keras[f"rnn_{i}/recurrent_kernel"]).T
        out[f"rnn_{i}.bias_ih"], out[f"rnn_{i}.bias_hh"] = bias[:bias.size // 2], bias[bias.size // 2:]
    return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}


def windows(sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Inputs [positions, MAXLEN] (the 40 characters before each position, left-padded with 0,
    as textgenrnn_encode_sequence pads) and the next character's index at each position."""
    with open(VOCAB, encoding="utf-8") as f:
        vocab = json.load(f)
    rows, targets = [], []
    for s in sentences:
        codes = [vocab[META]] + [vocab.get(c, 0) for c in s] + [vocab[META]]  # the generator stops at <s>
        for i in range(1, len(codes)):
            ctx = codes[max(0, i - MAXLEN):i]
            rows.append([0] * (MAXLEN - len(ctx)) + ctx)
            targets.append(codes[i])
    return np.asarray(rows, np.int64), np.asarray(targets, np.int64)


def log_probs(weights: dict[str, np.ndarray], inputs: np.ndarray, batch: int = 4096) -> np.ndarray:
    """float64 log-probabilities of the next character [positions, 465]: the textgenrnn network
    (embedding, two LSTMs with sigmoid gates, attention pooling over [embedding, h1, h2], softmax)."""
    import torch
    w = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in weights.items()}
    lstms = []
    for name, width in (("rnn_1", 100), ("rnn_2", 128)):
        lstm = torch.nn.LSTM(width, 128, batch_first=True)
        with torch.no_grad():
            for part in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(lstm, part + "_l0").copy_(w[f"{name}.{part}"])
        lstms.append(lstm)
    out = []
    with torch.inference_mode():
        for i in range(0, len(inputs), batch):
            e = w["embedding.weight"][torch.from_numpy(inputs[i:i + batch])]
            h1, _ = lstms[0](e)
            h2, _ = lstms[1](h1)
            x = torch.cat([e, h1, h2], -1)
            att = torch.softmax((x @ w["attention.weight"].T)[..., 0], -1)
            pooled = (x * att[..., None]).sum(1)
            logits = pooled @ w["output.weight"].T + w["output.bias"]
            out.append(torch.log_softmax(logits.double(), -1).numpy())
    return np.concatenate(out)


def kl_divergence(reference: np.ndarray, output: np.ndarray) -> float:
    """Mean KL(reference || output) over rows of log-probabilities."""
    return float((np.exp(reference) * (reference - output)).sum(-1).mean())


class Scorer:
    """The float model's next-character distributions on the eval positions; `score` compares."""

    def __init__(self, weights: dict[str, np.ndarray], sentences: list[str]):
        self.inputs, self.targets = windows(sentences)
        self.reference = log_probs(weights, self.inputs)

    def score(self, weights: dict[str, np.ndarray]) -> dict[str, float]:
        got = log_probs(weights, self.inputs)
        return {"kl": kl_divergence(self.reference, got),
                "top1": float((got.argmax(-1) == self.reference.argmax(-1)).mean())}


def load() -> dict[str, np.ndarray]:
    from quantcli.io.safetensors import SafetensorsFile
    with SafetensorsFile(fetch()) as f:
        return {name: np.asarray(f.read(name), np.float32) for name in f.entries}


def collect_sensitivity(out: str, sentences: list[str], draws: int = 2) -> str:
    """A statistics file holding NAME.sensitivity for every tensor of 2 dimensions:
    `quantcli.calibration.collect.sensitivities` with the next-character KL as the divergence, on
    calibration sentences (disjoint from the eval ones). Returns `out`."""
    from quantcli.calibration.collect import Statistics, sensitivities, write
    weights = load()
    inputs, _ = windows(sentences)

    def run(name: str | None, delta: np.ndarray | None) -> np.ndarray:
        if name is None or delta is None:
            return log_probs(weights, inputs)
        return log_probs({**weights, name: weights[name] + delta}, inputs)

    stats = Statistics()
    stats.sensitivity = sensitivities({k: v for k, v in weights.items() if v.ndim >= 2}, run, draws=draws,
                                      divergence=kl_divergence)
    stats.tokens = len(inputs)
    write(out, stats, f"textgenrnn, next-character KL on {len(sentences)} calibration sentences")
    return out


def keras_probs(sentences: list[str]) -> np.ndarray:
    """The reference: textgenrnn's own Keras model (`textgenrnn.model.textgenrnn_model`,
    TensorFlow with tf-keras) loading its shipped HDF5 weights, on the eval positions. The package's
    __init__ imports APIs TensorFlow 2 removed (multi_gpu_model), so model.py is imported without
    it, and its default optimizer `Adam(lr=...)` is served by tf-keras's legacy Adam (never used)."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import types

    import tensorflow.keras.optimizers as optimizers
    import tf_keras
    inputs, _ = windows(sentences)
    src = tempfile.mkdtemp()
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation", "--quiet",
                    "-d", src, SDIST], check=True)
    with tarfile.open(glob.glob(os.path.join(src, "textgenrnn-*.tar.gz"))[0]) as tf:
        tf.extractall(src, filter="data")
    pkg = os.path.join(src, "textgenrnn-2.0.0", "textgenrnn")
    package = types.ModuleType("textgenrnn")
    package.__path__ = [pkg]
    sys.modules["textgenrnn"] = package
    optimizers.Adam = tf_keras.optimizers.legacy.Adam
    from textgenrnn.model import textgenrnn_model  # type: ignore[import-not-found]
    cfg = {"rnn_layers": 2, "rnn_size": 128, "rnn_bidirectional": False, "max_length": MAXLEN,
           "dim_embeddings": 100}
    with open(VOCAB, encoding="utf-8") as f:
        classes = len(json.load(f)) + 1
    net = textgenrnn_model(classes, cfg, weights_path=os.path.join(pkg, "textgenrnn_weights.hdf5"))
    return np.asarray(net.predict(inputs, batch_size=1024, verbose=0), np.float64)


def eval_sentences(n: int = 150) -> list[str]:
    """The first n non-empty lines of benchmarks/sentences_eval.txt (as minilm.read_sentences)."""
    with open(os.path.join(HERE, "sentences_eval.txt"), encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()][:n]


def main() -> int:
    sentences = eval_sentences()
    if "--keras-probs" in sys.argv:  # in an environment with tensorflow and tf-keras (no torch needed)
        np.save(sys.argv[sys.argv.index("--keras-probs") + 1], keras_probs(sentences))
        return 0
    if "--check" in sys.argv:  # against a --keras-probs file
        theirs = np.load(sys.argv[sys.argv.index("--check") + 1])
        ours = np.exp(log_probs(load(), windows(sentences)[0]))
        print(f"{len(ours)} positions: max |p - p_keras| {np.abs(ours - theirs).max():.3g}, argmax equal "
              f"{np.mean(ours.argmax(-1) == theirs.argmax(-1)):.4f}, KL(keras || ours) "
              f"{kl_divergence(np.log(np.maximum(theirs, 1e-300)), np.log(ours)):.3g} nats")
        return 0
    w = load()
    print(f"{MODEL}: {len(w)} tensors, {sum(a.size for a in w.values()) / 1e6:.3f}M values")
    scorer = Scorer(w, sentences)
    lp = scorer.reference
    print(f"{len(lp)} positions; float model: top-1 = next character {np.mean(lp.argmax(-1) == scorer.targets):.3f}, "
          f"cross-entropy {-np.mean(lp[np.arange(len(lp)), scorer.targets]) / np.log(2):.2f} bits/char; "
          f"float vs float {scorer.score(w)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
