"""Reports as rich tables (for people) and JSON documents (for scripts). No math here."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rich.console import Console
from rich.table import Table

from .reports import (DequantizeReport, Inspection, PlanReport, PQDotReport, QuantizeReport, TensorReport,
                  TensorStats)


def _num(value: float) -> float | str | None:
    """JSON has no infinity: exact reconstructions report sqnr_db as the string "inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _db(value: float) -> str:
    return "inf" if value == math.inf else f"{value:.2f}"


def _bytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


def tensor_json(t: TensorReport) -> dict[str, Any]:
    doc = {"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "method": t.method, "label": t.label,
           "params": t.params, "elements": t.elements, "original_bytes": t.original_bytes,
           "stored_bytes": t.stored_bytes, "bits_per_weight": t.bits_per_weight}
    if t.quantized:
        doc.update(mse=t.mse, sqnr_db=_num(t.sqnr_db), max_abs_err=t.max_abs_err)
    if t.note:
        doc["note"] = t.note
    return doc


def quantize_json(r: QuantizeReport) -> dict[str, Any]:
    return {
        "command": "quantize", "inputs": r.inputs, "output": r.output,
        "tensors": [tensor_json(t) for t in r.tensors],
        "totals": {
            "tensors": len(r.tensors), "quantized_tensors": sum(t.quantized for t in r.tensors),
            "input_bytes": r.input_bytes, "archive_bytes": r.archive_bytes, "ratio": r.ratio,
            "quantized_elements": r.quantized_elements, "quantized_stored_bytes": r.quantized_stored_bytes,
            "bits_per_weight": r.bits_per_weight, "overall_sqnr_db": _num(r.overall_sqnr_db),
            "overall_mse": r.quantized.mse, "max_abs_err": r.quantized.max_abs,
            "seconds": r.seconds, "mb_per_s": r.input_bytes / 1e6 / r.seconds if r.seconds else None,
        },
    }


def _tensor_table(tensors: list[TensorReport], title: str) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for col, justify in (("tensor", "left"), ("shape", "left"), ("dtype", "left"), ("method", "left"),
                         ("bytes", "right"), ("bits/w", "right"), ("SQNR dB", "right"),
                         ("max abs err", "right"), ("MSE", "right")):
        table.add_column(col, justify=justify, overflow="fold")
    for t in tensors:
        shape = "x".join(map(str, t.shape)) or "scalar"
        if t.quantized:
            table.add_row(t.name, shape, t.dtype, t.label, _bytes(t.stored_bytes), f"{t.bits_per_weight:.3f}",
                          _db(t.sqnr_db), f"{t.max_abs_err:.3g}", f"{t.mse:.3g}")
        else:
            table.add_row(t.name, shape, t.dtype, f"[dim]{t.note or 'kept'}[/dim]", _bytes(t.stored_bytes),
                          f"{t.bits_per_weight:.3f}", "exact", "0", "0")
    return table


def print_quantize(console: Console, r: QuantizeReport) -> None:
    console.print(_tensor_table(r.tensors, f"{r.output}"))
    q = sum(t.quantized for t in r.tensors)
    if q:
        console.print(
            f"\n{q} of {len(r.tensors)} tensors quantized: {r.bits_per_weight:.3f} bits per weight "
            f"(codes, scales, zero points and codebooks counted), overall SQNR {_db(r.overall_sqnr_db)} dB, "
            f"max abs error {r.quantized.max_abs:.3g}")
    else:
        console.print(f"\nno tensor quantized: all {len(r.tensors)} kept as they are (see the notes above)")
    rate = f", {r.input_bytes / 1e6 / r.seconds:.0f} MB/s" if r.seconds else ""
    console.print(f"input {_bytes(r.input_bytes)} -> archive {_bytes(r.archive_bytes)} (headers and kept tensors "
                  f"included): {100 * r.ratio:.2f}% of the input, {r.seconds:.2f} s{rate}")


