"""Reports as rich tables (for people) and JSON documents (for scripts). No math here.

Names, notes and paths are data: every one is escaped before rich sees it (`safe`), so `[/x]` in
a tensor name prints as written and a lone surrogate prints as `\\udcxx` instead of crashing the
encoder. Tables fit the console's width (`fit_table`): long names are shortened in the middle
(the distinctive tail kept), low-value columns dropped at narrow widths, numbers never wrapped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence, cast

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import one_line
from ..methods import KEEP

if TYPE_CHECKING:  # annotations only: rendering needs no numpy or method code at import
    from ..metrics import ErrorStats
    from ..reports import (
        DequantizeReport, ImportanceUse, Inspection, PlanReport, PQDotReport, QuantizeReport, TensorReport,
        TensorStats, VerifyReport)

SCHEMA = 1  # the "schema" key of every JSON document (docs/JSON.md)
MIN_NAME = 24  # narrowest a name column gets before low-value columns are dropped
GAP = 3  # a column separator of rich's default box with padding: " │ "


def printable(text: str) -> str:
    """Text any terminal or UTF-8 file can take: control characters and lone surrogates (undecodable
    bytes of a file name) become backslash escapes."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def safe(text: object) -> str:
    """A name, note or path ready for rich: printable and with its markup escaped."""
    return escape(printable(str(text)))


def shorten(name: str, width: int) -> str:
    """`name`, printable (`printable`), in at most `width` characters. A dotted name first loses
    letters, not meaning: the leading parts that are not numbers shrink to their first character
    (those before a layer index at once, then left to right), so layer indices and the weight's
    kind survive (`e.l.0.attention.self.query.weight`); only then is the middle replaced by '…',
    keeping more of the tail. An escape (`\\u202e`) counts as one character: never cut in two."""
    text = printable(name)
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    parts = [[printable(c) for c in p] for p in name.split(".")]

    def joined(ps: list[list[str]]) -> str:
        return ".".join("".join(p) for p in ps)

    def digits(p: list[str]) -> bool:
        return "".join(p).isdigit()

    first_index = next((i for i, p in enumerate(parts) if digits(p) and i and not digits(parts[i - 1])), 0)
    if first_index:  # the prefix before a layer index shrinks at once: rows of one layer stay alike
        parts[:first_index] = [p if digits(p) else p[:1] for p in parts[:first_index]]
        if len(joined(parts)) <= width:
            return joined(parts)
    for i in range(len(parts) - 2):
        if not digits(parts[i]) and len(parts[i]) > 1:
            parts[i] = parts[i][:1]
            if len(joined(parts)) <= width:
                return joined(parts)
    units = [u for k, p in enumerate(parts if len(parts) > 2 else [[printable(c) for c in name]])
             for u in ([] if k == 0 else ["."]) + p]
    head = (width - 1) // 3
    if first_index and len(joined(parts[:first_index + 1])) + 1 <= (width - 1) // 2:
        head = len(joined(parts[:first_index + 1])) + 1  # the layer index stays in view
    front = _fit(units, head)
    back = _fit(units[len(front):][::-1], width - 1 - len("".join(front)))[::-1]
    return "".join(front) + "…" + "".join(back)


def _fit(units: list[str], room: int) -> list[str]:
    """The longest run of leading `units` within `room` characters."""
    taken: list[str] = []
    for u in units:
        room -= len(u)
        if room < 0:
            break
        taken.append(u)
    return taken


def short_note(note: str) -> str:
    """A kept tensor's note in a narrow table: the words before its first ' (' or ';'."""
    return note.split(" (", 1)[0].split(";", 1)[0]


@dataclass
class Col:
    """A table column; `drop` ranks how early it goes at narrow widths (0: never)."""

    header: str
    justify: str = "right"
    drop: int = 0
    wrap: int = 0  # words (a kept tensor's note): at most this wide, wrapped at spaces


