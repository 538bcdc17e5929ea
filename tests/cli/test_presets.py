"""`--preset NAME` is exactly its options: the same archive bytes as typing them, a clash with a
typed option is refused, budgets parse, and `--help` shows every preset with its figures."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from quantcli import ConfigError, presets
from quantcli.cli.commands import app

runner = CliRunner()
TINY = "sample_weights/tiny_transformer.safetensors"


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_budget_presets_are_the_planner_at_that_budget():
    assert presets.get("best-3.5").options == {"target_bpw": 3.5}
    assert presets.get("best-2").options == {"target_bpw": 2.0}
    for bad in ("best-0.5", "best-17", "best-x", "int4g64"):
        with pytest.raises(ConfigError):
            presets.get(bad)


def test_a_typed_option_the_preset_sets_is_refused_not_overridden():
    with pytest.raises(ConfigError, match="--preset int4-g64 sets --bits"):
        presets.apply("int4-g64", {"bits": 3}, {"bits"})
    assert presets.apply("int4-g64", {"bits": 8, "seed": 3}, {"seed"})["bits"] == 4
    assert presets.apply(None, {"bits": 8}, {"bits"}) == {"bits": 8}


@pytest.mark.parametrize("name, flags", [
    ("int8", []),
    ("int4-g64", ["--bits", "4", "--scheme", "asymmetric", "--granularity", "group", "--group-size", "64"]),
    ("nf4-g64", ["--method", "nf", "--bits", "4", "--granularity", "group", "--group-size", "64"]),
    ("kmeans4-g64", ["--method", "kmeans", "--bits", "4", "--normalize", "group", "--group-size", "64"]),
    ("lossless", ["--method", "lossless", "--include-1d"]),
])
def test_a_preset_writes_the_same_bytes_as_its_options(tmp_path, name, flags):
    a, b = tmp_path / "a.qnt.safetensors", tmp_path / "b.qnt.safetensors"
    assert run("quantize", TINY, "-o", a, "--preset", name, "-q").exit_code == 0
    assert run("quantize", TINY, "-o", b, *flags, "-q").exit_code == 0
    assert a.read_bytes() == b.read_bytes()


def test_preset_and_a_clashing_flag_on_the_command_line(tmp_path):
    r = run("quantize", TINY, "-o", tmp_path / "x.qnt.safetensors", "--preset", "int4-g64", "--group-size", "32")
    assert r.exit_code == 2 and "--preset int4-g64 sets --group-size" in r.output
    assert not (tmp_path / "x.qnt.safetensors").exists()


def test_help_lists_every_preset_with_its_figures():
    text = " ".join(run("quantize", "--help").output.split())
    for p in presets.PRESETS.values():
        assert p.name in text and " ".join(p.measured.split()) in text
    assert "best-3.5" in text


def test_every_preset_names_a_registered_method_and_options_it_reads():
    """Presets are data spelled as a user types them: each names a method of the registry and
    sets only options a Spec has and that method reads (or the command's own)."""
    from quantcli import Spec
    from quantcli.methods import CHOICES, get_method
    from quantcli.methods.base import ALWAYS_READ
    for p in presets.PRESETS.values():
        spec_options = {k: v for k, v in p.options.items() if k not in ("include_1d", "target_bpw")}
        assert spec_options.get("method", "") in CHOICES, p.name
        spec = Spec(**spec_options)
        assert set(spec_options) - ALWAYS_READ <= get_method(spec.method).reads(spec), p.name
