"""`api.quantize` is the one front door of `quant quantize`: plain, budgeted and dry runs, presets
and the refusal of options that would change nothing, with the same results as the functions
behind it."""

from __future__ import annotations

import pytest

from quantcli import ConfigError, Spec, api

TINY = "sample_weights/tiny_transformer.safetensors"


def test_a_plain_run_is_quantize_file(tmp_path):
    a = api.quantize([TINY], str(tmp_path / "a.qnt.safetensors"), bits=4, granularity="group", group_size=64)
    b = api.quantize_file([TINY], str(tmp_path / "b.qnt.safetensors"), Spec(bits=4, granularity="group", group_size=64))
    assert type(a).__name__ == "QuantizeReport"
    assert (tmp_path / "a.qnt.safetensors").read_bytes() == (tmp_path / "b.qnt.safetensors").read_bytes()
    assert a.bits_per_weight == b.bits_per_weight


def test_dry_runs_and_budgets_return_their_reports(tmp_path):
    assert type(api.quantize([TINY], dry_run=True, bits=4)).__name__ == "PlanReport"
    plan = api.quantize([TINY], dry_run=True, target_bpw=4.0, candidates="fast")
    assert type(plan).__name__ == "Plan" and plan.bits_per_weight <= 4.0
    planned = api.quantize([TINY], str(tmp_path / "p.qnt.safetensors"), preset="best-4", candidates="fast")
    assert type(planned).__name__ == "PlannedQuantizeReport" and planned.report.bits_per_weight <= 4.0


@pytest.mark.parametrize("kwargs, typed, message", [
    ({"target_bpw": 3.5, "bits": 4}, {"bits"}, "--bits has no effect with a budget"),
    ({"method": "fp16", "bits": 4}, {"method", "bits"}, "--bits"),
    ({"preset": "int4-g64", "bits": 3}, {"bits"}, "--preset int4-g64 sets --bits"),
    ({"preset": "int8", "target_bpw": 3.0}, {"target_bpw"}, "--preset int8 is a fixed setting"),
    ({"preset": "lossless", "max_size": "1MB"}, {"max_size"}, "--preset lossless is a fixed setting"),
    ({"method": "fp16", "importance": "imp.safetensors"}, {"method"}, "--importance has no effect"),
    ({}, set(), "needs --output"),
])
def test_options_that_would_change_nothing_are_refused(kwargs, typed, message):
    output = "" if message == "needs --output" else "x.qnt.safetensors"
    with pytest.raises(ConfigError, match=message):
        api.quantize([TINY], output, typed=typed, **kwargs)


def test_unknown_options_are_a_type_error():
    with pytest.raises(TypeError, match="bitz"):
        api.quantize([TINY], "x.qnt.safetensors", bitz=4)


def test_the_reported_time_covers_the_work_before_the_write_loop(tmp_path, monkeypatch):
    import time

    original = api.plan_tensors

    def slow(*args, **kwargs):
        time.sleep(0.3)
        return original(*args, **kwargs)

    monkeypatch.setattr(api, "plan_tensors", slow)
    r = api.quantize([TINY], str(tmp_path / "a.qnt.safetensors"), method="ecsq", sqnr=30.0)
    assert r.seconds >= 0.3