def fit_table(title: str, cols: Sequence[Col], rows: Sequence[Sequence[str]], width: int,
              dim: Sequence[int] | None = None) -> Table:
    """A table of plain-text cells (column 0 is the name, escaped here) no wider than `width`.

    Widths are counted, not left to rich: every non-name column gets its widest cell and never
    wraps; if the name column would be narrower than MIN_NAME, columns are dropped in their `drop`
    order; names longer than the space left are shortened in the middle. `dim[k]` is a column of
    row k printed dim (a kept tensor's note), or -1."""
    keep = list(range(len(cols)))
    widths = [max([len(cols[i].header)] + [len(printable(r[i])) for r in rows]) for i in range(len(cols))]
    name_need = widths[0]

    def room(kept: list[int]) -> int:
        return width - sum(widths[i] for i in kept[1:]) - GAP * (len(kept) - 1)

    if room(keep) < name_need:  # first wrap the notes, then drop columns, then shorten names
        widths = [min(w, max(c.wrap, len(c.header))) if c.wrap else w for w, c in zip(widths, cols)]
    for rank in sorted({c.drop for c in cols if c.drop}):  # columns of one rank go together (min and max)
        if room(keep) >= min(name_need, MIN_NAME):
            break
        keep = [i for i in keep if cols[i].drop != rank]
    name_width = max(min(name_need, room(keep)), 4)
    notes: dict[str, None] = {}  # notes shortened in the cells, each said in full once below the table
    if dim:
        for k, r in enumerate(rows):
            i = dim[k]
            if i >= 0 and cols[i].wrap and len(r[i]) > widths[i] and short_note(r[i]) != r[i]:
                notes[r[i]] = None
    caption = "\n".join(notes) or None
    table = Table(title=safe(shorten(title, width)) if title else None, title_justify="left",
                  show_edge=False, pad_edge=False, caption=safe(caption) if caption else None, caption_justify="left")
    for i in keep:
        w = name_width if i == 0 else widths[i]
        table.add_column(cols[i].header, justify=cast(Any, cols[i].justify), no_wrap=not cols[i].wrap, min_width=w,
                         max_width=w, overflow="fold")
    for k, r in enumerate(rows):
        cells = [safe(shorten(r[0], name_width))]
        for i in keep[1:]:
            if dim and dim[k] == i:
                cells.append(f"[dim]{safe(short_note(r[i]) if r[i] in notes else r[i])}[/dim]")
            else:
                cells.append(safe(r[i]))
        table.add_row(*cells)
    return table


def _width(console: Console) -> int:
    return max(console.width - 1, 40)  # one spare column: some terminals wrap a line that fills the row


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


def _shape(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape)) or "scalar"


def document(command: str, **keys: Any) -> dict[str, Any]:
    """A JSON document: its schema version, the command, ok, then the command's keys."""
    return {"schema": SCHEMA, "command": command, "ok": True, **keys}


def tensor_json(t: TensorReport) -> dict[str, Any]:
    doc = {"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "method": t.method, "label": t.label,
           "params": t.params, "elements": t.elements, "original_bytes": t.original_bytes,
           "stored_bytes": t.stored_bytes, "bits_per_weight": t.bits_per_weight}
    if t.quantized:
        doc.update(mse=t.mse, sqnr_db=_num(t.sqnr_db), max_abs_err=t.max_abs_err)
    if t.output_sqnr_db is not None:
        doc["output_sqnr_db"] = _num(t.output_sqnr_db)
    if t.note:
        doc["note"] = t.note
    return doc


def quantize_json(r: QuantizeReport, command: str = "quantize") -> dict[str, Any]:
    return document(
        command, inputs=r.inputs, output=r.output,
        tensors=[tensor_json(t) for t in r.tensors],
        totals={
            "tensors": len(r.tensors), "quantized_tensors": sum(t.quantized for t in r.tensors),
            "input_bytes": r.input_bytes, "archive_bytes": r.archive_bytes, "ratio": r.ratio,
            "quantized_elements": r.quantized_elements, "quantized_stored_bytes": r.quantized_stored_bytes,
            "bits_per_weight": r.bits_per_weight, "overall_sqnr_db": _num(r.overall_sqnr_db),
            "overall_mse": r.quantized.mse, "max_abs_err": r.quantized.max_abs,
            "seconds": r.seconds, "mb_per_s": r.input_bytes / 1e6 / r.seconds if r.seconds else None,
            **({"overall_output_sqnr_db": _num(r.quantized.output_sqnr_db)}
               if r.quantized.output_sqnr_db is not None else {}),
        },
        **({"importance": importance_json(r.importance)} if r.importance is not None else {}),
        **({"restores_file": r.restores_file} if r.restores_file is not None else {}),
    )


def importance_json(u: ImportanceUse) -> dict[str, Any]:
    return {"path": u.path, "sha256": u.sha256, "tokens": u.tokens, "weighted": u.weighted, "without": u.without}