def dequantize_json(r: DequantizeReport) -> dict[str, Any]:
    return {"command": "dequantize", "archive": r.archive, "output": r.output, "output_bytes": r.output_bytes,
            "seconds": r.seconds,
            "tensors": [{"name": n, "dtype": d, "shape": list(s)} for n, d, s in r.tensors]}


def print_dequantize(console: Console, r: DequantizeReport) -> None:
    console.print(f"{r.output}: {len(r.tensors)} tensors, {_bytes(r.output_bytes)}, {r.seconds:.2f} s")


def stats_json(s: TensorStats) -> dict[str, Any]:
    return {"name": s.name, "dtype": s.dtype, "shape": list(s.shape), "elements": s.elements, "bytes": s.nbytes,
            "min": _num(s.min), "max": _num(s.max), "mean": _num(s.mean), "std": _num(s.std),
            "absmax": _num(s.absmax), "zeros": s.zeros, "nonfinite": s.nonfinite}


def inspect_json(items: list[Inspection]) -> dict[str, Any]:
    files = []
    for item in items:
        doc: dict[str, Any] = {"path": item.path, "file_bytes": item.file_bytes}
        if item.archive is not None:
            doc["kind"] = "archive"
            doc["tensors"] = [tensor_json(t) for t in item.archive]
            q = [t for t in item.archive if t.quantized]
            n = sum(t.elements for t in q)
            stored = sum(t.stored_bytes for t in q)
            original = sum(t.original_bytes for t in item.archive)
            doc["totals"] = {"tensors": len(item.archive), "quantized_tensors": len(q),
                             "original_bytes": original, "ratio": item.file_bytes / original if original else None,
                             "bits_per_weight": stored * 8 / n if n else None}
        else:
            doc["kind"] = "weights"
            doc["tensors"] = [stats_json(s) for s in item.tensors or []]
        files.append(doc)
    return {"command": "inspect", "files": files}


def print_inspect(console: Console, items: list[Inspection]) -> None:
    for item in items:
        if item.archive is not None:
            console.print(_tensor_table(item.archive, f"{item.path} (quant archive, {_bytes(item.file_bytes)})"))
            q = [t for t in item.archive if t.quantized]
            n = sum(t.elements for t in q)
            original = sum(t.original_bytes for t in item.archive)
            if n:
                bpw = sum(t.stored_bytes for t in q) * 8 / n
                console.print(f"\n{len(q)} of {len(item.archive)} tensors quantized, {bpw:.3f} bits per weight; "
                              f"{_bytes(original)} of tensors in {_bytes(item.file_bytes)}: "
                              f"{100 * item.file_bytes / original:.2f}%")
            continue
        table = Table(title=f"{item.path} ({_bytes(item.file_bytes)})", title_justify="left", show_edge=False,
                      pad_edge=False)
        for col in ("tensor", "dtype", "shape", "elements", "bytes", "min", "max", "mean", "std", "absmax",
                    "zeros"):
            table.add_column(col, justify="left" if col in ("tensor", "dtype", "shape") else "right",
                             overflow="fold")
        for s in item.tensors or []:
            extra = f" ({s.nonfinite} NaN/Inf)" if s.nonfinite else ""
            table.add_row(s.name, s.dtype, "x".join(map(str, s.shape)) or "scalar", f"{s.elements:,}",
                          _bytes(s.nbytes), f"{s.min:.4g}", f"{s.max:.4g}", f"{s.mean:.4g}", f"{s.std:.4g}",
                          f"{s.absmax:.4g}", f"{s.zeros:,}{extra}")
        console.print(table)
        total = sum(s.elements for s in item.tensors or [])
        console.print(f"\n{len(item.tensors or [])} tensors, {total:,} elements")


