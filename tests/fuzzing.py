"""The mutation fuzzer shared by tests/test_fuzz.py (hypothesis draws the choices) and tools/fuzz.py
(a seeded random.Random draws them, for long runs).

A *seed* is a small valid file: an archive (several methods and layouts) or an input weight file
(.safetensors, .npy, .npz stored and deflated). A *mutation* turns its bytes into hostile bytes:
truncation or a bit flip at an offset chosen within a named region of the file format, or a
structured edit of the header (huge/negative/overlapping/wrong values, bad JSON, duplicate keys,
deep nesting), or, for archives, an edit of the manifest or of stored values *re-signed* with fresh
checksums so that the validation behind the checksums is exercised too (a NaN, an Inf, or a
negative scale in any stored float array of any method; codes and zero points beyond their range).

Each case runs the real command line (the click command built from `quantcli.cli.commands.app`, invoked the
way typer's CliRunner does) with a time limit, and `check_case` judges it:

* exit 1 or 2: exactly one stderr line starting `quant: error:`, no traceback, and the work folder
  holds nothing but the input (no output, no temp file);
* exit 0 on an archive: only when the result is the seed's own result (same inspect/verify JSON,
  byte-identical dequantized file), i.e. the mutation was provably harmless; or, for a re-signed edit
  of stored values or checksums, from a command that does not read them (inspect; verify for values)
  while the command that does read them refuses; or inspect of a file whose quant.format was edited,
  shown as the plain safetensors file it now is when an independent reader agrees;
* exit 0 on an input: only when an independent reader (numpy, the safetensors library) accepts the
  mutated file and agrees on every tensor's name, dtype and shape; after quantize, the archive
  must pass `verify` and list exactly those tensors;
* a bit flip in any stored array of an archive must make `verify` and `dequantize` exit 2 with a
  message that names the tensor.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import hashlib
import io
import json
import os
import shutil
import signal
import struct
import sys
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from typing import Any, Callable

import ml_dtypes
import numpy as np
import typer
from typer.testing import CliRunner

from quantcli import Spec, quantize_file
from quantcli.archive.container import KEY_MANIFEST, KEY_MANIFEST_SHA, KEY_PRODUCER
from quantcli.cli.commands import app
from quantcli.methods import METHODS
from quantcli.methods.base import NONNEGATIVE
from quantcli.io.safetensors import dtype_code, header_bytes

CLI = typer.main.get_command(app)  # built once: typer rebuilds it on every CliRunner.invoke (18 ms)
RUNNER = CliRunner()
TIME_LIMIT = 20.0  # seconds per command: far above any legitimate run on these tiny files
# The cost promise (docs/SECURITY.md, "Decode cost"): a command's time and peak memory are linear in
# the bytes it reads and writes, with a small constant, whatever a stream declares. Generous here
# (2 shared cores): an honest run on these files takes milliseconds and raises RSS by under 2 MB.
TIME_BASE, TIME_PER_BYTE = 5.0, 1e-6  # seconds, seconds per byte
RSS_BASE, RSS_PER_BYTE = 24 << 20, 64  # bytes, bytes per byte


class Hang(BaseException):
    """Raised by the alarm when a command runs past TIME_LIMIT."""


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str
    crash: str = ""  # an exception that escaped the CLI (a traceback), or "hang"
    seconds: float = 0.0
    rss_rise: int | None = None  # peak resident bytes above the start of the run (None: not measurable here)


def _hwm() -> int | None:
    """This process's peak resident set (VmHWM), in bytes; None where /proc does not say."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_hwm() -> int | None:
    """Reset the peak resident set to the current one (Linux: /proc/self/clear_refs "5"); returns it,
    or None when the kernel does not allow it (then a run's own peak cannot be told apart)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return _hwm()


def cost_problem(run: Run, nbytes: int) -> str:
    """Why a run broke the cost promise for `nbytes` read and written, or ''."""
    limit = TIME_BASE + TIME_PER_BYTE * nbytes
    if run.seconds > limit:
        return f"took {run.seconds:.1f} s for {nbytes} bytes (bound {limit:.1f} s)"
    limit = RSS_BASE + RSS_PER_BYTE * nbytes
    if run.rss_rise is not None and run.rss_rise > limit:
        return f"peak RSS rose {run.rss_rise / 2**20:.1f} MB for {nbytes} bytes (bound {limit / 2**20:.1f} MB)"
    return ""


def invoke(args: list[str]) -> Run:
    """Run `quant ARGS` in-process through the real click entry point, under a time limit."""
    def on_alarm(signum: int, frame: Any) -> None:
        raise Hang()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    base = _reset_hwm()
    start = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT)
    crash = ""
    code = 0
    try:
        with RUNNER.isolation() as (out, err, _), warnings.catch_warnings():
            warnings.simplefilter("always")  # every warning reaches stderr, not only a location's first
            try:
                CLI.main(args=args, prog_name="quant")
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except Hang:
                crash, code = "hang", -1
            except Exception as e:  # noqa: BLE001 - this is exactly what the fuzzer looks for
                crash, code = f"{type(e).__name__}: {e}", -1
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                sys.stdout.flush()
                sys.stderr.flush()
                sys_out, sys_err = out.getvalue(), err.getvalue()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    seconds = time.perf_counter() - start
    peak = _hwm() if base is not None else None
    return Run(code, sys_out.decode("utf-8", "replace"), sys_err.decode("utf-8", "replace"), crash, seconds,
               None if peak is None or base is None else max(0, peak - base))


def cli(*args: Any) -> Run:
    """`quant ARGS` in-process (arguments turned to strings): what the CLI tests call."""
    return invoke([str(a) for a in args])


def one_error(run: Run, *needles: str) -> str:
    """The promise for bad input: exit 2, no traceback, exactly one line `quant: error: ...`
    holding every needle. Returns the line."""
    assert run.exit_code == 2 and not run.crash, (run.exit_code, run.crash, run.stderr)
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("quant: error: "), run.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def resign_file(src: str, dst: str, edit: Callable[[dict[str, Any], dict[str, np.ndarray], dict[str, Any]], None]
                ) -> str:
    """The archive at `src` with `edit(manifest, arrays, meta)` applied and every checksum
    recomputed honestly (a malicious but self-consistent archive), written to `dst`."""
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(_resign(Seed("x", "archive", ".qnt.safetensors", data, []), edit))
    return dst


# --------------------------------------------------------------------------------------------
# Choosers: the fuzzer asks for numbers; hypothesis or random.Random answers.


class Chooser(ABC):
    @abstractmethod
    def int(self, lo: int, hi: int) -> int:
        """A whole number in lo..hi, both included."""

    def choice(self, items: list[Any]) -> Any:
        return items[self.int(0, len(items) - 1)]


class RandomChooser(Chooser):
    def __init__(self, rng: Any):
        self.rng = rng

    def int(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)


class DrawChooser(Chooser):
    """Backed by hypothesis' `data.draw`, so failures shrink to the simplest mutation."""

    def __init__(self, data: Any):
        from hypothesis import strategies as st
        self.data, self.st = data, st

    def int(self, lo: int, hi: int) -> int:
        return self.data.draw(self.st.integers(lo, hi))


