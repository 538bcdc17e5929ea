"""The planner's continuous re-solve of ecsq steps on samples (planner/solve.py) and the
objectives' weights (planner/weights.py): never over budget, the prediction close, the
closed-form step rule, the embedding rule's names."""

from __future__ import annotations

import hashlib
import math
import os

import numpy as np
import pytest

from quantcli import ConfigError, Spec, open_archive
from quantcli.planner import Budget, plan_budget, quantize_budget
from quantcli.methods import get_method
from quantcli.planner.solve import Trial, search
from quantcli.planner.weights import EMBED_FACTOR, input_embeddings, objective_weights

# ecsq's ladder plus a few fixed-rate settings: the allocation can still leave ecsq for small tensors
CANDS = [Spec(method="uniform", bits=b, scheme="asymmetric", granularity="group", group_size=64)
         for b in (2, 4, 8)] + [Spec(method="fp16", bits=16)] + get_method("ecsq").planner_candidates("default")
KW = dict(candidates=CANDS, sample=4096)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    """A small BERT-like checkpoint: a token table, two encoder matrices of different spreads, a
    bias (kept)."""
    from safetensors.numpy import save_file
    rng = np.random.default_rng(11)
    tensors = {
        "embeddings.word_embeddings.weight": (rng.standard_normal((400, 64)) * 0.05).astype(np.float32),
        "encoder.layer.0.attention.self.query.weight": (rng.standard_normal((64, 64)) * 0.04).astype(np.float32),
        "encoder.layer.0.intermediate.dense.weight": rng.laplace(0, 0.02, (256, 64)).astype(np.float32),
        "encoder.layer.0.intermediate.dense.bias": rng.standard_normal(256).astype(np.float32),
    }
    path = tmp_path_factory.mktemp("refine") / "model.safetensors"
    save_file(tensors, str(path))
    return str(path)


def _file_bpw(path: str) -> float:
    with open_archive(path) as a:
        kept = sum(a.stored_nbytes(t) for t in a.tensors if t.method == "keep")
        n = sum(t.size for t in a.tensors if t.method != "keep")
    return 8 * (os.path.getsize(path) - kept) / n


def _steps(path: str) -> dict[str, dict]:
    with open_archive(path) as a:
        return {t.name: t.params for t in a.tensors if t.method == "ecsq"}


@pytest.mark.parametrize("objective", ["mse", "relative", "relative-emb"])
@pytest.mark.parametrize("bpw", [2.5, 4.0])
def test_trellis_plan_within_budget_and_predicted(model, tmp_path, objective, bpw):
    """The re-solve sizes trellis steps by coding samples: the dry run predicts the file's size
    within 3% (tables weigh on a 15 KB archive), the file fits, the written plan states its size exactly, and the re-solve lowered
    the objective."""
    budget = Budget("bpw", bpw)
    dry = plan_budget([model], budget, objective=objective, **KW)
    out = str(tmp_path / "a.qnt.safetensors")
    real = quantize_budget([model], out, budget, objective=objective, **KW)
    assert _file_bpw(out) <= bpw
    assert os.path.getsize(out) <= real.plan.limit_bytes
    assert dry.refined is not None and dry.refined.trellis and dry.refined.after < dry.refined.before
    steps = _steps(out)
    assert len(steps) == 3 and all(p.get("dq") for p in steps.values())
    assert os.path.getsize(out) == real.plan.predicted_archive_bytes
    assert abs(dry.predicted_archive_bytes - os.path.getsize(out)) <= 0.03 * os.path.getsize(out)  # 15 KB: tables weigh
    # budget used (a correction pass frees up to twice the excess: on 15 KB that is ~0.04 bpw)
    assert 8 * (real.plan.limit_bytes - os.path.getsize(out)) / real.plan.quantized_elements < 0.05


def test_step_rule(model):
    """mse: one common step; relative: steps proportional to each tensor's RMS; relative-emb: the
    token table's step EMBED_FACTOR times coarser relative to its RMS. (The plan's steps: a
    correction pass of the write may coarsen one tensor's step after it.)"""
    from safetensors.numpy import load_file
    w = load_file(model)
    rms = {k: float(np.sqrt(np.mean(v.astype(np.float64) ** 2))) for k, v in w.items()}
    ratios = {}
    for objective in ("mse", "relative", "relative-emb"):
        plan = plan_budget([model], Budget("bpw", 3.0), objective=objective, trellis=False, **KW)
        chosen = {t.ref.name: t.choice.params for t in plan.tensors if t.choice and t.choice.spec.method == "ecsq"}
        steps = {k: p["step"] for k, p in chosen.items()}
        assert len(steps) == 3 and not any(p.get("dq") for p in chosen.values())
        ratios[objective] = {k: s / rms[k] for k, s in steps.items()}
        if objective == "mse":
            assert len(set(steps.values())) == 1
    emb = "embeddings.word_embeddings.weight"
    rel = list(ratios["relative"].values())
    assert max(rel) / min(rel) == pytest.approx(1, rel=1e-5)
    r = ratios["relative-emb"]
    others = [v for k, v in r.items() if k != emb]
    assert max(others) / min(others) == pytest.approx(1, rel=1e-5)
    assert r[emb] / others[0] == pytest.approx(EMBED_FACTOR, rel=1e-5)