def print_importance(console: Console, u: ImportanceUse | None, stats: ErrorStats) -> None:
    """One line on what the statistics covered (a partial match is said, not hidden)."""
    if u is None:
        return
    covered = f"{len(u.weighted)} of {len(u.weighted) + len(u.without)} quantized 2-D tensors weighted"
    out = f", output SQNR {_db(stats.output_sqnr_db)} dB" if stats.output_sqnr_db is not None else ""
    missing = ""
    if u.without:
        names = ", ".join(u.without[:3]) + (f" and {len(u.without) - 3} more" if len(u.without) > 3 else "")
        missing = f"; no statistics for {names}"
    console.print(safe(f"importance {u.path} (sha256 {u.sha256[:12]}): {covered}{out}{missing}"))


_TENSOR_COLS = (Col("tensor", "left"), Col("shape", "left", 4), Col("dtype", "left", 3), Col("method", "left", wrap=22),
                Col("bytes", drop=5), Col("bits/w"), Col("SQNR dB"), Col("max abs err", drop=2), Col("MSE", drop=1))


_OUTPUT_COL = Col("out dB", drop=3)  # with --importance: the SQNR of the layer's output


def _tensor_table(console: Console, tensors: list[TensorReport], title: str) -> Table:
    rows, dim = [], []
    weighted = any(t.output_sqnr_db is not None for t in tensors)
    for t in tensors:
        if t.quantized:
            rows.append([t.name, _shape(t.shape), t.dtype, t.label, _bytes(t.stored_bytes), f"{t.bits_per_weight:.3f}",
                         _db(t.sqnr_db), f"{t.max_abs_err:.3g}", f"{t.mse:.3g}"])
            dim.append(-1)
        else:
            rows.append([t.name, _shape(t.shape), t.dtype, t.note or "kept", _bytes(t.stored_bytes),
                         f"{t.bits_per_weight:.3f}", "exact", "0", "0"])
            dim.append(3)
        if weighted:
            rows[-1].insert(7, "" if t.output_sqnr_db is None else _db(t.output_sqnr_db))
    cols = _TENSOR_COLS[:7] + (_OUTPUT_COL,) + _TENSOR_COLS[7:] if weighted else _TENSOR_COLS
    return fit_table(title, cols, rows, _width(console), dim)


# Below about this many bytes of float32 weights per tensor an archive is no smaller than its input:
# the archive's fixed metadata and each tensor's manifest entry cost ~0.5-0.8 kB (a .npy of 256
# float32 values, 1152 B, gives 0.89-0.92x; of 64 values, 2.2-2.4x: docs/BENCHMARKS.md).
SMALL_TENSOR_BYTES = 1000


def print_quantize(console: Console, r: QuantizeReport) -> None:
    console.print(_tensor_table(console, r.tensors, r.output))
    q = sum(t.quantized for t in r.tensors)
    if q:
        console.print(
            f"\n{q} of {len(r.tensors)} tensors quantized: {r.bits_per_weight:.3f} bits per weight "
            f"(codes, scales, zero points and codebooks counted), overall SQNR {_db(r.overall_sqnr_db)} dB, "
            f"max abs error {r.quantized.max_abs:.3g}")
    else:
        console.print(f"\nno tensor quantized: all {len(r.tensors)} kept as they are (see the notes above)")
    print_importance(console, r.importance, r.quantized)
    rate = f", {r.input_bytes / 1e6 / r.seconds:.0f} MB/s" if r.seconds else ""
    console.print(f"input {_bytes(r.input_bytes)} -> archive {_bytes(r.archive_bytes)} (headers and kept tensors "
                  f"included): {100 * r.ratio:.2f}% of the input, {r.seconds:.2f} s{rate}")
    if r.restores_file:
        console.print(f"dequantize -o FILE.{r.restores_file['format']} gives the input file back byte for byte "
                      f"(header, key order and metadata included; its sha256 {r.restores_file['sha256'][:12]} is checked)")
    if r.ratio > 1:
        header = r.archive_bytes - r.quantized_stored_bytes - r.kept_stored_bytes
        console.print(f"note: the archive is {r.ratio:.2f}x the size of the input: its header ({_bytes(header)}: "
                      f"names, checksums, the manifest) outweighs what quantizing saved; under about "
                      f"{SMALL_TENSOR_BYTES // 1000} kB of weights per tensor quantizing does not pay")


def dequantize_json(r: DequantizeReport) -> dict[str, Any]:
    return document("dequantize", archive=r.archive, output=r.output, output_bytes=r.output_bytes,
                    seconds=r.seconds, tensors=[{"name": n, "dtype": d, "shape": list(s)} for n, d, s in r.tensors],
                    **({"copied": r.copied} if r.copied is not None else {}),
                    **({"restored_sha256": r.restored} if r.restored is not None else {}))


