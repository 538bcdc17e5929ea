"""Reports of the planner (`quantize --target-bpw/--max-size/--min-sqnr`) and of `quant curve`:
rich tables for people, JSON documents for scripts. No math here."""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator

from rich.console import Console

from ..methods import KEEP

from .render import Col, _bytes, _db, _num, _shape, _width, document, fit_table, print_quantize, quantize_json

if TYPE_CHECKING:
    from ..planner.model import Baseline, Curve, Plan, PlannedQuantizeReport


def _baseline_json(b: Baseline | None) -> dict[str, Any] | None:
    if b is None:
        return None
    return {"label": b.label, "archive_bytes": b.archive_bytes, "bits_per_weight": b.bits_per_weight,
            "weighted_sqnr_db": _num(b.weighted_sqnr_db), "overall_sqnr_db": _num(b.overall_sqnr_db),
            "objective_sqnr_db": _num(b.objective_sqnr_db) if b.objective_sqnr_db is not None else None}


def plan_doc(p: Plan) -> dict[str, Any]:
    """The plan: per tensor method, params, bits, predicted bytes and SQNR; totals; baselines."""
    tensors = []
    for t in p.tensors:
        doc: dict[str, Any] = {"name": t.ref.name, "dtype": t.ref.dtype, "shape": list(t.ref.shape),
                               "elements": t.elements, "role": t.role}
        if t.choice is None:
            doc.update(method=KEEP, label="kept", predicted_bytes=t.kept_bytes, note=t.note)
        else:
            c = t.choice
            doc.update(method=c.spec.method, label=c.label, params=c.params, bits=c.params.get("bits", c.spec.bits),
                       predicted_bytes=c.nbytes, bits_per_weight=8 * c.nbytes / t.elements if t.elements else 0.0,
                       predicted_sqnr_db=_num(c.sqnr_db), sample_rows=t.sample_rows, rows=t.rows)
            if t.actual is not None and t.role == "planned" and p.budget.kind == "sqnr":
                doc["measured_sqnr_db"] = _num(t.actual.sqnr_db)
        tensors.append(doc)
    limit = p.limit_bytes
    return {
        "budget": {"kind": p.budget.kind, "value": p.budget.value, "option": p.budget.describe(),
                   "limit_archive_bytes": limit},
        "tensors": tensors,
        "totals": {"predicted_archive_bytes": p.predicted_archive_bytes, "header_bytes": p.header_bytes,
                   "input_bytes": p.input_bytes, "quantized_elements": p.quantized_elements,
                   "bits_per_weight": p.bits_per_weight, "weighted_sqnr_db": _num(p.weighted_sqnr_db),
                   "objective_sqnr_db": _num(p.objective_sqnr_db) if p.objective_sqnr_db is not None else None,
                   "overall_sqnr_db": _num(p.overall_sqnr_db), "planning_seconds": p.planning_seconds,
                   "sample_values": p.sample, "candidates": p.candidates, "objective": p.objective,
                   "ecsq_resolved": _refined_json(p)},
        "baseline_uniform": _baseline_json(p.baseline_uniform),
        "baseline_any": _baseline_json(p.baseline_any),
    }


def _refined_json(p: Plan) -> dict[str, Any] | None:
    r = p.refined
    if r is None:
        return None
    return {"tensors": r.tensors, "trellis": r.trellis, "objective_before": _num(r.before),
            "objective_after": _num(r.after), "passes": r.passes, "corrections": r.corrections}


def _refined_line(p: Plan) -> str:
    r = p.refined
    if r is None or r.after >= r.before:
        return ""
    gain = 10 * math.log10(r.before / r.after) if r.after > 0 else math.inf
    return (f"; ecsq steps of {r.tensors} tensors re-solved{' with the trellis' if r.trellis else ''}: "
            f"objective -{_db(gain)} dB against the ladder")


def plan_json(p: Plan) -> dict[str, Any]:
    return document("quantize", dry_run=True, inputs=p.inputs, **plan_doc(p))


def planned_json(r: PlannedQuantizeReport) -> dict[str, Any]:
    doc = quantize_json(r.report)
    doc["totals"]["weighted_sqnr_db"] = _num(r.weighted_sqnr_db)
    doc["plan"] = plan_doc(r.plan)
    return doc


def _baseline_line(p: Plan) -> str:
    lines = []
    for what, b in (("best single uniform setting", p.baseline_uniform), ("best single setting", p.baseline_any)):
        if b is None:
            lines.append(f"{what}: none fits {p.budget.describe()}")
        elif what == "best single setting" and p.baseline_uniform and b.label == p.baseline_uniform.label:
            continue
        else:
            quality = (f"objective SQNR {_db(b.objective_sqnr_db)} dB against the plan's {_db(p.objective_sqnr_db)} dB "
                       f"(both weighed by the objective {p.objective})"
                       if b.objective_sqnr_db is not None and p.objective_sqnr_db is not None
                       else f"weighted SQNR {_db(b.weighted_sqnr_db)} dB")
            lines.append(f"{what} for the same budget: {b.label}, {_bytes(b.archive_bytes)} "
                         f"({b.bits_per_weight:.3f} bits/w), {quality}, estimated as for the plan")
    return "\n".join(lines)