def plan_json(p: PlanReport) -> dict[str, Any]:
    tensors = []
    for item, label, size in zip(p.items, p.labels, p.stored_bytes):
        ref = item.ref
        doc = {"name": ref.name, "dtype": ref.code, "shape": list(ref.shape), "elements": ref.size,
               "method": "keep" if item.keep else item.spec.method, "label": label, "predicted_bytes": size,
               "bits_per_weight": size * 8 / ref.size if ref.size else 0.0}
        if item.note:
            doc["note"] = item.note
        tensors.append(doc)
    q = [(item, size) for item, size in zip(p.items, p.stored_bytes) if not item.keep]
    n = sum(item.ref.size for item, _ in q)
    return {"command": "quantize", "dry_run": True, "inputs": p.inputs, "tensors": tensors,
            "totals": {"input_bytes": p.input_bytes, "predicted_archive_bytes": p.predicted_archive_bytes,
                       "stored_bytes": sum(p.stored_bytes), "header_bytes_estimate": p.header_bytes_estimate,
                       "bits_per_weight": sum(s for _, s in q) * 8 / n if n else None,
                       "ratio": p.predicted_archive_bytes / p.input_bytes if p.input_bytes else None}}


def print_plan(console: Console, p: PlanReport) -> None:
    table = Table(title="plan (dry run: nothing written)", title_justify="left", show_edge=False, pad_edge=False)
    for col, justify in (("tensor", "left"), ("shape", "left"), ("dtype", "left"), ("method", "left"),
                         ("bytes", "right"), ("bits/w", "right")):
        table.add_column(col, justify=justify, overflow="fold")
    for item, label, size in zip(p.items, p.labels, p.stored_bytes):
        ref = item.ref
        table.add_row(ref.name, "x".join(map(str, ref.shape)) or "scalar", ref.code,
                      f"[dim]{item.note}[/dim]" if item.keep else label, _bytes(size),
                      f"{size * 8 / ref.size:.3f}" if ref.size else "-")
    console.print(table)
    doc = plan_json(p)["totals"]
    bpw = f"{doc['bits_per_weight']:.3f}" if doc["bits_per_weight"] is not None else "-"
    console.print(f"\npredicted archive {_bytes(p.predicted_archive_bytes)} ({_bytes(sum(p.stored_bytes))} of arrays, "
                  f"header at most {_bytes(p.header_bytes_estimate)}) from {_bytes(p.input_bytes)} of input; "
                  f"{bpw} bits per quantized weight")


SMALL_RESULT = 64  # values printed (or put in JSON) when the result is not written to a file


def pq_dot_json(r: PQDotReport) -> dict[str, Any]:
    doc: dict[str, Any] = {"command": "pq-dot", "archive": r.archive, "tensor": r.tensor,
                           "result_shape": list(r.result.shape), "backend": r.backend, "output": r.output}
    if r.output is None and r.result.size <= SMALL_RESULT:
        doc["result"] = r.result.tolist()
    if r.reference is not None or r.relative_error is not None:
        doc.update(reference=r.reference, relative_error=r.relative_error, lut_ms=r.lut_ms, dense_ms=r.dense_ms,
                   speedup=r.speedup)
    return doc


def print_pq_dot(console: Console, r: PQDotReport) -> None:
    shape = "x".join(map(str, r.result.shape))
    where = f" -> {r.output}" if r.output else ""
    console.print(f"{r.tensor}: result {shape} via lookup tables ({r.backend} backend){where}")
    if r.output is None:
        if r.result.size <= SMALL_RESULT:
            console.print(np.array2string(r.result, precision=6, suppress_small=False), markup=False)
        else:
            console.print(f"(not printed: {r.result.size} values; write them with -o OUT.npy)")
    if r.relative_error is not None:
        console.print(f"relative error vs the reference: {r.relative_error:.4g}; LUT {r.lut_ms:.3f} ms, dense float32 "
                      f"matmul of the reconstruction {r.dense_ms:.3f} ms: {r.speedup:.2f}x")