def print_dequantize(console: Console, r: DequantizeReport) -> None:
    console.print(f"{safe(r.output)}: {len(r.tensors)} tensors, {_bytes(r.output_bytes)}, {r.seconds:.2f} s")
    if r.restored:
        console.print(f"the original file, byte for byte (sha256 {r.restored[:12]} checked)")
    if r.copied is not None:
        console.print(f"copied beside them from the model folder: {safe(', '.join(r.copied) or 'nothing')}")


def stats_json(s: TensorStats) -> dict[str, Any]:
    return {"name": s.name, "dtype": s.dtype, "shape": list(s.shape), "elements": s.elements, "bytes": s.nbytes,
            "min": _num(s.min), "max": _num(s.max), "mean": _num(s.mean), "std": _num(s.std),
            "absmax": _num(s.absmax), "zeros": s.zeros, "nonfinite": s.nonfinite}


def _archive_totals(item: Inspection) -> dict[str, Any]:
    tensors = item.archive or []
    q = [t for t in tensors if t.quantized]
    n = sum(t.elements for t in q)
    original = sum(t.original_bytes for t in tensors)
    return {"tensors": len(tensors), "quantized_tensors": len(q), "original_bytes": original,
            "ratio": item.file_bytes / original if original else None,
            "bits_per_weight": sum(t.stored_bytes for t in q) * 8 / n if n else None}


def inspect_json(items: list[Inspection]) -> dict[str, Any]:
    files = []
    for item in items:
        doc: dict[str, Any] = {"path": item.path, "file_bytes": item.file_bytes}
        if item.archive is not None:
            doc.update(kind="archive", tensors=[tensor_json(t) for t in item.archive], totals=_archive_totals(item))
        else:
            doc.update(kind="weights", tensors=[stats_json(s) for s in item.tensors or []])
        files.append(doc)
    return document("inspect", files=files)


_STATS_COLS = (Col("tensor", "left"), Col("dtype", "left", 6), Col("shape", "left", 7), Col("elements", drop=1),
               Col("bytes", drop=5), Col("min", drop=3), Col("max", drop=3), Col("mean", drop=2), Col("std"),
               Col("absmax"), Col("zeros", drop=1))


def print_inspect(console: Console, items: list[Inspection]) -> None:
    for item in items:
        if item.archive is not None:
            console.print(_tensor_table(console, item.archive,
                                        f"{item.path} (quant archive, {_bytes(item.file_bytes)})"))
            totals = _archive_totals(item)
            if totals["bits_per_weight"] is not None:
                console.print(f"\n{totals['quantized_tensors']} of {totals['tensors']} tensors quantized, "
                              f"{totals['bits_per_weight']:.3f} bits per weight; {_bytes(totals['original_bytes'])} "
                              f"of tensors in {_bytes(item.file_bytes)}: {100 * totals['ratio']:.2f}%")
            continue
        rows = []
        for s in item.tensors or []:
            extra = f" ({s.nonfinite} NaN/Inf)" if s.nonfinite else ""
            rows.append([s.name, s.dtype, _shape(s.shape), f"{s.elements:,}", _bytes(s.nbytes), f"{s.min:.4g}",
                         f"{s.max:.4g}", f"{s.mean:.4g}", f"{s.std:.4g}", f"{s.absmax:.4g}", f"{s.zeros:,}{extra}"])
        console.print(fit_table(f"{item.path} ({_bytes(item.file_bytes)})", _STATS_COLS, rows, _width(console)))
        total = sum(s.elements for s in item.tensors or [])
        console.print(f"\n{len(item.tensors or [])} tensors, {total:,} elements")


def plan_json(p: PlanReport) -> dict[str, Any]:
    tensors = []
    for item, label, size in zip(p.items, p.labels, p.stored_bytes):
        ref = item.ref
        doc = {"name": ref.name, "dtype": ref.dtype, "shape": list(ref.shape), "elements": ref.size,
               "method": item.spec.method if item.spec is not None else KEEP, "label": label, "predicted_bytes": size,
               "bits_per_weight": size * 8 / ref.size if ref.size else 0.0}
        if item.note:
            doc["note"] = item.note
        tensors.append(doc)
    q = [(item, size) for item, size in zip(p.items, p.stored_bytes) if not item.keep]
    n = sum(item.ref.size for item, _ in q)
    return document("quantize", dry_run=True, inputs=p.inputs, tensors=tensors,
                    totals={"input_bytes": p.input_bytes, "predicted_archive_bytes": p.predicted_archive_bytes,
                            "stored_bytes": sum(p.stored_bytes), "header_bytes_estimate": p.header_bytes_estimate,
                            "bits_per_weight": sum(s for _, s in q) * 8 / n if n else None,
                            "ratio": p.predicted_archive_bytes / p.input_bytes if p.input_bytes else None})