def _totals_line(p: Plan) -> str:
    limit = f" of {_bytes(p.limit_bytes)} allowed" if p.limit_bytes is not None else ""
    return (f"{p.budget.describe()}: archive {p.predicted_archive_bytes:,} bytes{limit} (exact, header "
            f"{p.header_bytes:,}), {p.bits_per_weight:.4f} bits per quantized weight (archive less kept arrays), "
            f"{f'objective SQNR {_db(p.objective_sqnr_db)} dB, ' if p.objective_sqnr_db is not None else ''}"
            f"weighted SQNR {_db(p.weighted_sqnr_db)} dB, overall {_db(p.overall_sqnr_db)} dB (estimated on "
            f"samples of {p.sample:,} values), objective {p.objective}{_refined_line(p)}, planned in "
            f"{p.planning_seconds:.1f} s")


_PLAN_COLS = (Col("tensor", "left"), Col("shape", "left", 3), Col("role", "left", 2), Col("setting", "left", wrap=22),
              Col("bytes", drop=4), Col("bits/w"), Col("SQNR dB (est.)"), Col("rows measured", drop=1))


def print_plan(console: Console, p: Plan) -> None:
    rows, dim = [], []
    for t in p.tensors:
        shape = _shape(t.ref.shape)
        if t.choice is None:
            rows.append([t.ref.name, shape, "kept", t.note, _bytes(t.kept_bytes), "-", "exact", "-"])
            dim.append(3)
            continue
        c = t.choice
        sq = t.actual.sqnr_db if (t.actual is not None and p.budget.kind == "sqnr") else c.sqnr_db
        rows.append([t.ref.name, shape, t.role, c.label, _bytes(c.nbytes), f"{8 * c.nbytes / t.elements:.3f}",
                     _db(sq), f"{t.sample_rows}/{t.rows}"])
        dim.append(-1)
    console.print(fit_table("plan (dry run: nothing written)", _PLAN_COLS, rows, _width(console), dim))
    console.print("\n" + _totals_line(p))
    console.print(_baseline_line(p))


def print_planned(console: Console, r: PlannedQuantizeReport) -> None:
    print_quantize(console, r.report)
    p = r.plan
    console.print(_totals_line(p))
    console.print(f"measured on the written archive: weighted SQNR {_db(r.weighted_sqnr_db)} dB, overall "
                  f"{_db(r.report.overall_sqnr_db)} dB, {r.report.archive_bytes:,} bytes")
    console.print(_baseline_line(p))


def curve_json(c: Curve) -> dict[str, Any]:
    return document("curve", inputs=c.inputs, tensors=c.tensors, elements=c.elements, sample_values=c.sample,
                    seconds=c.seconds, points=[{"label": p.label, "method": p.method, "bits": p.bits,
                                                "bits_per_weight": p.bits_per_weight,
                        "overall_sqnr_db": _num(p.overall_sqnr_db), "weighted_sqnr_db": _num(p.weighted_sqnr_db),
                                    "pareto": p.pareto} for p in c.points])


_CURVE_COLS = (Col("setting", "left"), Col("bits/w"), Col("overall SQNR dB"), Col("weighted SQNR dB"),
               Col("pareto", "left"))


def print_curve(console: Console, c: Curve) -> None:
    rows = [[p.label, f"{p.bits_per_weight:.3f}", _db(p.overall_sqnr_db), _db(p.weighted_sqnr_db),
             "*" if p.pareto else ""] for p in sorted(c.points, key=lambda p: (p.method, p.bits_per_weight))]
    console.print(fit_table(f"rate-distortion of each setting on {c.tensors} tensors ({c.elements:,} weights)",
                            _CURVE_COLS, rows, _width(console)))
    console.print(f"\nbits/w: stored arrays of the quantized tensors over their weights; SQNR estimated on samples "
                  f"of {c.sample:,} values per tensor ({'whole tensors' if c.sample == 0 else 'whole rows'}); "
                  f"pareto: no other setting is both smaller and better (weighted); {c.seconds:.1f} s")


@contextmanager
def phase_bar(console: Any) -> Iterator[Callable[[Any], None] | None]:
    """A transient bar for the planner's phase events (planner.PhaseEvent): "measuring 37/111
    tensors", its bar and ETA. Nothing (None) without a console or off a terminal."""
    if console is None or not console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn

    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), TextColumn("{task.fields[eta]}"),
                  console=console, transient=True) as bar:
        task = bar.add_task("planning", total=None, eta="")

        def update(event: Any) -> None:
            left = event.eta_seconds
            eta = "" if left is None else f"ETA {int(left) // 60}:{int(left) % 60:02d}"
            bar.update(task, description=event.describe(), completed=event.done, total=event.total or None, eta=eta)

        yield update
