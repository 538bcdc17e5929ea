"""The package's shape holds: dependencies point one way (no import cycle, lazy imports
included), no module over 600 lines, no private imports from typer/click, and every command's
help works and shows an example."""

from __future__ import annotations

import ast
import os
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

import quantcli
import quantcli.archive.inspection
from quantcli.cli import commands as cli, entry

PACKAGE = os.path.dirname(quantcli.__file__)
COMMANDS = ["inspect", "quantize", "dequantize", "verify", "curve", "pq-encode", "pq-dot"]


def _modules() -> dict[str, str]:
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
                out[rel.removesuffix(".__init__")] = path
    return out


def _imports(name: str, path: str, known: set[str]) -> set[str]:
    """Every quantcli module `name` imports, anywhere in the file (function-level imports too)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            candidates = [mod] + [f"{mod}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        found.update(c for c in candidates if c in known and c != name)
    return found


def test_no_import_cycle_lazy_imports_included():
    mods = _modules()
    graph = {m: _imports(m, p, set(mods)) for m, p in mods.items()}
    # a package's __init__ re-exports its children: that edge is not a layer violation
    for m in graph:
        graph[m] = {d for d in graph[m] if not (m.count(".") < d.count(".") and d.startswith(m + "."))
                    or not mods[m].endswith("__init__.py")}
    state: dict[str, int] = {}

    def visit(m: str, trail: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(d):] + [d]))
            if d not in state:
                visit(d, trail + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_layers_point_down():
    mods = _modules()
    graph = {m: _imports(m, p, set(mods)) for m, p in mods.items()}
    below_api = [m for m in mods if m not in ("quantcli", "quantcli.cli.commands", "quantcli.cli.entry", "quantcli.cli.util",
                                              "quantcli.api", "quantcli.__main__",
                                              "quantcli.cli.render", "quantcli.cli.plan_render")
                 and not m.startswith("quantcli.planner")]
    for m in below_api:
        assert not {"quantcli.api", "quantcli.cli.commands"} & graph[m], m
        assert not any(d.startswith("quantcli.planner") for d in graph[m]), m
    for m in mods:
        if m.startswith("quantcli.methods") or m in ("quantcli.archive.container", "quantcli.io.sources"):
            assert not {"quantcli.pipeline.write", "quantcli.pipeline.parallel", "quantcli.archive.sizing",
                        "quantcli.archive.dequant"} & graph[m], m


def test_codecs_import_no_method_and_kernels_are_the_bottom():
    """codecs/ never imports methods/ (the DQ state machine both use is in kernels/); kernels/
    imports nothing else of quantcli; numba is imported in kernels/ only, so a command that runs
    no kernel never loads it."""
    mods = _modules()
    graph = {m: _imports(m, p, set(mods)) for m, p in mods.items()}
    numba_ok: set[str] = set()
    for m, path in mods.items():
        if m.startswith("quantcli.codecs"):
            assert not any(d.startswith("quantcli.methods") for d in graph[m]), m
        if m.startswith("quantcli.kernels"):
            assert all(d.startswith("quantcli.kernels") for d in graph[m]), m
        tree = ast.parse(open(path, encoding="utf-8").read())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level]
        if any(x.split(".")[0] == "numba" for x in names):
            assert m.startswith("quantcli.kernels.") or m in numba_ok, m


def test_kernel_modules_change_with_the_files_they_call_into():
    """numba's cache of a kernel is keyed by its own file only: each kernel module carries DEPENDS,
    a digest of the kernel files it imports, so editing those changes it and its cache is rebuilt
    (an upgrade or a dev edit never loads kernels compiled against an old rANS core or state machine)."""
    import hashlib
    import re

    folder = os.path.join(PACKAGE, "kernels")
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".py") or name.startswith("_"):
            continue
        text = open(os.path.join(folder, name), encoding="utf-8").read()
        deps = ["_jit.py"] + sorted(f"{m}.py" for m in re.findall(r"^from \.(\w+) import", text, re.M) if m != "_jit")
        h = hashlib.sha256()
        for dep in deps:
            h.update(open(os.path.join(folder, dep), "rb").read())
        found = re.search(r'^DEPENDS = "(\w+)"', text, re.M)
        assert found and found.group(1) == h.hexdigest()[:16], \
            f"kernels/{name}: set DEPENDS = \"{h.hexdigest()[:16]}\" (digest of {', '.join(deps)})"


def test_no_module_over_600_lines():
    for name, path in _modules().items():
        with open(path, encoding="utf-8") as f:
            assert sum(1 for _ in f) <= 600, name


def test_no_private_imports_from_typer_or_click():
    for name, path in _modules().items():
        tree = ast.parse(open(path, encoding="utf-8").read())
        for node in ast.walk(tree):
            mods = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                    else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for mod in mods:
                assert not mod.startswith("click"), name
                assert not any(part.startswith("_") for part in mod.split(".")[1:]) or not mod.startswith("typer"), name


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help(command):
    r = CliRunner().invoke(cli.app, [command, "--help"])
    assert r.exit_code == 0
    assert "Example:" in r.output and "--json" in r.output


def _main(monkeypatch, capsys, argv: list[str]) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["quant"] + argv)
    with pytest.raises(SystemExit) as exc:
        entry.main()
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_unexpected_exception_is_one_line_and_exit_1(monkeypatch, capsys, tmp_path):
    def boom(*a, **k):
        raise ValueError("a bug\nwith a second line")

    monkeypatch.setattr(quantcli.archive.inspection, "inspect_paths", boom)
    code, out, err = _main(monkeypatch, capsys, ["inspect", str(tmp_path)])
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("quant: internal error: ValueError: a bug\\nwith")
    assert "--debug" in err


def test_debug_shows_the_traceback(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(quantcli.archive.inspection, "inspect_paths", lambda *a, **k: 1 / 0)
    monkeypatch.setattr(sys, "argv", ["quant", "inspect", str(tmp_path), "--debug"])
    with pytest.raises(ZeroDivisionError):
        entry.main()


def test_usage_error_is_one_line_exit_2(monkeypatch, capsys):
    code, _, err = _main(monkeypatch, capsys, ["quantize", "x.npy", "--bits", "many"])
    assert code == 2 and err.count("\n") == 1 and err.startswith("quant: error:")
    assert "quant quantize --help" in err


def _recipe(tmp_path, text: str) -> str:
    path = tmp_path / "r.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, message", [
    ('[[rule]]\npattern = "."\nmethod = "nf"\nscheme = "asymmetric"\n',
     "rule 1: 'scheme' has no effect with method nf"),
    ('[default]\nmethod = "fp16"\nbits = 4\n', "[default]: 'bits' has no effect with method fp16"),
    ('[[rule]]\npattern = "."\ngroup_size = 32\n', "rule 1: 'group_size' needs granularity group"),
])
def test_recipe_gets_the_command_lines_refusal(tmp_path, seed_matrix, text, message):
    """A recipe rule asking for an option its method would not read is refused like the same
    option typed on the command line, naming the recipe and the rule; nothing is written."""
    import numpy as np
    np.save(tmp_path / "s.npy", seed_matrix)
    out = tmp_path / "o.qnt.safetensors"
    r = CliRunner().invoke(cli.app, ["quantize", str(tmp_path / "s.npy"), "-o", str(out),
                                     "--recipe", _recipe(tmp_path, text)])
    assert r.exit_code == 2 and message in r.stderr and "r.toml" in r.stderr
    assert not out.exists()


def test_codebook_rows_is_kmeans_row_groups(tmp_path, seed_matrix):
    from quantcli import Spec
    from quantcli.methods import get_method
    km = get_method("kmeans")
    x = np.tile(seed_matrix, (4, 1))
    enc = km.encode(x, Spec(method="kmeans", bits=2, granularity="group", codebook_rows=3))
    assert enc.arrays["codebook"].shape == (-(-x.shape[0] // 3), 4) and enc.params["group_size"] == 3
    r = CliRunner().invoke(cli.app, ["quantize", "x.npy", "-o", str(tmp_path / "o.qnt.safetensors"),
                                     "--method", "kmeans", "--codebook-rows", "3"])
    assert r.exit_code == 2 and "--codebook-rows needs granularity group" in r.stderr


# Places outside quantcli/methods/ that name a method (a string literal equal to a registered
# method's name) or import a method module. This list may only shrink: a method's knowledge
# belongs in its module, reached through the registry (methods.KEEP, DEFAULT, LOOKUP, CHOICES).
NAMED_METHODS_ALLOWED: dict[str, set[str]] = {
    # named option sets, spelled as a user types them (data like a shipped recipe file; adding a
    # method never touches them; tests/cli checks each preset's method is registered)
    "quantcli.presets": {"kmeans", "lossless", "nf", "uniform"},
    "quantcli.codecs": {"lossless"},    # the lossless CODEC's name, inside codecs/ (the method shares it)
}


def _string_constants(path: str) -> set[str]:
    tree = ast.parse(open(path, encoding="utf-8").read())
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_no_method_named_outside_methods():
    """Outside quantcli/methods/ no module names a method or imports a method module (the
    registry `quantcli.methods` and the base types `quantcli.methods.base` are the interface)."""
    from quantcli.methods import METHODS
    names = set(METHODS)
    found: dict[str, set[str]] = {}
    for mod, path in _modules().items():
        if mod == "quantcli.methods" or mod.startswith("quantcli.methods."):
            continue
        hits = _string_constants(path) & names
        for dep in _imports(mod, path, set(_modules())):
            if dep.startswith("quantcli.methods.") and dep != "quantcli.methods.base":
                hits.add(dep.removeprefix("quantcli."))
        if hits:
            found[mod] = hits
    extra = {m: sorted(h - NAMED_METHODS_ALLOWED.get(m, set())) for m, h in found.items()}
    assert not {m: h for m, h in extra.items() if h}, "method names or method imports outside methods/"
    stale = {m: sorted(a - found.get(m, set())) for m, a in NAMED_METHODS_ALLOWED.items()}
    assert not {m: a for m, a in stale.items() if a}, "shrink NAMED_METHODS_ALLOWED"


def test_the_registry_names_cost_no_method_import():
    """Reading the registry's names (the CLI's --method choices, Spec's default) imports no method
    module: `quant --help` and `quant inspect x.npy` pay for none. A method module is imported when
    that method is first asked for, and the registry's names are exactly what is registered."""
    import subprocess
    code = ("import sys, quantcli.cli.commands, quantcli.spec, quantcli.methods as m; "
            "print(sorted(k for k in sys.modules if k.startswith('quantcli.methods.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    from quantcli.methods import CHOICES, DEFAULT, KEEP, LOOKUP, METHODS, NAMES
    assert [METHODS[n].name for n in NAMES] == list(NAMES) and len(METHODS) == len(NAMES)
    assert [n for n in NAMES if METHODS[n].kept] == [KEEP] and set(CHOICES) == set(NAMES) - {KEEP}
    assert {DEFAULT, LOOKUP} <= set(CHOICES) and {m.value for m in cli.Method} == set(CHOICES)


def test_codecs_are_one_interface_registered_in_one_place():
    """Every codec (plain and bitpack included) is a `Codec` registered in codecs/__init__.py;
    each kind of array has exactly one default codec and one entropy codec; the archive layer
    names no codec: storage and the container ask the registry."""
    import inspect
    from quantcli import codecs
    classes = {c for m in _modules() if m.startswith("quantcli.codecs")
               for _, c in inspect.getmembers(__import__(m, fromlist=["_"]), inspect.isclass)
               if issubclass(c, codecs.Codec) and not inspect.isabstract(c)}
    assert classes == {type(c) for c in codecs.CODECS.values()}
    for bits in (None, 4):
        for role in (codecs.DEFAULT, codecs.ENTROPY):
            assert len([c for c in codecs.CODECS.values() if c.role == role and c.accepts(bits)]) == 1
    assert codecs.default_for(None).recorded is False and codecs.default_for(4).recorded is False
    names = set(codecs.CODECS)
    for mod, path in _modules().items():
        if mod.startswith("quantcli.archive"):
            assert not _string_constants(path) & names, mod
    register_calls = [m for m, p in _modules().items() if "register(" in open(p, encoding="utf-8").read()
                      and m.startswith("quantcli.codecs")]
    assert register_calls == ["quantcli.codecs"]


def test_at_most_twelve_modules_at_the_top():
    """The folders show the architecture (docs/ARCHITECTURE.md): io/, archive/, methods/, codecs/,
    kernels/, pipeline/, planner/, calibration/, cli/; only the facade and leaves stay on top."""
    top = sorted(f for f in os.listdir(PACKAGE) if f.endswith(".py") and f not in ("__init__.py", "__main__.py"))
    assert len(top) <= 12, top


def test_the_cli_parses_calls_one_function_and_renders():
    """The quantize command's body (after its docstring) is at most 40 lines, and no command
    module imports a method module, the planner or the pipeline: business rules live in the
    library (the registry `quantcli.methods`, whose names cost no method import, is allowed)."""
    path = os.path.join(PACKAGE, "cli", "commands.py")
    tree = ast.parse(open(path, encoding="utf-8").read())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "quantize")
    body = fn.body[1:] if isinstance(fn.body[0], ast.Expr) else fn.body
    assert fn.end_lineno is not None and fn.end_lineno - body[0].lineno + 1 <= 40
    deps = _imports("quantcli.cli.commands", path, set(_modules()))
    assert not [d for d in deps if d.startswith(("quantcli.methods.", "quantcli.planner", "quantcli.pipeline"))], deps