# --------------------------------------------------------------------------------------------
# Seeds


@dataclass
class Seed:
    name: str
    kind: str  # "archive", "input" or "importance" (statistics for the input seed's `w`)
    ext: str
    data: bytes
    regions: list[tuple[str, int, int]]
    tensors: dict[str, str] = field(default_factory=dict)  # archive: stored array -> tensor name
    reference: dict[str, Any] = field(default_factory=dict)  # archive: command -> seed result; importance: model


def st_layout(data: bytes) -> tuple[int, dict[str, Any]]:
    n = int.from_bytes(data[:8], "little")
    return n, json.loads(data[8:8 + n])


def st_regions(data: bytes, archive: bool) -> list[tuple[str, int, int]]:
    """Named byte ranges of a safetensors file: length, JSON (split up for archives), padding, arrays."""
    n, header = st_layout(data)
    raw = data[8:8 + n]
    text_end = 8 + len(raw.rstrip(b" "))
    regions = [("length", 0, 8)]
    if archive:
        meta = header["__metadata__"]
        spans = []
        for key, label in ((KEY_MANIFEST, "manifest"), (KEY_MANIFEST_SHA, "manifest-sha"),
                           (KEY_PRODUCER, "producer")):
            value = json.dumps(meta[key])[1:-1].encode()
            at = data.find(value, 8)
            spans.append((at, at + len(value), label))
        pos = 8
        for start, end, label in sorted(spans):
            if start > pos:
                regions.append(("header-json", pos, start))
            regions.append((label, start, end))
            pos = end
        regions.append(("header-json", pos, text_end))
    else:
        regions.append(("header-json", 8, text_end))
    if text_end < 8 + n:
        regions.append(("padding", text_end, 8 + n))
    for name, info in header.items():
        if name != "__metadata__" and info["data_offsets"][1] > info["data_offsets"][0]:
            b, e = info["data_offsets"]
            regions.append((f"array:{name}", 8 + n + b, 8 + n + e))
    return regions


def npy_regions(data: bytes) -> list[tuple[str, int, int]]:
    hlen = int.from_bytes(data[8:10], "little")
    return [("magic", 0, 8), ("header-length", 8, 10), ("npy-header", 10, 10 + hlen),
            ("npy-data", 10 + hlen, len(data))]


def npz_regions(data: bytes) -> list[tuple[str, int, int]]:
    regions = []
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
        end_of_members = 0
        for info in infos:
            local = data[info.header_offset:info.header_offset + 30]
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            start = info.header_offset + 30 + name_len + extra_len
            regions.append((f"zip-local-header:{info.filename}", info.header_offset, start))
            regions.append((f"zip-member:{info.filename}", start, start + info.compress_size))
            end_of_members = max(end_of_members, start + info.compress_size)
    regions.append(("zip-central-directory", end_of_members, len(data)))
    return [r for r in regions if r[2] > r[1]]