_PLAN_COLS = (Col("tensor", "left"), Col("shape", "left", 2), Col("dtype", "left", 1), Col("method", "left", wrap=22),
              Col("bytes"), Col("bits/w"))


def print_plan(console: Console, p: PlanReport) -> None:
    rows, dim = [], []
    for item, label, size in zip(p.items, p.labels, p.stored_bytes):
        ref = item.ref
        rows.append([ref.name, _shape(ref.shape), ref.dtype, item.note if item.keep else label, _bytes(size),
                     f"{size * 8 / ref.size:.3f}" if ref.size else "-"])
        dim.append(3 if item.keep else -1)
    console.print(fit_table("plan (dry run: nothing written)", _PLAN_COLS, rows, _width(console), dim))
    doc = plan_json(p)["totals"]
    bpw = f"{doc['bits_per_weight']:.3f}" if doc["bits_per_weight"] is not None else "-"
    console.print(f"\npredicted archive {_bytes(p.predicted_archive_bytes)} ({_bytes(sum(p.stored_bytes))} of arrays, "
                  f"header at most {_bytes(p.header_bytes_estimate)}) from {_bytes(p.input_bytes)} of input; "
                  f"{bpw} bits per quantized weight")


SMALL_RESULT = 64  # values printed (or put in JSON) when the result is not written to a file


def pq_dot_json(r: PQDotReport) -> dict[str, Any]:
    doc = document("pq-dot", archive=r.archive, tensor=r.tensor, result_shape=list(r.result.shape),
                   backend=r.backend, output=r.output)
    if r.output is None and r.result.size <= SMALL_RESULT:
        doc["result"] = r.result.tolist()
    if r.reference is not None or r.relative_error is not None:
        doc.update(reference=r.reference, relative_error=r.relative_error, lut_ms=r.lut_ms, dense_ms=r.dense_ms,
                   speedup=r.speedup)
    return doc


def print_pq_dot(console: Console, r: PQDotReport) -> None:
    import numpy as np  # only here: printing a small result

    where = f" -> {safe(r.output)}" if r.output else ""
    console.print(f"{safe(r.tensor)}: result {_shape(r.result.shape)} via lookup tables ({r.backend} backend){where}")
    if r.output is None:
        if r.result.size <= SMALL_RESULT:
            console.print(np.array2string(r.result, precision=6, suppress_small=False), markup=False)
        else:
            console.print(f"(not printed: {r.result.size} values; write them with -o OUT.npy)")
    if r.relative_error is not None:
        console.print(f"relative error vs the reference: {r.relative_error:.4g}; LUT {r.lut_ms:.3f} ms, dense float32 "
                      f"matmul of the reconstruction {r.dense_ms:.3f} ms: {r.speedup:.2f}x")


def verify_json(reports: list[VerifyReport]) -> dict[str, Any]:
    """One entry per archive, in order; the document is ok when every archive is."""
    archives: list[dict[str, Any]] = []
    for r in reports:
        if r.error:
            archives.append({"path": r.path, "ok": False, "error": r.error, "corrupt": []})
            continue
        doc = {"path": r.path, "ok": r.ok, "tensors": r.tensors, "file_bytes": r.file_bytes,
               "stored_bytes": r.stored_bytes, "corrupt": r.corrupt}
        if not r.ok:
            doc["error"] = "stored bytes do not match their checksum"
        archives.append(doc)
    return document("verify", archives=archives) | {"ok": all(r.ok for r in reports)}


def verify_problems(reports: list[VerifyReport]) -> list[str]:
    """One stderr line per bad archive: the file and the first corrupt tensor (or why it was refused)."""
    lines = []
    for r in reports:
        if r.error:
            lines.append(f"quant: error: {one_line(r.error_line)}\n")
        elif not r.ok:
            more = f" (and {len(r.corrupt) - 1} more)" if len(r.corrupt) > 1 else ""
            lines.append(f"quant: error: {one_line(r.path)}: tensor {r.corrupt[0]!r}: corrupt: stored bytes "
                         f"do not match their checksum{more}\n")
    return lines


def print_verify(reports: list[VerifyReport]) -> None:
    """The good archives on stdout, one line each (plain text: a pipeline reads it)."""
    import sys

    for r in reports:
        if r.ok:
            sys.stdout.write(f"{printable(r.path)}: ok, {r.tensors} tensors, {r.file_bytes} bytes, checksums match\n")
