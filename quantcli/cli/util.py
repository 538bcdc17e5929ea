"""What every `quant` command shares beyond its options: clean --help, JSON documents (stdout,
--report files, failure documents) and the progress label. Light to import: `quant --version`
and `quant inspect small.npy` pay for none of numpy, the methods or the planner through here."""

from __future__ import annotations

import json
import os
import sys
from bisect import bisect_right
from contextlib import contextmanager
from itertools import accumulate
from typing import Any, Iterator, Sequence

import typer
from typer.core import TyperCommand

from ..errors import ConfigError, QuantError, WorkError
from ..spec import MAX_SEED, MAX_WHOLE

SCHEMA = 1  # the same as render.SCHEMA (a test keeps them equal); render is imported lazily


class StdoutClosed(BaseException):
    """Our stdout's reader went away. A BaseException, so that nothing on the way (typer turns
    EPIPE into exit 1, rich too) mistakes it for a failure."""


def stdout_closed() -> None:
    """Point fd 1 at /dev/null so that later writes and the interpreter's final flush of what is
    still buffered cannot fail again (it would print "Exception ignored ... BrokenPipeError")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


class StdoutError(WorkError):
    """A write to stdout failed, not for a closed pipe (a full disk, /dev/full): the message names
    where stdout goes, as every write error names its file."""

    def __init__(self, error: OSError):
        try:
            target = os.readlink("/proc/self/fd/1")
        except OSError:
            target = ""
        where = f"standard output ({target})" if target.startswith("/") else "standard output"
        super().__init__(f"cannot write: {error.strerror or error}", path=where)


class QuantCommand(TyperCommand):
    """Plain help: `quant inspect [OPTIONS] PATH...` and `PATH...  help` instead of typer's
    `{PATH...}...` usage and `<list[str]>` type labels on arguments."""

    def invoke(self, ctx: Any) -> Any:
        """Whole-number options are bounded like Spec's fields (docs/SECURITY.md 6c): 2^31 - 1, the
        seed 2^63 - 1. Checked here, for every command and option, before any work; refused like
        any bad option (one line, exit 2, the failure document with --json)."""
        for p in self.get_params(ctx):
            value = ctx.params.get(p.name) if p.name else None
            limit = MAX_SEED if p.name == "seed" else MAX_WHOLE
            if p.param_type_name == "option" and type(value) is int and value > limit:
                error = ConfigError(f"{max(p.opts, key=len)} must be at most {limit}, got {value}")
                if ctx.params.get("json_out"):
                    with failing():
                        print_json(failure_document(ctx.info_name or "quant", error))
                sys.stderr.write(stderr_line(*failure(error)))
                raise typer.Exit(error.exit_code)
        return super().invoke(ctx)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for p in self.get_params(ctx):
            if p.param_type_name == "argument":
                pieces.append(_argument_name(p))
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        args, opts = [], []
        for p in self.get_params(ctx):
            record = p.get_help_record(ctx)
            if record is None:
                continue
            if p.param_type_name == "argument":
                args.append((_argument_name(p), record[1]))
            else:
                opts.append(record)
        if args:
            with formatter.section("Arguments"):
                formatter.write_dl(args)
        if opts:
            with formatter.section("Options"):
                formatter.write_dl(opts)


def _argument_name(p: Any) -> str:
    name = (p.metavar or p.name or "").upper()
    return name if name.endswith("...") or p.nargs == 1 else name + "..."


def json_bytes(doc: dict[str, Any]) -> bytes:
    """One JSON document as valid UTF-8 whatever the names hold: a lone surrogate (an undecodable
    byte of a file name) is written as its JSON escape `\\udcxx`, which reads back as the same string."""
    return (json.dumps(doc, indent=2, allow_nan=False, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace")


def print_json(doc: dict[str, Any]) -> None:
    # through sys.stdout itself (text), so that the CLI's guard sees a reader that closed the pipe
    sys.stdout.write(json_bytes(doc).decode("utf-8"))
    sys.stdout.flush()


def write_report(path: str, doc: dict[str, Any]) -> None:
    """The JSON document into `path`, atomically: the file appears whole or not at all."""
    from ..io.output import atomic_output

    with atomic_output(path) as f:
        f.write(json_bytes(doc))


def check_report(path: str | None, inputs: list[str], outputs: Sequence[str] = ()) -> None:
    """Refuse, before any work, a report path that is an input, a folder, or one of the command's
    `outputs` (written first, then replaced by the report): a report never overwrites weights. An
    output ending in a separator is a folder output: the files it is made of count as outputs."""
    if path is None:
        return
    from ..io.output import FOLDER_OUTPUT_FILES, check_output, same_file

    check_output(path, [p for p in inputs if os.path.exists(p)])
    for output in outputs:
        folder = output.endswith(os.sep) or os.path.isdir(output)
        if (same_file(path, output) or folder and FOLDER_OUTPUT_FILES.fullmatch(os.path.basename(path))
                and same_file(os.path.dirname(os.path.abspath(path)), output)):
            raise ConfigError(f"--report names the output {output!r}; the report would replace it: name "
                              "another file", path=path)


def failure(error: BaseException) -> tuple[str, int]:
    """THE mapping of a failure to its message and exit status, shared by the one line on stderr
    (`stderr_line`) and the JSON failure document: usage and input errors 2, work failures 1,
    SIGINT 130, SIGTERM (a BaseException the signal handler raises) 143, bugs 1."""
    if isinstance(error, QuantError):
        return error.render(), error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return "interrupted; no output was written", 130
    if not isinstance(error, Exception):
        return "terminated; no output was written", 143
    if isinstance(error, MemoryError):
        return "out of memory", 1
    if isinstance(error, OSError):
        return f"{error.filename + ': ' if error.filename else ''}{error.strerror or error}", 1
    return f"internal error: {type(error).__name__}: {error}", 1


def stderr_line(message: str, code: int) -> str:
    """How `failure`'s message reads on stderr: `quant: error: ...` for errors, the bare message
    for interrupts, and a pointer to --debug for bugs."""
    from ..errors import one_line

    if code in (130, 143):
        return f"quant: {message}\n"
    if message.startswith("internal error: "):
        return f"quant: {one_line(message)} (run with --debug for the traceback)\n"
    return f"quant: error: {one_line(message)}\n"


def failure_document(command: str, error: BaseException) -> dict[str, Any]:
    """The JSON document a failing command prints with --json: the error and the exit status the
    process ends with (the same mapping as the one-line message on stderr)."""
    message, code = failure(error)
    return {"schema": SCHEMA, "command": command, "ok": False, "error": message, "exit_code": code}


@contextmanager
def failing() -> Iterator[None]:
    """Around what a failing run prints on stdout: a closed or unwritable stdout must not replace
    the failure (its exit status and its line on stderr) with a quiet exit 0 or another error."""
    try:
        yield
    except (StdoutClosed, BrokenPipeError, StdoutError, OSError):
        stdout_closed()  # nothing more can reach it; the interpreter's last flush must not fail either


class Reporter:
    """Where a command's JSON document goes: stdout with --json, a file with --report (written
    after success only), and on failure with --json a failure document on stdout."""

    def __init__(self, command: str, json_out: bool, report: str | None):
        self.command, self.json_out, self.report = command, json_out, report

    def __enter__(self) -> "Reporter":
        return self

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> None:
        if (error is None or not self.json_out or not isinstance(error, Exception)
                or isinstance(error, (BrokenPipeError, typer.Exit, typer.Abort, typer.TyperException))):
            return  # a closed stdout or an interrupt has no reader for a document
        with failing():
            print_json(failure_document(self.command, error))

    def emit(self, doc: dict[str, Any]) -> None:
        if self.report is not None:
            write_report(self.report, doc)
        if self.json_out:
            print_json(doc)


class ProgressLabels:
    """The progress bar's numbers from a list of (name, bytes) known before the work starts. The
    library reports after each tensor; the label shows the NEXT tensor (the one being worked on)
    and the total is known from the start."""

    def __init__(self, items: list[tuple[str, int]]):
        self.names = [n for n, _ in items]
        self.ends = list(accumulate(b for _, b in items))
        self.total = self.ends[-1] if self.ends else 0
        self.cursor = 0  # index of the tensor in progress

    def label(self) -> str:
        return self.names[self.cursor] if self.cursor < len(self.names) else "finishing"

    def done(self, name: str, done_bytes: int) -> tuple[int, str]:
        """`name` finished: (bytes completed, label of the tensor now in progress)."""
        try:
            i = self.names.index(name, self.cursor)
        except ValueError:  # not in the list (another order): fall back to the byte count
            i = bisect_right(self.ends, done_bytes) - 1
        self.cursor = max(self.cursor, i + 1)
        return (self.ends[self.cursor - 1] if self.cursor else 0), self.label()


def source_items(paths: list[str]) -> list[tuple[str, int]]:
    """(tensor, bytes) of weight files in the order the library works through them (headers only)."""
    from ..archive.container import is_archive
    from ..io.sources import Sources

    items: list[tuple[str, int]] = []
    for path in paths:
        if os.path.isfile(path) and path.endswith(".safetensors") and is_archive(path):
            continue  # inspect reads an archive's manifest: nothing to show progress for
        with Sources([path]) as sources:
            items += [(r.name, r.nbytes) for r in sources.refs]
    return items


def archive_items(path: str) -> list[tuple[str, int]]:
    from ..archive.container import open_archive

    with open_archive(path) as archive:
        return [(t.name, t.original_nbytes) for t in archive.tensors]


def _renderers(report: Any) -> tuple[Any, Any]:
    """(to JSON, to a table) for whatever `api.quantize` returned, by its class: this module does
    not import the report classes at run time (they would pull numpy into `quant --help`)."""
    from . import plan_render, render

    return {"QuantizeReport": (render.quantize_json, render.print_quantize),
            "PlanReport": (render.plan_json, render.print_plan),
            "PlannedQuantizeReport": (plan_render.planned_json, plan_render.print_planned),
            "Plan": (plan_render.plan_json, plan_render.print_plan)}[type(report).__name__]


def report_json(report: Any) -> dict[str, Any]:
    """The JSON document of a quantize run, planned run, or either's dry run."""
    return _renderers(report)[0](report)


def print_report(console: Any, report: Any) -> None:
    """The table of a quantize run, planned run, or either's dry run."""
    _renderers(report)[1](console, report)