def build_seeds(folder: str) -> dict[str, Seed]:
    """Write the seed files under `folder` and describe them (with reference results for archives)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(6)
    w = rng.standard_normal((6, 12)).astype(np.float32)
    bias = rng.standard_normal(12).astype(np.float32)
    ids = np.arange(3, dtype=np.int64)
    temp = np.asarray(0.7, dtype=np.float32)  # a 0-d tensor: kept, and must come back 0-d
    src = os.path.join(folder, "src.safetensors")
    layout = [("w", "F32", w.shape, w.nbytes), ("bias", "F32", bias.shape, bias.nbytes),
              ("ids", "I64", ids.shape, ids.nbytes), ("temp", "F32", temp.shape, temp.nbytes)]
    with open(src, "wb") as f:
        f.write(header_bytes(layout, {"format": "pt"}) + w.tobytes() + bias.tobytes() + ids.tobytes()
                + temp.tobytes())
    seeds: dict[str, Seed] = {}
    specs = {
        "archive-int4-asym-group": Spec(bits=4, scheme="asymmetric", granularity="group", group_size=8),
        "archive-int8-sym-channel": Spec(bits=8),
        "archive-int3-sym-tensor": Spec(bits=3, granularity="tensor"),
        "archive-fp16": Spec(method="fp16"),
        "archive-bf16": Spec(method="bf16"),
        "archive-nf4-group": Spec(method="nf", bits=4, granularity="group", group_size=8),
        "archive-kmeans-norm": Spec(method="kmeans", bits=3, normalize="group", group_size=8),
        "archive-kmeans-rows": Spec(method="kmeans", bits=2, granularity="group", codebook_rows=3),
        "archive-vq": Spec(method="vq", bits=5, vector_dim=3),
        "archive-pq": Spec(method="pq", subvector_dim=3, centroids=5),
        # format version 2: entropy-coded codes (crans, rans), lossless planes
        "archive-ecsq": Spec(method="ecsq", step=0.05),
        "archive-ecsq-trellis": Spec(method="ecsq", step=0.05, trellis=True),
        "archive-int4-entropy": Spec(bits=4, scheme="asymmetric", granularity="group", group_size=4, codec="entropy"),
        "archive-lossless": Spec(method="lossless"),
    }
    for name, spec in specs.items():
        path = os.path.join(folder, f"{name}.qnt.safetensors")
        quantize_file([src], path, spec)
        data = open(path, "rb").read()
        _, header = st_layout(data)
        manifest = json.loads(header["__metadata__"][KEY_MANIFEST])
        owners = {stored: t["name"] for t in manifest["tensors"] for stored in t["arrays"].values()}
        seed = Seed(name, "archive", ".qnt.safetensors", data, st_regions(data, True), owners)
        seed.reference = archive_results(path, os.path.join(folder, f"{name}.out.safetensors"))
        seeds[name] = seed
    # entropy-coded streams need more values than `w` to pay for their tables: every codec (rans, crans,
    # lossless planes) under every method that stores one, from a 64 x 256 tensor with outlier columns
    big = (rng.standard_normal((64, 256)) * 0.05).astype(np.float32)
    big[:, :8] *= 20
    entropy_src = os.path.join(folder, "src-entropy.safetensors")
    with open(entropy_src, "wb") as f:
        f.write(header_bytes([("w", "F32", big.shape, big.nbytes), ("ids", "I64", ids.shape, ids.nbytes)],
                             {"format": "pt"}) + big.tobytes() + ids.tobytes())
    streams = {
        "stream-ecsq": Spec(method="ecsq", step=0.01),  # crans
        "stream-ecsq-trellis": Spec(method="ecsq", step=0.01, trellis=True),  # crans, DQ contexts
        "stream-int4-group": Spec(bits=4, scheme="asymmetric", granularity="group", group_size=32, codec="entropy"),
        "stream-int8": Spec(bits=8, codec="entropy"),  # rans codes
        "stream-nf4": Spec(method="nf", bits=4, granularity="group", group_size=32, codec="entropy"),
        "stream-kmeans": Spec(method="kmeans", bits=3, codec="entropy"),
        "stream-vq": Spec(method="vq", bits=6, vector_dim=2, codec="entropy"),
        "stream-pq": Spec(method="pq", subvector_dim=4, centroids=16, codec="entropy"),  # lossless codebooks
        "stream-fp16": Spec(method="fp16", codec="entropy"),  # lossless planes of float16
        "stream-lossless": Spec(method="lossless"),  # lossless planes of float32, the file restored
    }
    for name, spec in streams.items():
        path = os.path.join(folder, f"{name}.qnt.safetensors")
        quantize_file([entropy_src], path, spec)
        data = open(path, "rb").read()
        seed = Seed(name, "archive", ".qnt.safetensors", data, st_regions(data, True))
        seed.tensors = {stored: t["name"] for t in _manifest(seed)["tensors"] for stored in t["arrays"].values()}
        assert _coded(seed), f"seed {name} stores no entropy-coded stream"
        seed.reference = archive_results(path, os.path.join(folder, f"{name}.out.safetensors"))
        seeds[name] = seed
    data = open(src, "rb").read()
    # calibration statistics for `w` (--importance): mutated, they must be refused or harmless
    diag = (w * w).mean(axis=0).astype(np.float32)
    gram = (w.T @ w / len(w)).astype(np.float32)
    layout = [("w", "F32", diag.shape, diag.nbytes), ("w.gram", "F32", gram.shape, gram.nbytes)]
    stats = header_bytes(layout, {"format": "quant-importance", "tokens": str(len(w))}) + diag.tobytes() + gram.tobytes()
    seeds["importance"] = Seed("importance", "importance", ".safetensors", stats, st_regions(stats, False),
                               reference={"model": data})
    seeds["input-safetensors"] = Seed("input-safetensors", "input", ".safetensors", data, st_regions(data, False))
    buf = io.BytesIO()
    np.save(buf, w)
    seeds["input-npy"] = Seed("input-npy", "input", ".npy", buf.getvalue(), npy_regions(buf.getvalue()))
    buf = io.BytesIO()
    np.save(buf, np.asfortranarray(w.astype(np.float64)))
    seeds["input-npy-f64-fortran"] = Seed("input-npy-f64-fortran", "input", ".npy", buf.getvalue(),
                                          npy_regions(buf.getvalue()))
    for name, save in (("input-npz", np.savez), ("input-npz-deflate", np.savez_compressed)):
        buf = io.BytesIO()
        save(buf, w=w, bias=bias)
        seeds[name] = Seed(name, "input", ".npz", buf.getvalue(), npz_regions(buf.getvalue()))
    warm_up(folder, src)
    return seeds


def warm_up(folder: str, src: str) -> None:
    """Run every option set the fuzzer draws once, so each kernel is loaded (numba's cache) before
    the cost oracle measures a case: loading one costs memory and time once per process."""
    out, back = os.path.join(folder, "warm.qnt.safetensors"), os.path.join(folder, "warm-back")
    for options in QUANTIZE_OPTIONS:
        for args in (["quantize", src, "-o", out, "-q", *options], ["dequantize", out, "-o", back + ".safetensors", "-q"],
                     ["dequantize", out, "-o", back + ".npz", "-q"]):
            invoke(args)
    for leftover in (out, back + ".safetensors", back + ".npz"):
        if os.path.exists(leftover):
            os.unlink(leftover)


def archive_results(path: str, out: str) -> dict[str, Any]:
    """What inspect --json, verify --json and dequantize produce for an archive (path-independent)."""
    results: dict[str, Any] = {}
    r = invoke(["inspect", path, "--json"])
    assert r.exit_code == 0, r.stderr
    results["inspect"] = _strip_paths(json.loads(r.stdout))
    r = invoke(["verify", path, "--json"])
    assert r.exit_code == 0, r.stderr
    results["verify"] = _strip_paths(json.loads(r.stdout))
    r = invoke(["dequantize", path, "-o", out, "-q"])
    assert r.exit_code == 0, r.stderr
    with open(out, "rb") as f:
        results["dequantize"] = f.read()
    os.unlink(out)
    return results


def _strip_paths(doc: Any) -> Any:
    if isinstance(doc, dict):
        # File sizes may differ harmlessly: an edit of the (unchecked) producer string can re-pad the header.
        return {k: _strip_paths(v) for k, v in doc.items()
                if k not in ("path", "output", "archive", "seconds", "file_bytes", "ratio")}
    if isinstance(doc, list):
        return [_strip_paths(v) for v in doc]
    return doc


# --------------------------------------------------------------------------------------------
# Mutations. Each returns (label, mutated bytes, expectation): "reject" (every command must fail),
# "oracle" (exit 0 allowed when the oracle agrees), "detect-corruption" (verify and dequantize must
# exit 2 naming the tensor), or "reject-all" / "reject-read" / "reject-decode" for re-signed edits
# (every command / the commands that read checksums / dequantize must fail).


def _region(seed: Seed, c: Chooser) -> tuple[str, int, int]:
    return c.choice(seed.regions)


def truncate(seed: Seed, c: Chooser) -> tuple[str, bytes, str]:
    label, start, end = _region(seed, c)
    at = c.int(start, end - 1)
    return f"truncate@{label}", seed.data[:at], "reject"


def bitflip(seed: Seed, c: Chooser) -> tuple[str, bytes, str]:
    label, start, end = _region(seed, c)
    at, bit = c.int(start, end - 1), c.int(0, 7)
    data = bytearray(seed.data)
    data[at] ^= 1 << bit
    expect = "detect-corruption" if seed.kind == "archive" and label.startswith("array:") else "oracle"
    return f"bitflip@{label}", bytes(data), expect


def byte_edit(seed: Seed, c: Chooser) -> tuple[str, bytes, str]:
    """Overwrite, insert or delete a few bytes anywhere in a region."""
    label, start, end = _region(seed, c)
    at = c.int(start, end - 1)
    data = bytearray(seed.data)
    how = c.choice(["overwrite", "insert", "delete"])
    chunk = bytes(c.choice([0x00, 0xFF, 0x22, 0x7B, 0x5D, 0x2C, 0x30, 0x80]) for _ in range(c.int(1, 4)))
    if how == "overwrite":
        data[at:at + len(chunk)] = chunk
    elif how == "insert":
        data[at:at] = chunk
    else:
        del data[at:at + len(chunk)]
    return f"bytes-{how}@{label}", bytes(data), "oracle"


# params whose absence is legal (the archive then decodes differently, or the same): not a forgery to refuse
OPTIONAL_PARAMS = {"dq", "shrink", "scale_search", "importance"}
HUGE_SHAPES = [[2**40, 2**40], [2**31, 2**31, 2**31], [10**6, 10**6], [2**64], [0, 2**63], [2**62, 0, 2**62],
               [1] * 70, [-1, 12], [-6, -12], [6.0, 12], [True, 12], "6x12", None, [[6], [12]], [2**63 - 1]]
BAD_OFFSETS = ["negative", "overlap", "beyond", "swap", "hole", "float", "one"]
BAD_DTYPES = ["F64", "I8", "U8", "BOOL", "F8_E4M3", "I64", "Q4", "f32", "", 7, None, ["F32"]]


def _entries(header: dict[str, Any]) -> list[str]:
    return sorted(k for k in header if k != "__metadata__")


def _pack(header_text: bytes) -> bytes:
    return len(header_text).to_bytes(8, "little") + header_text


def header_edit(seed: Seed, c: Chooser) -> tuple[str, bytes, str]:
    """Structured edits of a safetensors header (archives and .safetensors inputs)."""
    n, header = st_layout(seed.data)
    body = seed.data[8 + n:]
    names = _entries(header)
    name = c.choice(names)
    kind = c.choice(["shape", "offsets", "dtype", "bad-json", "duplicate-key", "deep-nesting", "metadata",
                     "length-field", "drop-entry", "extra-entry", "rename-entry", "not-object"])
    info = header[name]
    if kind == "shape":
        info["shape"] = c.choice(HUGE_SHAPES + [list(reversed(info["shape"])), info["shape"] + [1],
                                                info["shape"][:-1]])
    elif kind == "offsets":
        b, e = info["data_offsets"]
        how = c.choice(BAD_OFFSETS)
        other = header[c.choice(names)]["data_offsets"]
        info["data_offsets"] = {"negative": [-8, e], "overlap": [other[0], other[0] + (e - b)],
                                "beyond": [b, e + 8 * c.int(1, 1 << 20)], "swap": [e, b],
                                "hole": [b + 8, e + 8], "float": [float(b), float(e)], "one": [b]}[how]
        kind = f"offsets-{how}"
    elif kind == "dtype":
        info["dtype"] = c.choice(BAD_DTYPES)
    elif kind == "metadata":
        header["__metadata__"] = c.choice([{"x": 5}, ["a"], {"x": {"y": "z"}}, "text", {"x": None}])
    elif kind == "drop-entry":
        del header[name]
    elif kind == "extra-entry":
        header["zz-extra"] = {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]}
    elif kind == "rename-entry":
        header[name + "~"] = header.pop(name)
    text = json.dumps(header, separators=(",", ":")).encode()
    if kind == "not-object":
        text = c.choice([b"[]", b"null", b"\"x\"", b"17"])
    elif kind == "bad-json":
        at = c.int(0, len(text) - 1)
        text = text[:at] + c.choice([b"", b"{", b",", b"}", b"\"", b"\xff", b"NaN", b"\\"]) + text[at + 1:]
    elif kind == "duplicate-key":
        key = json.dumps(name).encode()
        entry = key + b":" + json.dumps(header[name], separators=(",", ":")).encode()
        text = text[:1] + entry + b"," + text[1:]
    elif kind == "deep-nesting":
        depth = c.choice([200, 5000, 100000])
        text = text[:-1] + b',"deep":' + b"[" * depth + b"]" * depth + b"}"
    text += b" " * (-(len(text) + 8) % 8)
    head = _pack(text)
    if kind == "length-field":
        value = c.choice([0, 1, 7, len(text) - 1, len(text) + 1, len(text) + len(body), 2**32, 2**63, 2**64 - 1])
        head = value.to_bytes(8, "little") + text
    return f"header-{kind}", head + body, "oracle"


def _resign(seed: Seed, edit: Callable[[dict[str, Any], dict[str, np.ndarray], dict[str, Any]], None],
            tensor_sums: bool = True) -> bytes:
    """Apply `edit(manifest, arrays, meta)` to an archive, then recompute the manifest checksum (and,
    with `tensor_sums`, every tensor's checksum) honestly."""
    n, header = st_layout(seed.data)
    base = 8 + n
    meta = header.pop("__metadata__")
    from quantcli.io.safetensors import DTYPES
    arrays = {}
    for k, info in header.items():
        b, e = info["data_offsets"]
        arrays[k] = np.frombuffer(seed.data[base + b:base + e], dtype=DTYPES[info["dtype"]]).reshape(
            info["shape"]).copy()
    manifest = json.loads(meta[KEY_MANIFEST])
    edit(manifest, arrays, meta)
    tensors = manifest.get("tensors") if isinstance(manifest, dict) else None
    for t in tensors if isinstance(tensors, list) and tensor_sums else []:
        if isinstance(t, dict) and isinstance(t.get("arrays"), dict) and all(
                isinstance(s, str) and s in arrays for s in t["arrays"].values()):
            h = hashlib.sha256()
            for role in sorted(t["arrays"]):
                h.update(arrays[t["arrays"][role]].tobytes())
            t["sha256"] = h.hexdigest()
    meta[KEY_MANIFEST] = json.dumps(manifest)
    meta[KEY_MANIFEST_SHA] = hashlib.sha256(meta[KEY_MANIFEST].encode()).hexdigest()
    layout = [(k, header[k]["dtype"], arrays[k].shape, arrays[k].nbytes) for k in
              sorted(arrays, key=lambda k: header[k]["data_offsets"][0])]
    return header_bytes(layout, meta) + b"".join(arrays[k].tobytes() for k, *_ in layout)


BAD_PARAMS = {"bits": [0, 1, 9, 16, -3, "4", 4.0, None, True, 2**70], "scheme": ["sym", "", None, 1],
              "granularity": ["row", "", None, ["group"]], "group_size": [0, -1, "8", None, 2.5, True],
              "scale_dtype": ["float64", "auto", "", None]}


def manifest_edit(seed: Seed, c: Chooser) -> tuple[str, bytes, str]:
    """Edits of an archive's manifest and stored values that a checksum cannot catch (re-signed):
    each makes the archive invalid, so every command that reads the edited part must refuse it."""
    n, header = st_layout(seed.data)
    manifest = json.loads(header["__metadata__"][KEY_MANIFEST])
    quantized = [i for i, t in enumerate(manifest["tensors"]) if t["method"] != "keep"]
    i = c.choice(quantized)
    t0 = manifest["tensors"][i]
    options = (["param"] if set(BAD_PARAMS) & set(t0["params"]) else []) + [
        "drop-param", "method", "orig-dtype", "shape", "drop-role", "rename-array", "share-array", "duplicate-tensor",
        "drop-tensor", "tensors-not-list", "version", "format", "metrics", "sha256",
               "name-type", "deep-manifest"]
    floats = sorted(role for role, stored in t0["arrays"].items()
                    if header[stored]["dtype"] in ("F32", "F16", "BF16"))
    if floats and t0["method"] != "lossless":  # lossless values are data, like kept tensors: NaN is legal
        options.append("float-values")  # every stored float array of every method: finite, sign as required
    if t0["method"] == "uniform":  # bit-packed codes and zero points (an entropy-coded one is a stream: "stream")
        role, edit_kind = ("codes", "code-values") if t0["params"]["scheme"] == "symmetric" else ("zero", "zero-values")
        options += [edit_kind] if role not in t0.get("codecs", {}) else []
    options.append("json-numbers")  # NaN, +-Infinity, 10**400: refused on open by every command
    if "codes" in t0["arrays"]:
        options.append("codes-beyond")  # entropy-coded codes past the method's alphabet
    if floats:
        options.append("huge-values")  # finite stored values near the top of their dtype: refused or finite
    kind = c.choice(options)
    command = "all"  # which commands must refuse: value edits are only seen when decoding

    def edit(m: dict[str, Any], arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        nonlocal command
        t = m["tensors"][i]
        if kind == "param":
            key = c.choice(sorted(set(BAD_PARAMS) & set(t["params"])))
            values = BAD_PARAMS[key]
            if key == "bits" and t.get("codecs"):  # a stream's codes need no fixed width: 9 or 16 may be legal
                values = [v for v in values if not isinstance(v, int) or isinstance(v, bool) or v < 1 or v > 16]
            t["params"][key] = c.choice(values)
        elif kind == "drop-param":  # a required one: an optional one (dq, shrink, ...) may go
            required = sorted(set(t["params"]) - OPTIONAL_PARAMS)
            if required:
                t["params"].pop(c.choice(required))
            else:
                t["params"] = None
        elif kind == "method":
            t["method"] = c.choice([m for m in ("kmeans", "uniform", "", None, "keep", "UNIFORM", 3) if m != t["method"]])
        elif kind == "orig-dtype":
            t["dtype"] = c.choice(["I64", "BOOL", "U8", "Q4", None])
        elif kind == "shape":
            t["shape"] = c.choice(HUGE_SHAPES + [[t["shape"][0] + 1] + t["shape"][1:], t["shape"] + [2], []])
            if t.get("codecs"):  # a stream's length is no shape: only decoding it can show the count is wrong
                command = "read"
        elif kind == "drop-role":
            t["arrays"].pop(c.choice(sorted(t["arrays"])))
        elif kind == "rename-array":
            role = c.choice(sorted(t["arrays"]))
            t["arrays"][role] = c.choice(sorted(arrays))  if c.int(0, 1) else t["arrays"][role] + "x"
            if t["arrays"][role] == f"{t['name']}/{role}":
                t["arrays"][role] = 7
        elif kind == "share-array":
            other = m["tensors"][(i + 1) % len(m["tensors"])]
            other["arrays"] = dict(t["arrays"])
        elif kind == "duplicate-tensor":
            m["tensors"].append(json.loads(json.dumps(t)))
        elif kind == "drop-tensor":
            m["tensors"].pop(i)
        elif kind == "tensors-not-list":
            m["tensors"] = c.choice([{}, None, "w", 3])
        elif kind == "version":
            meta["quant.version"] = c.choice(["3", "0", "1.0", "", "99999999999999999999", "\u0661"])
        elif kind == "format":
            meta["quant.format"] = c.choice(["quant-archive2", "", "pt"])
            command = "read"  # inspect then shows it as the plain safetensors file it now is
        elif kind == "metrics":
            t["metrics"] = c.choice([{"mse": "abc"}, {"sqnr_db": [1]}, [], {"max_abs_err": None}, {"mse": True}])
        elif kind == "sha256":
            meta_only = c.int(0, 1)
            t["sha256"] = "0" * 64 if meta_only else 5
            command = "read"  # structure is fine: verify and dequantize must catch it
        elif kind == "name-type":
            t["name"] = c.choice([None, 5, ["w"]])
        elif kind == "deep-manifest":
            t["params"]["x"] = json.loads("[" * 50 + "]" * 50)
            t["params"] = c.choice([t["params"], "[" * 3000])
            m["tensors"][i]["metrics"] = json.loads("[" * 60 + "]" * 60)
        elif kind == "float-values":  # re-signed: only the reader's value rules can tell
            role = c.choice(floats)
            flat = arrays[t["arrays"][role]].reshape(-1)
            negative = [-1.0] if METHODS[t["method"]].value_rules.get(role) == NONNEGATIVE else []
            flat[c.int(0, flat.size - 1)] = c.choice([np.nan, np.inf, -np.inf] + negative)
            command = "decode"
        elif kind == "json-numbers":
            where = t["metrics"] if c.int(0, 1) else t["params"]
            where[c.choice(["mse", "sqnr_db", "extra"])] = c.choice([float("nan"), float("inf"), float("-inf"),
                                                                   10**400, -(2**64)])
        elif kind == "codes-beyond":
            from quantcli.codecs import CODECS
            from quantcli.archive.storage import logical_layout
            lay = logical_layout(t["method"], tuple(t["shape"]), t["params"])["codes"]
            codes = np.zeros(lay.shape, dtype=np.uint16)
            value = c.choice([v for v in (2 ** lay.bits, 2 ** lay.bits + 1, 255, 256, 65535) if v >> lay.bits])
            codes.reshape(-1)[c.int(0, codes.size - 1)] = value
            data, params = CODECS["crans"].encode(codes, alphabet=value + 1)
            arrays[t["arrays"]["codes"]] = np.frombuffer(data, np.uint8).copy()
            t["codecs"] = {**t.get("codecs", {}), "codes": {"codec": "crans", **params}}
            meta["quant.version"] = "2"
            command = "decode"
        elif kind == "huge-values":
            role = c.choice(floats)
            a = arrays[t["arrays"][role]]
            top = float(np.finfo(np.float16).max) if a.dtype == np.float16 else float(
                ml_dtypes.finfo(a.dtype).max) if a.dtype.itemsize == 2 else float(np.finfo(np.float32).max)
            flat = a.reshape(-1)
            picks = range(flat.size) if c.int(0, 1) else [c.int(0, flat.size - 1)]
            for at in picks:
                flat[at] = c.choice([top, -top, top / 2])
            command = "finite"
        elif kind in ("code-values", "zero-values"):
            role = {"code-values": "codes", "zero-values": "zero"}[kind]
            a = arrays[t["arrays"][role]]
            flat = a.reshape(-1)
            at = c.int(0, flat.size - 1)
            if role == "zero":
                flat[at] = c.int(2 ** t["params"]["bits"], 255)
            else:
                bits = t["params"]["bits"]
                codes = np.unpackbits(a, bitorder="little")
                k = c.int(0, int(np.prod(t["shape"])) - 1)
                codes[k * bits:(k + 1) * bits] = 1  # 2^bits - 1: one past the symmetric range
                a[...] = np.packbits(codes, bitorder="little")
            command = "decode"

    data = _resign(seed, edit, tensor_sums=kind != "sha256")
    if kind == "deep-manifest":
        # A manifest nested past Python's recursion limit (text edit, then re-signed by hand).
        n2, header2 = st_layout(data)
        meta = header2["__metadata__"]
        deep = "[" * 100000 + "]" * 100000
        meta[KEY_MANIFEST] = '{"tensors":' + deep + "}"
        meta[KEY_MANIFEST_SHA] = hashlib.sha256(meta[KEY_MANIFEST].encode()).hexdigest()
        text = json.dumps(header2, separators=(",", ":")).encode()
        text += b" " * (-(len(text) + 8) % 8)
        data = _pack(text) + data[8 + n2:]
    return f"resigned-{kind}", data, "finite" if command == "finite" else f"reject-{command}"


HOSTILE_VALUES = [0, 1, -1, 2, 7, 255, 2**16, 2**16 + 1, 2**31, 2**40, 2**63 - 1, None, "x", "rans", [], {}, 2.5, True]


def _leaves(doc: Any) -> list[tuple[Any, Any]]:
    """(container, key) of every scalar in a codec record, nested plane records included."""
    out: list[tuple[Any, Any]] = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc)
    for k, v in items:
        out += _leaves(v) if isinstance(v, (dict, list)) else [(doc, k)]
    return out


def _manifest(seed: Seed) -> dict[str, Any]:
    return json.loads(st_layout(seed.data)[1]["__metadata__"][KEY_MANIFEST])


def _coded(seed: Seed) -> list[tuple[int, str]]:
    """(tensor index, role) of every entropy-coded array of an archive seed."""
    return [(i, role) for i, t in enumerate(_manifest(seed)["tensors"]) for role in sorted(t.get("codecs", {}))]


def stream_edit(seed: Seed, c: Chooser) -> tuple[str, bytes, str]:
    """Forged entropy-coded streams (rans, crans, lossless planes), re-signed so every checksum holds:
    stream bytes overwritten, the stream cut short (its byte count made to match), one codec param
    (lanes, alphabet, table bytes, a plane's codec or byte count, ...) set to a hostile value, the lane
    count forged down to 1 (rans params, the crans header's varint), or the codec name swapped. Each
    decoder must refuse in one line naming the file and tensor, or decode values that are finite (but
    for lossless data, which may be anything), within the cost bounds (`cost_problem`)."""
    manifest = _manifest(seed)
    i, role = c.choice(_coded(seed))
    kind = c.choice(["bytes", "cut", "param", "lanes", "codec"])
    exact = METHODS[manifest["tensors"][i]["method"]].exact

    def edit(m: dict[str, Any], arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        t = m["tensors"][i]
        record, stored = t["codecs"][role], t["arrays"][role]
        a = arrays[stored].reshape(-1)
        if kind == "bytes":
            for _ in range(c.int(1, 4)):
                a[c.int(0, a.size - 1)] = c.int(0, 255)
        elif kind == "cut":
            keep = c.int(0, a.size - 1)
            arrays[stored] = a[:keep].copy()
            where = [(d, k) for d, k in _leaves(record) if k == "nbytes"]
            if where:  # lossless: one plane's count, so the total no longer matches its planes
                d, k = c.choice(where)
                d[k] = max(0, d[k] - (a.size - keep))
        elif kind == "param":
            d, k = c.choice([(d, k) for d, k in _leaves(record) if k != "codec" or d is not record])
            d[k] = c.choice(HOSTILE_VALUES)
        elif kind == "lanes" and record["codec"] == "crans":
            from quantcli.codecs import context
            (_, _), pos = context._varints(a, 4, 2)
            (lanes,), end = context._varints(a, pos, 1)
            forged = np.concatenate([a[:pos], np.frombuffer(context._uleb(c.choice([1, 2, lanes + 1, 2**20])),
                                                              np.uint8), a[end:]])
            arrays[stored] = forged
            record["nbytes"] = int(forged.size)
        elif kind == "lanes":  # rans (codes, or a lossless plane through rans)
            d, k = c.choice([(d, k) for d, k in _leaves(record) if k == "lanes"] or [(record, "lanes")])
            d[k] = c.choice([1, 2, 0, 2**20])
        else:
            record["codec"] = c.choice([x for x in ("rans", "crans", "lossless", "bitpack") if x != record["codec"]])

    data = _resign(seed, edit)
    return f"stream-{kind}", data, "forged-data" if exact else "forged"


# Tensor names that are data, not paths or markup: each must survive quantize -> verify ->
# dequantize (.safetensors and .npz) intact, or be refused with one line; never merged or crashed on.
HOSTILE_NAMES = ["a\u0000x", "a\u0000y", "../evil", "/abs", "a/b", "a\\b", "[/x]", "[bold]w", "line\nbreak",
                 "\ud800", "w\udcff", "\u202eevil", "", " ", "w.npy", "x" * 3000, "\u00e9\u4e2d"]


def name_edit(seed: Seed, c: Chooser) -> tuple[str, bytes, str]:
    """Rename one or two tensors of a .safetensors input to hostile names (JSON escapes, so lone
    surrogates and NUL reach the reader exactly as a hostile file would hold them)."""
    n, header = st_layout(seed.data)
    body = seed.data[8 + n:]
    names = _entries(header)
    picks = [c.choice(HOSTILE_NAMES) for _ in range(c.int(1, 2))]
    text = json.dumps(header, separators=(",", ":"))
    for old, new in zip(names, picks):
        text = text.replace(json.dumps(old) + ":", json.dumps(new) + ":", 1)
    raw = text.encode()
    raw += b" " * (-(len(raw) + 8) % 8)
    return f"names-{len(picks)}", _pack(raw) + body, "oracle"


EXTREME_VALUES = ["top", "one-top", "denormal", "tiny-and-huge", "one-huge", "beyond-float32"]


def value_edit(seed: Seed, c: Chooser) -> tuple[str, bytes, str]:
    """Fill one float array of an input with extreme but legal values (float32's largest, denormals,
    1e38 beside 1e-38, 1e300 in float64): quantize must succeed (an archive whose round trip is
    finite) or refuse in one line, with no warning on stderr."""
    if seed.ext == ".npy":
        label, start, end = next(r for r in seed.regions if r[0] == "npy-data")
        dtype = np.dtype(np.float64 if "f64" in seed.name else np.float32)
    else:
        n, header = st_layout(seed.data)
        floats = [r for r in seed.regions if r[0].startswith("array:") and header[r[0][6:]]["dtype"] == "F32"]
        label, start, end = c.choice(floats)
        dtype = np.dtype(np.float32)
    count = (end - start) // dtype.itemsize
    kind = c.choice(EXTREME_VALUES)
    top = float(np.finfo(np.float32).max)
    v = np.random.default_rng(c.int(0, 2**31)).standard_normal(count)
    v /= max(1.0, float(np.abs(v).max()))  # |v| <= 1: scaled to the top below stays finite
    if kind == "top":
        v = np.where(np.arange(count) % 2, -top, top)
    elif kind == "one-top":
        v[c.int(0, count - 1)] = c.choice([top, -top])
    elif kind == "denormal":
        v = np.full(count, float(np.float32(1e-45)))
    elif kind == "tiny-and-huge":
        v = np.where(np.arange(count) % 2, 1e38, 1e-38)
    elif kind == "one-huge":
        v = np.zeros(count)
        v[c.int(0, count - 1)] = 3e38
    else:
        v = v * (1e300 if dtype == np.float64 else top)
    data = bytearray(seed.data)
    data[start:end] = v.astype(dtype).tobytes()
    return f"values-{kind}@{label}", bytes(data), "oracle"


# quantize options the fuzzer draws for input seeds: each method, and steps at the edge of the grid
QUANTIZE_OPTIONS = [[], ["--bits", "4", "--granularity", "group", "--group-size", "8"], ["--method", "nf", "--bits", "4"],
                    ["--method", "kmeans", "--normalize", "group", "--group-size", "8"], ["--method", "vq"],
                    ["--method", "ecsq", "--step", "0.05"], ["--method", "ecsq", "--step", "1e-30", "--trellis"],
                    ["--method", "ecsq", "--step", "1e37"], ["--method", "lossless"],
                    ["--bits", "4", "--codec", "entropy", "--scheme", "asymmetric"]]


MUTATIONS: dict[str, Callable[[Seed, Chooser], tuple[str, bytes, str]]] = {
    "truncate": truncate, "bitflip": bitflip, "bytes": byte_edit, "header": header_edit, "manifest": manifest_edit,
    "names": name_edit, "values": value_edit, "stream": stream_edit,
}


def mutations_for(seed: Seed) -> list[str]:
    names = ["truncate", "bitflip", "bytes"]
    if seed.ext.endswith(".safetensors"):
        names.append("header")
    if seed.kind == "input" and seed.ext == ".safetensors":
        names.append("names")
    if seed.kind == "input" and seed.ext in (".safetensors", ".npy"):
        names.append("values")
    if seed.kind == "archive":
        names.append("manifest")
    if seed.kind == "archive" and _coded(seed):
        names.append("stream")
    return names


# --------------------------------------------------------------------------------------------
# Running and judging one case


@dataclass
class Outcome:
    seed: str
    mutation: str
    command: str
    result: str  # "exit 2", "exit 1", or "exit 0 ..." saying why exit 0 was acceptable
    problem: str = ""  # non-empty: the case failed
    seconds: float = 0.0
    rss_rise: int | None = None  # peak RSS above the run's start, bytes (None: not measurable)


def _listing(folder: str) -> list[str]:
    return sorted(os.listdir(folder))


def _one_line_error(run: Run) -> str:
    lines = run.stderr.splitlines()
    if run.crash:
        return f"escaped exception ({run.crash})"
    if "Traceback" in run.stderr or "Traceback" in run.stdout:
        return "traceback printed"
    if len(lines) != 1 or not lines[0].startswith("quant: error: "):
        return f"stderr is not one error line: {run.stderr!r}"
    return ""


RESTORED_FILE = "differ from the original file's"  # archive/original.py: the restored bytes, checked as a whole


def _naming_problem(seed: Seed, src: str, command: str, expect: str, stderr: str) -> str:
    """Every refusal of a hostile file names that file; a refused stream or stored value of an
    archive (found while decoding) names the tensor too."""
    if src not in stderr:
        return f"the error does not name the file: {stderr!r}"
    decoding = expect in ("forged", "forged-data", "reject-decode") and command in ("verify", "dequantize")
    whole_file = expect == "forged-data" and RESTORED_FILE in stderr  # a check of the file, not of one tensor
    if seed.kind == "archive" and decoding and "tensor '" not in stderr and not whole_file:
        return f"the error does not name the tensor: {stderr!r}"
    return ""


def reference_view(path: str, ext: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Name -> (dtype, shape) by an independent reader; raises when that reader refuses the file."""
    if ext == ".npy":
        a = np.load(path, allow_pickle=False)
        return {os.path.splitext(os.path.basename(path))[0]: (dtype_code(a.dtype), a.shape)}
    if ext == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: (dtype_code(z[k].dtype), z[k].shape) for k in z.files}
    from safetensors import safe_open
    with safe_open(path, framework="numpy") as f:  # validates the whole header and every offset
        return {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()}


def _our_view(doc: dict[str, Any]) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {t["name"]: (t["dtype"], tuple(t["shape"])) for t in doc["files"][0]["tensors"]}


EXIT_CODES = (0, 1, 2)  # in-process runs get no signals; a real process may also end 130/143
PREVIOUS = b"previous output: must survive any failed run byte for byte\n"


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def run_case(seed: Seed, mutation: str, c: Chooser, workdir: str) -> list[Outcome]:
    """Mutate `seed`, run every command that reads such a file, and judge each run. Every command
    runs over a previous output (it must be untouched when the command fails), the input's bytes
    must not change, and the folder (hidden files included) must hold nothing else afterwards."""
    label, data, expect = MUTATIONS[mutation](seed, c)
    if os.path.exists(workdir):
        shutil.rmtree(workdir)
    os.makedirs(workdir)
    src = os.path.join(workdir, "in" + seed.ext)
    with open(src, "wb") as f:
        f.write(data)
    src_digest = _digest(src)
    outcomes = []
    extra: list[str] = []
    if seed.kind == "archive":
        out = os.path.join(workdir, "out.safetensors")
        commands = {"inspect": ["inspect", src, "--json"], "verify": ["verify", src, "--json"],
                    "dequantize": ["dequantize", src, "-o", out, "-q"]}
    elif seed.kind == "importance":  # the mutated file is the statistics; the model is intact
        model = os.path.join(workdir, "model.safetensors")
        with open(model, "wb") as f:
            f.write(seed.reference["model"])
        extra = [os.path.basename(model)]
        out = os.path.join(workdir, "out.qnt.safetensors")
        commands = {"quantize": ["quantize", model, "-o", out, "-q", "--bits", "4", "--importance", src]}
    else:
        out = os.path.join(workdir, "out.qnt.safetensors")
        options = c.choice(QUANTIZE_OPTIONS) if mutation == "values" else []
        label += "".join(f" {o}" for o in options)
        commands = {"inspect": ["inspect", src, "--json"], "quantize": ["quantize", src, "-o", out, "-q", *options]}
    expected_listing = sorted([os.path.basename(src), os.path.basename(out)] + extra)
    for command, args in commands.items():
        with open(out, "wb") as f:
            f.write(PREVIOUS)
        run = invoke(args)
        o = Outcome(seed.name, label, command, f"exit {run.exit_code}", seconds=run.seconds, rss_rise=run.rss_rise)
        if run.crash or run.exit_code not in EXIT_CODES:
            o.problem = f"escaped exception ({run.crash})" if run.crash else f"exit status {run.exit_code}"
        elif run.exit_code:
            o.problem = _one_line_error(run)
            if not o.problem and _listing(workdir) != expected_listing:
                o.problem = f"left files behind: {_listing(workdir)}"
            if not o.problem and open(out, "rb").read() != PREVIOUS:
                o.problem = "a failed run changed the previous output"
            if not o.problem and run.exit_code == 2:
                o.problem = _naming_problem(seed, src, command, expect, run.stderr)
            if not o.problem and expect == "detect-corruption" and command in ("verify", "dequantize"):
                tensor = seed.tensors[label.split(":", 1)[1]]
                if run.exit_code != 2 or f"tensor {tensor!r}" not in run.stderr or "corrupt" not in run.stderr:
                    o.problem = f"corruption of {tensor!r} not reported as such: {run.stderr!r}"
        else:
            o.problem = _judge_success(seed, command, run, src, out, expect)
            if not o.problem and _listing(workdir) != expected_listing:
                o.problem = f"left files behind: {_listing(workdir)}"
            if not o.problem and command in ("inspect", "verify") and open(out, "rb").read() != PREVIOUS:
                o.problem = f"{command} changed a file it does not write"
            if seed.kind == "input":
                o.result = "exit 0 valid input"
            elif expect == "finite" and not o.problem:
                o.result = "exit 0 finite values"  # huge but finite stored values, decoded finite
            elif expect in ("forged", "forged-data") and not o.problem:
                o.result = "exit 0 edit not read" if command == "inspect" else "exit 0 forged stream decoded"
            elif expect in ("reject-read", "reject-decode") and not o.problem:
                o.result = "exit 0 edit not read"  # e.g. inspect of bad stored values: dequantize refuses
            elif command == "inspect" and json.loads(run.stdout)["files"][0]["kind"] == "weights":
                o.result = "exit 0 plain file"  # quant.format edited: no longer claims to be an archive
            else:
                o.result = "exit 0 same result"
        if not o.problem:
            written = os.path.getsize(out) if run.exit_code == 0 and os.path.exists(out) else 0
            decoded = len(seed.reference["dequantize"]) if seed.kind == "archive" else 0
            o.problem = cost_problem(run, len(data) + decoded + written)
        if not o.problem and _digest(src) != src_digest:
            o.problem = "the input file changed"
        for leftover in os.listdir(workdir):
            if leftover != os.path.basename(src) and leftover not in extra:
                p = os.path.join(workdir, leftover)
                shutil.rmtree(p) if os.path.isdir(p) else os.unlink(p)
        outcomes.append(o)
    by = {o.command: o for o in outcomes}
    if seed.kind == "archive" and by["verify"].result.startswith("exit 0") and not by["dequantize"].problem \
            and not by["dequantize"].result.startswith("exit 0"):  # verify promises what dequantize does
        by["dequantize"].problem = f"verify accepted an archive dequantize refuses ({by['dequantize'].result})"
    return outcomes


def _round_trip(out: str, expected: dict[str, tuple[str, tuple[int, ...]]], finite: bool = False) -> str:
    """An archive quantize accepted: verify accepts it, and dequantize to .safetensors (read back
    by the safetensors library) and to .npz (by numpy) gives every name back, or refuses in one line;
    from a `finite` input, every value that comes back is finite."""
    folder = os.path.dirname(out)
    for ext in (".safetensors", ".npz"):
        back = os.path.join(folder, "back" + ext)
        run = invoke(["dequantize", out, "-o", back, "-q"])
        if run.crash or run.exit_code not in (0, 2):
            return f"dequantize to {ext} of an accepted archive: exit {run.exit_code} {run.crash or run.stderr!r}"
        if run.exit_code:
            problem = _one_line_error(run)
            if problem or ext == ".safetensors":
                return problem or f"dequantize to .safetensors refused an accepted archive: {run.stderr!r}"
            continue
        try:
            names = set(reference_view(back, ext))
            nonfinite = nonfinite_output(back) if ext == ".safetensors" and finite else ""
        except Exception as e:  # noqa: BLE001
            return f"dequantized {ext} is refused by the reference reader ({type(e).__name__}: {e})"
        finally:
            os.unlink(back)
        if nonfinite:
            return nonfinite
        if names != set(expected):
            return f"dequantized {ext} holds {sorted(names)!r}, the input {sorted(expected)!r}"
    return ""


def nonfinite_output(path: str) -> str:
    """What of a dequantized .safetensors is NaN or Inf (every seed's values are finite), or ''."""
    from quantcli.io.safetensors import SafetensorsFile
    with SafetensorsFile(path) as f:
        for name in f.entries:
            a = f.read(name)
            v = a if a.dtype.kind == "f" else a.astype(np.float32)  # bfloat16 (kind V) widens exactly
            if a.dtype.kind in "fV" and a.size and not np.isfinite(v).all():
                return f"dequantize wrote non-finite values for {name!r} from an archive it accepted"
    return ""


def _judge_success(seed: Seed, command: str, run: Run, src: str, out: str, expect: str) -> str:
    if run.stderr.strip():
        return f"exit 0 but stderr says {run.stderr!r}"
    if expect == "reject":
        return "a truncated file was accepted"
    if seed.kind == "archive" and command == "dequantize" and expect != "forged-data" and nonfinite_output(out):
        return nonfinite_output(out)
    if seed.kind == "archive" and expect in ("finite", "forged", "forged-data"):
        return ""  # refused, or accepted and decoded finite (checked above; lossless data may be anything)
    if seed.kind == "archive":
        if expect == "detect-corruption" and command in ("verify", "dequantize"):
            return "a flipped bit in a stored array was not detected"
        if expect == "reject-all" or (expect == "reject-read" and command != "inspect") or (
                expect == "reject-decode" and command == "dequantize"):
            return "an invalid archive was accepted"
        if expect in ("reject-read", "reject-decode"):
            return ""  # this command does not read the edited part; the one that does must refuse
        if command == "inspect" and json.loads(run.stdout)["files"][0]["kind"] == "weights":
            # The edit hit quant.format: verify and dequantize refuse it; inspect rightly shows the
            # plain safetensors file it now is, if an independent reader agrees that it is one.
            try:
                expected = reference_view(src, ".safetensors")
            except Exception as e:  # noqa: BLE001
                return f"accepted a file the reference reader refuses ({type(e).__name__}: {e})"
            ours = _our_view(json.loads(run.stdout))
            return "" if ours == expected else f"inspect sees {ours}, the reference reader {expected}"
        if command == "dequantize":
            with open(out, "rb") as f:
                same = f.read() == seed.reference["dequantize"]
        else:
            same = _strip_paths(json.loads(run.stdout)) == seed.reference[command]
        return "" if same else "exit 0 with a result that differs from the unmutated archive's"
    try:
        expected = reference_view(src, seed.ext)
    except Exception as e:  # noqa: BLE001 - the independent reader refusing is the finding
        return f"accepted a file the reference reader refuses ({type(e).__name__}: {e})"
    if seed.kind == "importance":  # statistics accepted: the archive is whole and says it used them
        if invoke(["verify", out, "--json"]).exit_code != 0:
            return "quantize --importance wrote an archive that fails verify"
        doc = json.loads(invoke(["inspect", out, "--json"]).stdout)
        used = {t["name"] for t in doc["files"][0]["tensors"] if "importance" in t.get("params", {})}
        return "" if used == {"w"} else f"the archive records statistics for {sorted(used)}, not ['w']"
    if command == "inspect":
        doc = json.loads(run.stdout)
        ours = _our_view(doc)
        return "" if ours == expected else f"inspect sees {ours}, the reference reader {expected}"
    check = invoke(["verify", out, "--json"])
    if check.exit_code != 0:
        return f"quantize wrote an archive that fails verify: {check.stderr!r}"
    doc = json.loads(invoke(["inspect", out, "--json"]).stdout)
    names = {t["name"] for t in doc["files"][0]["tensors"]}
    if names != set(expected):
        return f"archive holds {sorted(names)}, the input {sorted(expected)}"
    finite = seed.ext == ".npy" and bool(np.isfinite(np.load(src)).all()) or (
        seed.ext == ".safetensors" and not nonfinite_output(src))
    return _round_trip(out, expected, finite)
