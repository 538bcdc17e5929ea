"""The sample-then-encode planner's promises: an archive never exceeds its budget, whatever the
samples predicted (adversarial tensors and budgets, forced mispredictions through both
correction passes); --jobs 1 and 2 write identical archives; phase events with counts reach a
library caller, and nothing reaches a pipe or --json output."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from quantcli import ConfigError
from quantcli.cli.commands import app
from quantcli.planner import Budget, PhaseEvent, quantize_budget
import quantcli.planner.solve as solve_mod
import quantcli.planner.write as write_mod


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    """Tensors a row sample misjudges: rows of equal energy but very different entropy (dense
    gaussian rows among spiky sparse ones), a heavy-tailed matrix, a narrow one, and a bias."""
    from safetensors.numpy import save_file
    rng = np.random.default_rng(5)
    mixed = rng.standard_normal((512, 96)).astype(np.float32)
    spiky = np.zeros((512, 96), np.float32)
    spiky[:, :4] = rng.standard_normal((512, 4)) * np.sqrt(96 / 4)
    pick = rng.random(512) < 0.3
    mixed[pick] = spiky[pick]
    tensors = {
        "a.mixed.weight": mixed * 0.02,
        "b.heavy.weight": (rng.standard_t(2, (300, 128)) * 0.01).astype(np.float32),
        "c.narrow.weight": (rng.standard_normal((2048, 8)) * 0.05).astype(np.float32),
        "c.narrow.bias": rng.standard_normal(2048).astype(np.float32),
    }
    path = tmp_path_factory.mktemp("budget") / "model.safetensors"
    save_file(tensors, str(path))
    return str(path)


KW = dict(sample=2048)


@pytest.mark.parametrize("bpw", [2.1, 2.37, 2.5, 2.93, 3.0, 3.41, 4.0, 4.77, 6.0, 7.9])
def test_never_over_budget_adversarial(model, tmp_path, bpw):
    out = str(tmp_path / "a.qnt.safetensors")
    try:
        r = quantize_budget([model], out, Budget("bpw", bpw), **KW)
    except ConfigError:  # too small: refused, nothing written
        assert not os.path.exists(out)
        return
    assert os.path.getsize(out) <= r.plan.limit_bytes
    assert os.path.getsize(out) == r.report.archive_bytes == r.plan.predicted_archive_bytes


def _scaled(factor: float, monkeypatch) -> None:
    """Every prediction of the re-solve scaled by `factor` (a sample that misjudges the tensors)."""
    real = solve_mod.predicted

    def wrong(t, enc, n, coded=None):
        s = real(t, enc, n, coded)
        codecs = {r: {**c, "nbytes": int(c["nbytes"] * factor)} for r, c in (s.codecs or {}).items()}
        layout = {r: ((np.dtype(np.uint8), (codecs[r]["nbytes"],)) if r in codecs else lay)
                  for r, lay in s.layout.items()}
        return type(s)(s.ref, s.method, s.params, layout, s.note, codecs or None, exact=False)
    monkeypatch.setattr(solve_mod, "predicted", wrong)


@pytest.mark.parametrize("factor, passes", [(0.97, 1), (0.5, 2)])
def test_correction_passes_keep_the_budget(model, tmp_path, monkeypatch, factor, passes):
    """Predictions 3% low: the write is over and one pass of coarser steps fixes it; 50% low: the
    second pass moves tensors to exact fixed-rate settings. Never more than two passes."""
    _scaled(factor, monkeypatch)
    calls = []
    real_exact = write_mod._pass_exact
    monkeypatch.setattr(write_mod, "_pass_exact", lambda *a: calls.append(1) or real_exact(*a))
    out = str(tmp_path / "a.qnt.safetensors")
    r = quantize_budget([model], out, Budget("bpw", 3.0), objective="mse", **KW)
    assert os.path.getsize(out) <= r.plan.limit_bytes
    assert r.plan.refined is not None and 1 <= r.plan.refined.corrections <= 2
    assert bool(calls) == (passes == 2)


def test_max_size_exactly_at_a_written_size(model, tmp_path):
    """A --max-size equal to what a first run wrote, and one byte less: both fit."""
    first = str(tmp_path / "1.qnt.safetensors")
    quantize_budget([model], first, Budget("bpw", 3.0), **KW)
    size = os.path.getsize(first)
    for limit in (size, size - 1, size - 300):
        out = str(tmp_path / f"{limit}.qnt.safetensors")
        quantize_budget([model], out, Budget("bytes", limit, str(limit)), **KW)
        assert os.path.getsize(out) <= limit


def test_jobs_give_identical_archives(model, tmp_path, monkeypatch):
    """--jobs 2 measures in threads and writes in worker processes (forced here for a small model):
    the archive is byte for byte the --jobs 1 one."""
    monkeypatch.setattr(write_mod, "PARALLEL_MIN_BYTES", 0)
    digests = []
    for jobs in (1, 2):
        out = str(tmp_path / f"{jobs}.qnt.safetensors")
        quantize_budget([model], out, Budget("bpw", 3.5), jobs=jobs, **KW)
        digests.append(hashlib.sha256(open(out, "rb").read()).hexdigest())
    assert digests[0] == digests[1]


def test_phase_events(model, tmp_path):
    events: list[PhaseEvent] = []
    quantize_budget([model], str(tmp_path / "a.qnt.safetensors"), Budget("bpw", 3.0), progress=events.append, **KW)
    phases = list(dict.fromkeys(e.phase for e in events))
    assert phases[:3] == ["measuring", "allocating", "solving"] and "writing" in phases
    measuring = [e for e in events if e.phase == "measuring"]
    assert [e.done for e in measuring] == list(range(5)) and {e.total for e in measuring} == {4}
    assert measuring[-1].describe() == "measuring 4/4 tensors" and measuring[-1].eta_seconds == 0.0
    writing = [e for e in events if e.phase == "writing"]
    assert writing[-1].done == writing[-1].total == 4


@pytest.mark.parametrize("flags", [["--json"], ["--quiet"], []])
def test_no_progress_into_pipes_or_json(model, tmp_path, flags):
    """CliRunner's streams are not terminals: stderr stays empty, stdout is only the result."""
    out = str(tmp_path / "a.qnt.safetensors")
    r = CliRunner().invoke(app, ["quantize", model, "-o", out, "--target-bpw", "3", "--sample", "2048", *flags])
    assert r.exit_code == 0, r.output
    assert r.stderr == ""
    if flags == ["--json"]:
        assert json.loads(r.stdout)["ok"] is True
    if flags == ["--quiet"]:
        assert r.stdout == ""


def test_a_huge_bpw_target_is_no_limit_not_an_overflow():
    assert Budget("bpw", 1e308).limit_bytes(10**12, 7) == 7 + (1 << 62)
    assert Budget("bpw", 4.0).limit_bytes(1000, 7) == 507


@pytest.mark.parametrize("typed, options", [({"method"}, {"target_bpw": 30.0, "method": "nf"}),
                                            ({"codec"}, {"target_bpw": 30.0, "codec": "entropy"}),
                                            ({"objective"}, {"objective": "mse"}),
                                            ({"sample"}, {"sample": 100})])
def test_options_the_run_would_ignore_are_refused(tmp_path, typed, options):
    """With a budget the planner picks each tensor's method and codec; without one, the planner's
    own options weigh nothing: either way the option is named, not silently dropped."""
    from quantcli import api

    np.save(tmp_path / "w.npy", np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32))
    with pytest.raises(ConfigError, match=f"--{next(iter(typed))} has no effect"):
        api.quantize([str(tmp_path / "w.npy")], str(tmp_path / "o.qnt.safetensors"), typed=typed, **options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.npy"]
