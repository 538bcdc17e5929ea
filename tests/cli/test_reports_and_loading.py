"""Fitting the ecosystem (issue 13): the Python loader, reports a Makefile can depend on, JSON keys
documented, tables that fit 80 columns with names as data, progress naming the tensor in
progress, honest help, and a start-up that imports nothing heavy."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
from rich.console import Console
from safetensors.numpy import load_file, save_file
from typer.testing import CliRunner

import quantcli
from quantcli.cli import commands as cli, util as cliutil, render
from quantcli.archive.container import Archive
from quantcli.cli.commands import app

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def mixed(tmp_path) -> str:
    """bf16 and f16 matrices (quantized), a bf16 and an f32 1-D tensor and an int tensor (kept)."""
    rng = np.random.default_rng(1)
    path = tmp_path / "mixed.safetensors"
    save_file({"w.bf16": rng.standard_normal((32, 64)).astype(ml_dtypes.bfloat16),
               "w.f16": rng.standard_normal((16, 64)).astype(np.float16),
               "w.f32": rng.standard_normal((16, 64)).astype(np.float32),
               "norm.bf16": rng.standard_normal(64).astype(ml_dtypes.bfloat16),
               "bias.f32": rng.standard_normal(64).astype(np.float32),
               "ids": np.arange(7, dtype=np.int64)}, str(path))
    return str(path)


@pytest.fixture
def archive(mixed, tmp_path) -> str:
    out = tmp_path / "mixed.qnt.safetensors"
    assert run("quantize", mixed, "-o", out, "--bits", "4", "--granularity", "group", "--group-size", "32",
               "-q").exit_code == 0
    return str(out)


# --- 2. the loader ---------------------------------------------------------------------------

def test_load_gives_original_dtypes_and_the_bits_dequantize_writes(mixed, archive, tmp_path):
    weights = quantcli.load(archive)
    original = load_file(mixed)
    assert {k: v.dtype for k, v in weights.items()} == {k: v.dtype for k, v in original.items()}
    assert weights["w.bf16"].dtype == ml_dtypes.bfloat16
    for kept in ("norm.bf16", "bias.f32", "ids"):  # kept tensors: bit for bit
        assert weights[kept].tobytes() == original[kept].tobytes()
    assert not np.array_equal(weights["w.bf16"], original["w.bf16"])  # 4 bits: values changed
    restored = tmp_path / "r.safetensors"
    assert run("dequantize", archive, "-o", restored, "-q").exit_code == 0
    for name, values in load_file(str(restored)).items():
        assert values.dtype == weights[name].dtype and values.tobytes() == weights[name].tobytes(), name


def test_load_with_a_dtype_converts_float_tensors_only(archive):
    weights = quantcli.load(archive, dtype="float16")
    assert {k: v.dtype.name for k, v in weights.items()} == {
        "w.bf16": "float16", "w.f16": "float16", "w.f32": "float16", "norm.bf16": "float16",
        "bias.f32": "float16", "ids": "int64"}
    assert quantcli.load(archive, dtype=np.float32)["w.bf16"].dtype == np.float32
    assert quantcli.load(archive, dtype="bfloat16")["w.f32"].dtype == ml_dtypes.bfloat16
    with pytest.raises(quantcli.ConfigError):
        quantcli.load(archive, dtype="int8")


def test_open_reads_only_the_tensor_asked_for(archive, monkeypatch):
    reads: list[str] = []
    decodes: list[str] = []
    real_decode = Archive.decode

    def decode(self, t):
        decodes.append(t.name)
        return real_decode(self, t)

    monkeypatch.setattr(Archive, "decode", decode)
    with quantcli.open(archive) as a:
        real_read = a.archive.file.read
        monkeypatch.setattr(a.archive.file, "read", lambda name: reads.append(name) or real_read(name))
        assert set(a.keys()) == {"w.bf16", "w.f16", "w.f32", "norm.bf16", "bias.f32", "ids"}
        assert "w.f16" in a and "nope" not in a and len(a) == 6
        assert reads == [] and decodes == []  # opening reads the manifest only
        x = a["w.f16"]
        assert x.dtype == np.float16 and x.shape == (16, 64)
        assert decodes == ["w.f16"] and reads and all(r.startswith("w.f16/") for r in reads)
        with pytest.raises(KeyError):
            a["nope"]


def _torch():
    return pytest.importorskip("torch")


def test_torch_state_dict_keeps_bf16_bits_without_a_float32_detour(archive):
    torch = _torch()
    from quantcli.torch import load_state_dict

    state = load_state_dict(archive)
    weights = quantcli.load(archive)
    assert state["w.bf16"].dtype == torch.bfloat16 and state["ids"].dtype == torch.int64
    for name, t in state.items():  # the same bits as the numpy loader
        expect = weights[name]
        got = t.view(torch.int16).numpy().view(expect.dtype) if t.dtype == torch.bfloat16 else t.numpy()
        assert got.tobytes() == expect.tobytes(), name
    half = load_state_dict(archive, dtype=torch.float16)
    assert half["w.bf16"].dtype == torch.float16 and half["ids"].dtype == torch.int64


def test_torch_state_dict_loads_into_a_module(tmp_path):
    torch = _torch()
    from quantcli.torch import load_state_dict

    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.LayerNorm(32))
    src = tmp_path / "model.safetensors"
    save_file({k: v.detach().numpy() for k, v in model.state_dict().items()}, str(src))
    arc = tmp_path / "model.qnt.safetensors"
    assert run("quantize", src, "-o", arc, "-q").exit_code == 0
    model.load_state_dict(load_state_dict(str(arc)))  # strict: every key, shape and dtype fits
    x = torch.randn(4, 64)
    assert model(x).shape == (4, 32)


def test_torch_is_not_imported_by_quantcli():
    code = "import sys, quantcli, quantcli.archive.loader, quantcli.torch; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- 3. reports ------------------------------------------------------------------------------

def _doc_keys() -> dict[str, set[str]]:
    """Key paths per section of docs/JSON.md (a section: the tables under one heading)."""
    sections: dict[str, set[str]] = {}
    current = ""
    for line in open(os.path.join(ROOT, "docs", "JSON.md"), encoding="utf-8"):
        if line.startswith(("## ", "### ")):
            current = line.lstrip("#").strip()
        m = re.match(r"\| `([^`]+)` \|", line)
        if m:
            sections.setdefault(current, set()).add(m.group(1))
    return sections


def _paths(doc, prefix: str = "") -> set[str]:
    out = set()
    if isinstance(doc, dict):
        for k, v in doc.items():
            path = f"{prefix}.{k}" if prefix else k
            out.add(path)
            if k != "params":  # a method's parameters: docs/FORMAT.md
                out |= _paths(v, path)
    elif isinstance(doc, list):
        for item in doc:
            if isinstance(item, dict):
                out |= _paths(item, prefix + "[]")
    return out


def _json(*args) -> dict:
    r = run(*args, "--json")
    assert r.exit_code in (0, 2), r.output
    return json.loads(r.stdout)


def _importance_for(model, tmp_path) -> str:
    """Statistics (a diagonal) for the first 2-D tensor of `model`: the JSON then has its keys."""
    from quantcli.io.safetensors import SafetensorsFile
    from safetensors.numpy import save_file
    with SafetensorsFile(str(model)) as f:
        name, entry = next((n, e) for n, e in f.entries.items() if len(e.shape) == 2)
    path = str(tmp_path / "imp.safetensors")
    save_file({name: np.ones(entry.shape[1], np.float32)}, path)
    return path


def test_every_json_key_is_documented(tiny_model, archive, tmp_path):
    pq = tmp_path / "m.pq.safetensors"
    np.save(tmp_path / "q.npy", np.ones((2, 32), np.float32))
    docs = {
        "inspect": [_json("inspect", tiny_model, archive)],
        "quantize": [_json("quantize", tiny_model, "-o", tmp_path / "a.qnt.safetensors"),
                     _json("quantize", tiny_model, "--dry-run"),
                     _json("quantize", tiny_model, "--dry-run", "--target-bpw", "12", "--candidates", "fast",
                           "--sample", "2048"),
                     _json("quantize", tiny_model, "-o", tmp_path / "b.qnt.safetensors", "--min-sqnr", "20",
                           "--candidates", "fast", "--sample", "2048"),
                     _json("quantize", tiny_model, "-o", tmp_path / "c.qnt.safetensors", "--importance",
                           _importance_for(tiny_model, tmp_path))],
        "pq-encode": [_json("pq-encode", tiny_model, "-o", pq, "--centroids", "16", "--iters", "3")],
        "dequantize": [_json("dequantize", archive, "-o", tmp_path / "r.safetensors")],
        "verify": [_json("verify", archive, tmp_path / "missing.qnt.safetensors")],
        "pq-dot": [_json("pq-dot", pq, "--query", tmp_path / "q.npy", "--tensor", "encoder.layer.0.attention.self.query.weight"),
                   _json("pq-dot", pq, "--query", tmp_path / "q.npy", "--tensor", "encoder.layer.0.attention.self.query.weight",
                         "--reference", tiny_model, "--repeat", "1")],
        "curve": [_json("curve", tiny_model, "--candidates", "fast", "--sample", "2048")],
        "failure": [_json(c, tmp_path / "nope.npy") for c in ("inspect", "curve")]
                   + [_json("dequantize", tmp_path / "nope.qnt.safetensors", "-o", tmp_path / "x.npz")],
    }
    sections = _doc_keys()
    common = sections["Every document"]
    where = {"inspect": ["`quant inspect`"], "quantize": ["`quant quantize` and `quant pq-encode`",
                                                          "`quant quantize --dry-run` (no budget)",
                                                          "`quant quantize` with a budget (`--dry-run`, or the "
                                                          "`plan` of a run)"],
             "pq-encode": ["`quant quantize` and `quant pq-encode`"], "dequantize": ["`quant dequantize`"],
             "verify": ["`quant verify`"], "pq-dot": ["`quant pq-dot`"], "curve": ["`quant curve`"],
             "failure": ["Failure document (any command, with `--json`)"]}
    for command, found in docs.items():
        allowed = set(common).union(*(sections[s] for s in where[command]))
        if command == "quantize":  # a planned run nests the plan under `plan`
            plan = sections[where["quantize"][2]]
            allowed |= {f"plan.{k}" for k in plan} | {"plan"} | {f"plan.{k.split('.')[0]}" for k in plan}
        allowed |= {k[:m.start()]
                    for k in allowed for m in re.finditer(r"\.|\[\]", k)}  # the objects holding documented keys
        for doc in found:
            assert doc["schema"] == render.SCHEMA == cliutil.SCHEMA and doc["command"] in (command, "inspect",
                                                                                          "curve", "dequantize")
            missing = _paths(doc) - allowed
            assert not missing, f"{command}: keys not in docs/JSON.md: {sorted(missing)}"
    assert all(d["ok"] is False and d["exit_code"] == 2 for d in docs["failure"])
    assert docs["verify"][0]["ok"] is False and docs["verify"][0]["archives"][0]["ok"] is True


@pytest.mark.parametrize("command", ["inspect", "quantize", "pq-encode", "curve"])
def test_report_is_written_on_success_only_and_atomically(tiny_model, tmp_path, command):
    report = tmp_path / "report.json"
    extra = {"quantize": ["-o", tmp_path / "x.qnt.safetensors"], "pq-encode": ["-o", tmp_path / "x.pq.safetensors",
                                                                               "--centroids", "4", "--iters", "2"],
             "curve": ["--candidates", "fast", "--sample", "1024"], "inspect": []}[command]
    bad = tmp_path / "broken.npy"
    bad.write_bytes(b"\x93NUMPY garbage")
    r = run(command, bad, *extra, "--report", report)
    assert r.exit_code == 2 and not report.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".report")] == []  # no temp file left
    r = run(command, tiny_model, *extra, "--report", report, "-q")
    assert r.exit_code == 0 and r.stdout == ""
    doc = json.loads(report.read_text())
    assert doc["schema"] == 1 and doc["ok"] is True and doc["command"] == command
    before = report.read_bytes()  # a later failure leaves the last good report as it was
    assert run(command, bad, *extra, "--report", report).exit_code == 2 and report.read_bytes() == before


def test_inspect_o_and_json_print_the_same_document(tiny_model, tmp_path):
    r = run("inspect", tiny_model, "-o", tmp_path / "r.json", "--json")
    assert r.exit_code == 0
    assert json.loads(r.stdout)["files"] == json.loads((tmp_path / "r.json").read_text())["files"]
    r = run("inspect", tiny_model, "-o", tiny_model)  # a report never overwrites weights
    assert r.exit_code == 2 and "inputs are never overwritten" in r.stderr


def test_json_failure_document_for_a_write_failure(tiny_model, tmp_path):
    r = run("quantize", tiny_model, "-o", tmp_path / "no" / "folder.qnt.safetensors", "--json")
    doc = json.loads(r.stdout)
    assert r.exit_code == doc["exit_code"] == 2 and doc["ok"] is False and "folder" in doc["error"]
    assert doc["command"] == "quantize" and r.stderr.startswith("quant: error:")


MAKEFILE = os.path.join(ROOT, "README.md")


def _makefile() -> str:
    text = open(MAKEFILE, encoding="utf-8").read()
    block = re.search(r"```make\n(.*?)```", text, re.S)
    assert block, "README.md has a ```make block"
    return block.group(1)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_readme_makefile_works_as_written(tiny_model, tmp_path):
    shutil.copy(tiny_model, tmp_path / "model.safetensors")
    (tmp_path / "Makefile").write_text(_makefile())
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])

    def make(*args):
        return subprocess.run(["make", "-j2", *args], cwd=tmp_path, env=env, capture_output=True, text=True)

    r = make()
    assert r.returncode == 0, r.stdout + r.stderr
    for f in ("model.qnt.safetensors", "model.qnt.verified", "report.json", "restored.safetensors"):
        assert (tmp_path / f).exists(), f
    assert json.loads((tmp_path / "report.json").read_text())["command"] == "inspect"
    assert json.loads((tmp_path / "model.qnt.verified").read_text())["ok"] is True
    r = make("-q")  # everything is up to date
    assert r.returncode == 0, r.stdout + r.stderr
    # a corrupt input: quantize fails, nothing half-written stays to look up to date
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file at all")
    before = (tmp_path / "model.qnt.safetensors").read_bytes()
    r = make()
    assert r.returncode != 0 and "quant: error:" in r.stderr
    assert (tmp_path / "model.qnt.safetensors").read_bytes() == before  # the last good archive, untouched
    assert make("-q").returncode != 0 and make().returncode != 0  # never called up to date


# --- 4. 80 columns, names as data --------------------------------------------------------------

MINILM = [f"0.auto_model.encoder.layer.{i}.{part}" for i in (0, 5, 11) for part in (
    "attention.self.query.weight", "attention.self.query.bias", "attention.output.LayerNorm.weight",
    "intermediate.dense.weight", "output.dense.weight")] + ["0.auto_model.embeddings.word_embeddings.weight",
                                                             "0.auto_model.embeddings.position_ids"]


@pytest.fixture
def minilm_like(tmp_path) -> str:
    rng = np.random.default_rng(2)
    tensors = {}
    for name in MINILM:
        if name.endswith("position_ids"):
            tensors[name] = np.arange(512, dtype=np.int64)[None]
        elif "LayerNorm" in name or name.endswith("bias"):
            tensors[name] = (rng.standard_normal(384) * 1e-3).astype(np.float32)
        else:
            tensors[name] = (rng.standard_normal((96, 384)) * 123.456).astype(np.float32)
    path = tmp_path / "minilm-like.safetensors"
    save_file(tensors, str(path))
    return str(path)


def _render(width: int, fn, *args) -> str:
    console = Console(width=width, record=True, file=open(os.devnull, "w"), highlight=False,
                      legacy_windows=False)
    fn(console, *args)
    return console.export_text()


def _numbers(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?(?:e[-+]\d+)?(?![\w.])", text))


@pytest.mark.parametrize("width", [80, 200])
def test_tables_fit_the_width_and_never_break_a_number(minilm_like, tmp_path, width):
    from quantcli.api import inspect_paths, quantize_file, plan_file
    from quantcli import Spec

    arc = str(tmp_path / "m.qnt.safetensors")
    q = quantize_file([minilm_like], arc, Spec(bits=4, granularity="group", group_size=64))
    outputs = [_render(width, render.print_inspect, inspect_paths([minilm_like])),
               _render(width, render.print_inspect, inspect_paths([arc])),
               _render(width, render.print_quantize, q),
               _render(width, render.print_plan, plan_file([minilm_like]))]
    for text in outputs:
        lines = text.splitlines()
        assert max(len(line.rstrip()) for line in lines) <= width
        table = [line for line in lines if "│" in line]
        assert len(table) >= len(MINILM)  # one line per tensor (kept notes may wrap into a second)
        rows = [line for line in table if line.split("│")[0].strip()]
        assert len(rows) == len(MINILM)
        shortened = {render.shorten(n, k): n for n in MINILM for k in range(4, 120)}
        for line in rows:  # every row is one of the names, shortened
            assert line.split("│")[0].strip() in shortened, line
    wide = _render(200, render.print_inspect, inspect_paths([minilm_like]))
    narrow = _render(80, render.print_inspect, inspect_paths([minilm_like]))
    assert all(n in wide for n in MINILM)  # at 200 columns nothing is shortened
    assert _numbers(narrow) <= _numbers(wide)  # every number at 80 columns is whole (it appears at 200)
    assert "…" in narrow and "query.weight" in narrow


def test_shorten_keeps_layer_indices_and_the_tail():
    name = "0.auto_model.encoder.layer.11.attention.self.query.weight"
    assert render.shorten(name, 40) == "0.a.e.l.11.attention.self.query.weight"
    assert render.shorten(name, 30) == "0.a.e.l.11.a.self.query.weight"
    assert render.shorten(name, 20).endswith("query.weight") and len(render.shorten(name, 20)) == 20
    assert render.shorten("short", 30) == "short"
    assert render.shorten("embeddings.position_embeddings.weight", 30) == "e.position_embeddings.weight"


@pytest.mark.parametrize("width", range(22, 60, 3))
def test_shortened_names_of_one_model_stay_distinct_with_their_layer_numbers(width):
    names = [n for n in MINILM if "layer" in n]
    short = [render.shorten(n, width) for n in names]
    assert all(len(s) <= width for s in short)
    if width >= 28:  # wide enough for the layer index and the weight's kind
        assert len(set(short)) == len(names)
        for n, s in zip(names, short):
            assert re.search(r"\.(\d+)\.", n).group(1) in s.split(".")


def test_narrow_tables_say_a_long_kept_note_once_below(minilm_like):
    from quantcli.api import inspect_paths, quantize_file

    narrow = _render(80, render.print_quantize, quantize_file([minilm_like], minilm_like + ".qnt.safetensors"))
    full = "kept: 1-D (bias or norm); --include-1d quantizes it"
    assert narrow.count("kept: 1-D") == sum(n.endswith(("bias", "weight")) and ("LayerNorm" in n or n.endswith("bias"))
                                            for n in MINILM) + 1
    assert narrow.count(full) == 1 and "quantizes it" not in narrow.split(full)[0]
    wide = _render(200, render.print_inspect, inspect_paths([minilm_like + ".qnt.safetensors"]))
    assert wide.count(full) > 1  # with room, every row keeps its whole note


HOSTILE = ["w[/x]", "w[/dim]", "[bold]w", "bad\udcffname", "tab\there"]


def test_names_are_data_in_tables_and_json(tmp_path):
    rng = np.random.default_rng(3)
    npz = tmp_path / "hostile.npz"
    np.savez(npz, **{n: rng.standard_normal((8, 16)).astype(np.float32) for n in HOSTILE[:3]})
    from quantcli.api import inspect_paths, quantize_file
    from quantcli.reports import Inspection, TensorStats

    items = inspect_paths([str(npz)])
    items.append(Inspection("dir\udcff/[/x].npy", 10, tensors=[
        TensorStats(n, "F32", (2, 2), 4, 16, -1.0, 1.0, 0.0, 0.5, 1.0, 0, 0) for n in HOSTILE]))
    for width in (80, 200):
        text = _render(width, render.print_inspect, items)
        for n in ("w[/x]", "w[/dim]", "[bold]w", "bad\\udcffname", "tab\\there", "dir\\udcff/[/x].npy"):
            assert n in text
    arc = str(tmp_path / "h.qnt.safetensors")
    text = _render(120, render.print_quantize, quantize_file([str(npz)], arc))
    assert "w[/x]" in text and "[bold]w" in text
    data = cliutil.json_bytes(render.inspect_json(items))
    data.decode("utf-8")  # valid UTF-8
    doc = json.loads(data)
    assert [t["name"] for t in doc["files"][1]["tensors"]] == HOSTILE  # surrogates read back as written
    assert doc["files"][1]["path"] == "dir\udcff/[/x].npy"


def test_hostile_names_through_the_cli(tmp_path):
    npz = tmp_path / "hostile.npz"
    np.savez(npz, **{"w[/x]": np.ones((4, 4), np.float32), "w[/dim]": np.zeros((4, 4), np.float32)})
    for args in (["inspect", npz], ["quantize", npz, "-o", tmp_path / "h.qnt.safetensors"]):
        r = run(*args)
        assert r.exit_code == 0, r.output
        assert "w[/x]" in r.stdout and "w[/dim]" in r.stdout


# --- 5. progress and help ----------------------------------------------------------------------

def test_progress_names_the_tensor_in_progress_and_knows_the_total():
    labels = cliutil.ProgressLabels([("a", 100), ("b", 4000), ("c", 10)])
    assert labels.total == 4110 and labels.label() == "a"  # before any tensor finished
    assert labels.done("a", 100) == (100, "b")  # a finished: b is being encoded
    assert labels.done("b", 4100) == (4100, "c")
    assert labels.done("c", 4110) == (4110, "finishing")
    repeated = cliutil.ProgressLabels([("x", 1), ("x", 2)])  # the same name in two files
    assert repeated.done("x", 1) == (1, "x") and repeated.done("x", 2) == (3, "finishing")


def test_the_library_reports_after_each_tensor_in_the_order_listed_up_front(tiny_model, tmp_path):
    calls = []
    quantcli.quantize_file([tiny_model], str(tmp_path / "p.qnt.safetensors"),
                           progress=lambda d, t, n: calls.append((d, t, n)))
    items = cliutil.source_items([tiny_model])
    assert [n for _, _, n in calls] == [n for n, _ in items]
    labels = cliutil.ProgressLabels(items)
    shown = [labels.label()] + [labels.done(n, d)[1] for d, _, n in calls]
    assert shown[:-1] == [n for n, _ in items] and shown[-1] == "finishing"
    assert calls[-1][1] == labels.total


@pytest.mark.parametrize("command", ["inspect", "quantize", "dequantize", "verify", "pq-encode", "pq-dot", "curve"])
def test_help_has_clean_metavars(command):
    r = run(command, "--help")
    assert r.exit_code == 0
    for ugly in ("{", "<list[str]>", "<str>", "<int>", "<float>"):
        assert ugly not in r.stdout, (command, ugly)
    assert "--report FILE" in r.stdout or command == "inspect"


def test_candidates_is_a_choice_and_choices_match_the_registry():
    from quantcli import planner
    from quantcli.methods import METHODS

    assert "--candidates [default|fast|all]" in run("quantize", "--help").stdout.replace("<", "[").replace(">", "]")
    assert {m.value for m in cli.Method} == {n for n in METHODS if not METHODS[n].kept}
    assert {c.value for c in cli.Candidates} == set(planner.LEVELS) and cli.SAMPLE == planner.SAMPLE


def test_dequantize_keeps_kept_tensors_bit_for_bit_whatever_the_dtype(mixed, archive, tmp_path):
    original = load_file(mixed)
    out = tmp_path / "r.safetensors"
    assert run("dequantize", archive, "-o", out, "-q").exit_code == 0
    back = load_file(str(out))
    for name in ("norm.bf16", "bias.f32", "ids"):
        assert back[name].dtype == original[name].dtype and back[name].tobytes() == original[name].tobytes()
    assert run("dequantize", archive, "-o", out, "--dtype", "float16", "-q").exit_code == 0
    half = load_file(str(out))
    for name in ("norm.bf16", "bias.f32", "ids"):  # kept tensors are never converted (issue 21, item 11)
        assert half[name].dtype == original[name].dtype and half[name].tobytes() == original[name].tobytes()
    assert "kept" in run("dequantize", "--help").stdout


# --- 7. start-up -------------------------------------------------------------------------------

def test_cli_import_loads_no_numpy_methods_or_planner():
    """The registry's names (quantcli.methods, the --method choices) may load; no method module may."""
    code = ("import sys, quantcli.cli.commands; heavy = [m for m in sys.modules if m.split('.')[0] in "
            "('numpy', 'numba', 'ml_dtypes', 'sklearn') or m.startswith(('quantcli.methods.', 'quantcli.planner', "
            "'rich.progress', 'rich.table'))]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    r = subprocess.run([sys.executable, "-m", "quantcli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == f"quant {quantcli.__version__}"