def test_trellis_beats_plain_and_deterministic(model, tmp_path):
    """At equal budget the trellis lowers the total squared error; runs with --jobs 1 and 2 give
    identical files."""
    budget = Budget("bpw", 3.0)
    paths = [str(tmp_path / f"{i}.qnt.safetensors") for i in range(3)]
    errs = []
    for path, trellis, jobs in zip(paths, (True, True, False), (1, 2, 1)):
        r = quantize_budget([model], path, budget, objective="mse", trellis=trellis, jobs=jobs, **KW)
        errs.append(sum(t.mse * t.elements for t in r.report.tensors if t.quantized))
    digest = [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in paths[:2]]
    assert digest[0] == digest[1]
    assert errs[0] < 0.95 * errs[2]


def test_max_size_budget(model, tmp_path):
    out = str(tmp_path / "a.qnt.safetensors")
    r = quantize_budget([model], out, Budget("bytes", 40_000, "40000"), objective="mse", **KW)
    assert os.path.getsize(out) <= 40_000 and r.plan.refined is not None


def test_unknown_objective(model):
    with pytest.raises(ConfigError, match="relative, mse or relative-emb"):
        plan_budget([model], Budget("bpw", 3.0), objective="cosine", **KW)


def test_search_finds_the_smallest_feasible_theta():
    """Cost falling smoothly with theta: the search ends within the tolerance below the budget
    and never returns an infeasible trial; a cost that never fits gives None."""
    def cost(theta: float) -> float:
        return 1e6 - 1.44e5 * math.log(theta) + 3e3 * math.sin(theta * 40)

    def evaluate(theta: float) -> Trial:
        return Trial(theta, [], cost(theta), 0.0)

    for budget in (9e5, 1.2e6, 1.5e6):
        for start in (0.05, 1.0, 20.0):
            found, n = search(evaluate, start, budget, 1.44e5, 12)
            assert found is not None and found.cost <= budget and n <= 12
            assert budget - found.cost <= 2e-3 * budget
    found, _ = search(lambda t: Trial(t, [None], math.inf, math.inf), 1.0, 1e6, 1e5, 5)
    assert found is None


@pytest.mark.parametrize("names, expect", [
    (["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
      "encoder.layer.0.output.dense.weight", "pooler.dense.weight"], {"embeddings.word_embeddings.weight"}),
    (["bert.embeddings.word_embeddings.weight", "bert.encoder.layer.0.output.dense.weight",
      "cls.predictions.bias", "cls.predictions.transform.dense.weight"], set()),  # tied masked-LM head
    (["roberta.embeddings.word_embeddings.weight", "lm_head.dense.weight", "lm_head.bias"], set()),
    (["model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight"], set()),  # tied head, not stored
    (["model.embed_tokens.weight", "lm_head.weight"], set()),  # decoders never: no name rule there
    (["transformer.wte.weight", "transformer.h.0.attn.c_attn.weight"], set()),
    (["encoder.embeddings.word_embeddings.weight", "decoder.layers.0.fc1.weight"], set()),
])
def test_input_embeddings(names, expect):
    assert input_embeddings(names) == expect


def test_objective_weights():
    names = ["embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight"]
    assert objective_weights([100, 10], [4.0, 2.0], names, "relative", names) == [100.0, 10.0]
    assert objective_weights([100, 10], [4.0, 2.0], names, "mse", names) == [4.0, 2.0]
    assert objective_weights([100, 10], [4.0, 2.0], names, "relative-emb", names) == [100 / EMBED_FACTOR ** 2, 10.0]
    # a head anywhere in the checkpoint (kept tensors included) turns the rule off
    assert objective_weights([100, 10], [4.0, 2.0], names, "relative-emb", names + ["cls.predictions.bias"]) \
        == [100.0, 10.0]


def test_cli_objective_relative_emb(model, tmp_path):
    """The CLI takes the new objective; the JSON reports it and the re-solve; the file fits and is
    within 3% of the dry run's prediction (trellis choices are sized by coding their samples)."""
    import json

    from typer.testing import CliRunner

    from quantcli.cli import app
    runner = CliRunner()
    args = [model, "--target-bpw", "3", "--objective", "relative-emb", "--json", "--sample", "4096"]
    dry = runner.invoke(app, ["quantize", *args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    doc = json.loads(dry.stdout)
    assert doc["totals"]["objective"] == "relative-emb"
    assert doc["totals"]["ecsq_resolved"]["trellis"] is True
    out = str(tmp_path / "c.qnt.safetensors")
    res = runner.invoke(app, ["quantize", "-o", out, *args])
    assert res.exit_code == 0, res.output
    assert abs(os.path.getsize(out) - doc["totals"]["predicted_archive_bytes"]) <= 0.03 * os.path.getsize(out)
    assert os.path.getsize(out) == json.loads(res.stdout)["plan"]["totals"]["predicted_archive_bytes"]
    bad = runner.invoke(app, ["quantize", model, "--target-bpw", "3", "--objective", "cosine", "--dry-run"])
    assert bad.exit_code == 2
