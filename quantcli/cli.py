"""The `quant` command: options -> Spec -> one library call -> rendered report.

stdout carries results (a table, or one JSON document with --json); progress, warnings and errors
go to stderr. Exit status: 0 success, 1 failure while working (disk full, interrupted), 2 bad
usage or bad input. Errors are one line unless --debug.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from . import __version__, api, plan_render, planner, render
from .errors import ConfigError, QuantError, one_line
from .methods import METHODS
from .methods.base import ALWAYS_READ
from .signals import Interrupted, install, on_signal
from .spec import Granularity, Normalize, OutputDtype, Scheme, Spec, StorageDtype

app = typer.Typer(
    name="quant", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help and one-line usage errors, friendly to pipes and logs
    help="Compress neural-network weight files (.npy, .npz, .safetensors) and report the error honestly.",
    context_settings={"help_option_names": ["-h", "--help"]},
)

Method = Enum("Method", {name: name for name in sorted(m for m in METHODS if m != "keep")}, type=str)  # type: ignore[misc]


class _Stdout(Console):
    """A reader that closed our stdout (`quant inspect m | head -1`) is a normal end: the
    BrokenPipeError reaches `main`, which ends quietly (rich's own handler would exit 1)."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError()


def _columns() -> int:
    """Table width off a terminal: $COLUMNS when it is a sensible number, else 200."""
    try:
        wide = int(os.environ.get("COLUMNS", "200"))
    except ValueError:
        return 200
    return min(max(wide, 40), 10_000)


def _stdout() -> Console:
    return _Stdout(width=None if sys.stdout.isatty() else _columns(), highlight=False)


def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


def _on_sigterm(signum: int, frame: Any) -> None:
    on_signal(signum, frame)


@contextmanager
def _errors(debug: bool) -> Iterator[None]:
    """Map library errors to one line on stderr and the documented exit status. SIGINT/SIGTERM
    raise (deferred while a temp file is being created or an output switched: `signals.held`)."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if _main_thread() else None
    install()

    def say(line: str) -> None:
        sys.stderr.write(f"quant: {one_line(line)}\n")

    try:
        yield
    except QuantError as e:
        if debug:
            raise
        say(f"error: {e}")
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        say("interrupted; no output was written")
        raise typer.Exit(130) from None
    except Interrupted:
        say("terminated; no output was written")
        raise typer.Exit(143) from None
    except MemoryError:
        say("error: out of memory")
        raise typer.Exit(1) from None
    except BrokenPipeError:
        raise  # our stdout was closed by its reader: `main` ends quietly
    except OSError as e:
        if debug:
            raise
        say(f"error: {e.filename + ': ' if e.filename else ''}{e.strerror or e}")
        raise typer.Exit(1) from None
    except (typer.Exit, typer.Abort, typer.TyperException):
        raise
    except Exception as e:  # a bug: one line and exit 1; the traceback with --debug
        if debug:
            raise
        say(f"internal error: {type(e).__name__}: {e} (run with --debug for the traceback)")
        raise typer.Exit(1) from None
    finally:
        for sig, handler in (previous or {}).items():
            if handler is not None:
                signal.signal(sig, handler)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[int, int, str], None] | None]:
    """A byte-based progress bar with ETA on stderr, only on a terminal and only when asked."""
    console = _stderr()
    if not enabled or not console.is_terminal:
        yield None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("", total=None)

        def update(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=name[-40:])

        yield update


def _print_json(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, allow_nan=False) + "\n")


def _version(value: bool) -> None:
    if value:
        print(f"quant {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """Compress neural-network weight files and report the error honestly."""


Paths = Annotated[list[str], typer.Argument(help="Weight files (.npy, .npz, .safetensors), folders, "
                                                 "model.safetensors.index.json, or quoted globs.",
                                            show_default=False, metavar="PATH...")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of a table.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No table and no progress bar.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")]


@app.command()
def inspect(paths: Paths, json_out: JsonOpt = False, quiet: QuietOpt = False, debug: DebugOpt = False) -> None:
    """Describe weight files (per tensor: dtype, shape, bytes, min/max/mean/std/absmax, zeros) or
    archives (per tensor: method, bits per weight, stored bytes, error recorded at write time).

    Example: quant inspect model.safetensors model.qnt.safetensors
    """
    with _errors(debug), _progress(not quiet and not json_out) as progress:
        items = api.inspect_paths(paths, progress)
    if json_out:
        _print_json(render.inspect_json(items))
    elif not quiet:
        render.print_inspect(_stdout(), items)


def _refuse_ignored_options(ctx: typer.Context, spec: Spec, planned: bool, recipe: bool) -> None:
    """An option typed on the command line that would change nothing is an error, not a no-op;
    each method says what it reads (`Method.reads`)."""
    given = {name for name in ctx.params
             if (source := ctx.get_parameter_source(name)) is not None and source.name == "COMMANDLINE"}
    per_tensor = {o for m in METHODS.values() for o in m.options} | {"method"}
    if planned and not recipe:
        ignored = sorted(given & per_tensor - ALWAYS_READ)
        if ignored:
            raise ConfigError(f"--{ignored[0].replace('_', '-')} has no effect with a budget: the planner chooses "
                              "each tensor's setting (use --recipe to pin some tensors)")
        return
    METHODS[spec.method].refuse_unread(spec, given & per_tensor)


@app.command()
def quantize(
    ctx: typer.Context,
    paths: Paths,
    output: Annotated[str, typer.Option("--output", "-o", help="The archive to write (.qnt.safetensors).",
                                        show_default=False)] = "",
    method: Annotated[Method, typer.Option(help="Quantization method.")] = "uniform",  # type: ignore[assignment]
    bits: Annotated[int, typer.Option(help="Bits per code (uniform, nf, log: 2-8; kmeans 1-8; vq 1-16).")] = 8,
    scheme: Annotated[Scheme, typer.Option(help="symmetric (zero maps to zero) or asymmetric (zero point).")]
    = Scheme.symmetric,
    granularity: Annotated[Granularity, typer.Option(help="One scale per tensor, per output channel (row), "
                                                          "or per group along the row.")] = Granularity.channel,
    group_size: Annotated[int, typer.Option(help="Values of a row per group with --granularity group (and "
                                                 "kmeans --normalize group).")] = 128,
    codebook_rows: Annotated[int, typer.Option(help="kmeans --granularity group: rows sharing one codebook.")]
    = 128,
    scale_dtype: Annotated[StorageDtype, typer.Option(help="How scales are stored; auto = float16 for group "
                                                         "scales, float32 otherwise.")] = StorageDtype.auto,
    seed: Annotated[int, typer.Option(help="Random seed for methods that sample (kmeans, vq).")] = 0,
    scale_search: Annotated[bool, typer.Option("--scale-search", help="Choose each block's scale by a search over "
                                                                      "clipping ratios (uniform, nf, log): +0.3-0.7 "
                                                                      "dB, 5-12x slower.")] = False,
    normalize: Annotated[Normalize, typer.Option(help="kmeans: 'group' learns one codebook over values "
                                                      "normalised by per-group absmax scales (recommended).")]
    = Normalize.none,
    vector_dim: Annotated[int, typer.Option(help="vq: values per vector (rows are cut into pieces of this "
                                                 "length).")] = 4,
    iters: Annotated[int, typer.Option(help="vq: Lloyd iterations.")] = 25,
    only: Annotated[Optional[str], typer.Option(help="Quantize only tensors whose name matches this regex.")]
    = None,
    skip: Annotated[Optional[str], typer.Option(help="Keep tensors whose name matches this regex as they are.")]
    = None,
    include_1d: Annotated[bool, typer.Option("--include-1d", help="Quantize 1-D float tensors (biases, "
                                                                  "norms) too.")] = False,
    keep_nonfinite: Annotated[bool, typer.Option("--keep-nonfinite", help="Keep tensors holding NaN/Inf as "
                                                                          "they are instead of failing.")] = False,
    recipe: Annotated[Optional[str], typer.Option(help="TOML file mapping name patterns to settings "
                                                       "(first match wins; see README).")] = None,
    jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", help="Tensors encoded at once; default: the "
                                                                     "machine's cores. Output bytes do not "
                                                                     "depend on it.", show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the per-tensor plan and predicted archive "
                                                            "size; read headers only, write nothing.")] = False,
    target_bpw: Annotated[Optional[float], typer.Option("--target-bpw", help="Plan per-tensor settings for the best "
                                                        "weighted SQNR at <= this many archive bits per quantized "
                                                        "weight.", show_default=False)] = None,
    max_size: Annotated[Optional[str], typer.Option("--max-size", help="Plan for the best weighted SQNR with the "
                                                    "whole archive <= this size (e.g. 30MB).",
                                                    show_default=False)] = None,
    min_sqnr: Annotated[Optional[float], typer.Option("--min-sqnr", help="Plan the smallest archive with every "
                                                      "planned tensor >= this SQNR (dB).", show_default=False)] = None,
    sample: Annotated[int, typer.Option("--sample", help="Planner: values per tensor measured for each candidate "
                                                         "(whole rows; 0 = whole tensors).")] = planner.SAMPLE,
    candidates: Annotated[str, typer.Option("--candidates", help="Planner: 'default' or 'fast' (no kmeans, "
                                                                 "~4x quicker).")] = "default",
    json_out: JsonOpt = False, quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Quantize weights into one archive file and report bits per weight, SQNR and max error.

    With no options: 8-bit symmetric uniform, one float32 scale per output channel, the safe
    default. Float tensors of 2+ dimensions (and any .npy you name) are quantized; 1-D and
    integer tensors are kept as they are.

    Example: quant quantize model.safetensors -o model.qnt.safetensors --bits 4 --scheme asymmetric
    --granularity group --group-size 64
    """
    with _errors(debug):
        if not output and not dry_run:
            raise ConfigError("quantize needs --output/-o (or --dry-run)")
        budget = planner.budget_from_options(target_bpw, max_size, min_sqnr)
        spec = Spec(method=getattr(method, "value", method), bits=bits, scheme=scheme.value,
                    granularity=granularity.value, group_size=group_size, scale_dtype=scale_dtype.value,
                    seed=seed, scale_search=scale_search, normalize=normalize.value, vector_dim=vector_dim,
                    iters=iters, codebook_rows=codebook_rows)
        _refuse_ignored_options(ctx, spec, budget is not None, recipe is not None)
        if budget is not None:  # the planner chooses each tensor's setting (recipe rules still pin)
            kw = dict(only=only, skip=skip, include_1d=include_1d, keep_nonfinite=keep_nonfinite, recipe=recipe,
                      candidates=planner.default_candidates(candidates), sample=sample, jobs=jobs)
            if dry_run:
                planned_plan = planner.plan_budget(paths, budget, spec, **kw)  # type: ignore[arg-type]
            else:
                with _progress(not quiet and not json_out) as progress:
                    planned = planner.quantize_budget(paths, output, budget, spec, progress=progress,
                                                      **kw)  # type: ignore[arg-type]
        elif dry_run:
            plan = api.plan_file(paths, spec, only=only, skip=skip, include_1d=include_1d, recipe=recipe)
        else:
            with _progress(not quiet and not json_out) as progress:
                report = api.quantize_file(paths, output, spec, only=only, skip=skip, include_1d=include_1d,
                                           keep_nonfinite=keep_nonfinite, recipe=recipe, jobs=jobs,
                                           progress=progress)
    if budget is not None:
        if dry_run and json_out:
            _print_json(plan_render.plan_json(planned_plan))
        elif dry_run and not quiet:
            plan_render.print_plan(_stdout(), planned_plan)
        elif json_out:
            _print_json(plan_render.planned_json(planned))
        elif not quiet:
            plan_render.print_planned(_stdout(), planned)
        return
    if dry_run:
        if json_out:
            _print_json(render.plan_json(plan))
        elif not quiet:
            render.print_plan(_stdout(), plan)
        return
    if json_out:
        _print_json(render.quantize_json(report))
    elif not quiet:
        render.print_quantize(_stdout(), report)


@app.command()
def dequantize(
    archive: Annotated[str, typer.Argument(help="An archive written by quant quantize.", show_default=False)],
    output: Annotated[str, typer.Option("--output", "-o", help="Where to write: .safetensors, .npz or .npy.",
                                        show_default=False)],
    dtype: Annotated[OutputDtype, typer.Option(help="Output dtype of quantized tensors; original = as they "
                                                 "were before quantization.")] = OutputDtype.original,
    shard_size: Annotated[Optional[str], typer.Option(help="Write a folder of safetensors shards of at most "
                                                           "this size (e.g. 2GB) plus model.safetensors.index.json.",
                                                      show_default=False)] = None,
    json_out: JsonOpt = False, quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Reconstruct the weights of an archive: same names, shapes and (by default) dtypes as the input.
    A folder output (or --shard-size) gives Hugging Face style shards with an index.

    Example: quant dequantize model.qnt.safetensors -o restored.safetensors
    """
    with _errors(debug), _progress(not quiet and not json_out) as progress:
        report = api.dequantize_file(archive, output, dtype.value, progress, shard_size)
    if json_out:
        _print_json(render.dequantize_json(report))
    elif not quiet:
        render.print_dequantize(_stdout(), report)


@app.command()
def verify(
    archives: Annotated[list[str], typer.Argument(help="Archives written by quant quantize.", show_default=False,
                                                  metavar="ARCHIVE...")],
    json_out: JsonOpt = False, quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Check archives end to end without decoding: structure, the manifest checksum, and every
    tensor's SHA-256. Exit 0 when all match, 2 (one line per bad archive on stderr) otherwise.

    Example: quant verify model.qnt.safetensors && cp model.qnt.safetensors /deploy/
    """
    results: list[dict[str, Any]] = []
    failed = False
    with _errors(debug):
        for path in archives:
            try:
                r = api.verify_archive(path)
            except QuantError as e:
                if debug or e.exit_code != 2:
                    raise
                sys.stderr.write(f"quant: error: {e}\n")
                results.append({"path": path, "ok": False, "error": e.message, "corrupt": []})
                failed = True
                continue
            doc = {"path": path, "ok": r.ok, "tensors": r.tensors, "file_bytes": r.file_bytes,
                   "stored_bytes": r.stored_bytes, "corrupt": r.corrupt}
            if not r.ok:
                more = f" (and {len(r.corrupt) - 1} more)" if len(r.corrupt) > 1 else ""
                sys.stderr.write(f"quant: error: {path}: tensor {r.corrupt[0]!r}: corrupt: stored bytes do not "
                                 f"match their checksum{more}\n")
                doc["error"] = "stored bytes do not match their checksum"
                failed = True
            elif not json_out and not quiet:
                sys.stdout.write(f"{path}: ok, {r.tensors} tensors, {r.file_bytes} bytes, checksums match\n")
            results.append(doc)
    if json_out:
        _print_json({"command": "verify", "ok": not failed, "archives": results})
    if failed:
        raise typer.Exit(2)


@app.command("pq-encode")
def pq_encode(
    paths: Paths,
    output: Annotated[str, typer.Option("--output", "-o", help="The archive to write (.pq.safetensors).",
                                        show_default=False)],
    subvector_dim: Annotated[Optional[int], typer.Option(help="Values per sub-vector (default 4); M = "
                                                              "ceil(columns / this).", show_default=False)] = None,
    subspaces: Annotated[Optional[int], typer.Option(help="Number of sub-vectors M per row (instead of "
                                                          "--subvector-dim).", show_default=False)] = None,
    centroids: Annotated[int, typer.Option(help="Centroids K per subspace (2-65536); codes take ceil(log2 K) "
                                                "bits.")] = 256,
    iters: Annotated[int, typer.Option(help="At most this many Lloyd iterations.")] = 25,
    seed: Annotated[int, typer.Option(help="Random seed (k-means++ and the training sample).")] = 0,
    codebook_dtype: Annotated[StorageDtype, typer.Option(help="How codebooks are stored; auto = float32.")]
    = StorageDtype.auto,
    only: Annotated[Optional[str], typer.Option(help="Encode only tensors whose name matches this regex.")] = None,
    skip: Annotated[Optional[str], typer.Option(help="Keep tensors whose name matches this regex as they are.")]
    = None,
    jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", help="Tensors encoded at once; default: the "
                                                                     "machine's cores.", show_default=False)] = None,
    keep_nonfinite: Annotated[bool, typer.Option("--keep-nonfinite", help="Keep tensors holding NaN/Inf as "
                                                                          "they are instead of failing.")] = False,
    json_out: JsonOpt = False, quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Product-quantize weight rows: each row cut into M sub-vectors, one k-means codebook of K
    centroids per subspace. The archive works with inspect, dequantize, verify and pq-dot.

    Example: quant pq-encode model.safetensors -o m.pq.safetensors --subvector-dim 4 --centroids 256 --seed 0
    """
    with _errors(debug):
        spec = Spec(method="pq", subvector_dim=subvector_dim, subspaces=subspaces, centroids=centroids, iters=iters,
                    seed=seed, scale_dtype=codebook_dtype.value)
        with _progress(not quiet and not json_out) as progress:
            report = api.quantize_file(paths, output, spec, only=only, skip=skip, jobs=jobs,
                                       keep_nonfinite=keep_nonfinite, progress=progress)
    if json_out:
        _print_json(render.quantize_json(report))
    elif not quiet:
        render.print_quantize(_stdout(), report)


@app.command("pq-dot")
def pq_dot(
    archive: Annotated[str, typer.Argument(help="An archive written by quant pq-encode.", show_default=False)],
    query: Annotated[str, typer.Option("--query", help="Queries: a .npy (or .npz/.safetensors with one array) "
                                                       "of shape [d] or [b, d].", show_default=False)],
    tensor: Annotated[Optional[str], typer.Option(help="The PQ tensor (needed when the archive has several).",
                                                  show_default=False)] = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Write the [b, n] result to this .npy.",
                                                  show_default=False)] = None,
    reference: Annotated[Optional[str], typer.Option(help="The original weights: report the relative error "
                                                          "and time the LUT path against a dense matmul.",
                                                     show_default=False)] = None,
    repeat: Annotated[int, typer.Option(help="Timed runs per path with --reference (median).")] = 7,
    json_out: JsonOpt = False, quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Dot products of float queries with PQ-encoded weight rows through lookup tables
    (LUT[b, m, k] = <q_m, codebook_m[k]>, then a gather-and-sum over m), without reconstructing W.

    Example: quant pq-dot m.pq.safetensors --tensor encoder.layer.0.attention.self.query.weight
    --query q.npy --reference model.safetensors --json
    """
    with _errors(debug):
        report = api.pq_dot(archive, query, tensor, output=output, reference=reference, repeat=repeat)
    if json_out:
        _print_json(render.pq_dot_json(report))
    elif not quiet:
        render.print_pq_dot(_stdout(), report)


@app.command()
def curve(
    paths: Paths,
    plot: Annotated[Optional[str], typer.Option("--plot", help="Also draw the curves into this PNG (needs "
                                                               "matplotlib: pip install 'quantcli[plot]').",
                                                show_default=False)] = None,
    only: Annotated[Optional[str], typer.Option(help="Measure only tensors whose name matches this regex.")] = None,
    skip: Annotated[Optional[str], typer.Option(help="Leave out tensors whose name matches this regex.")] = None,
    include_1d: Annotated[bool, typer.Option("--include-1d", help="Measure 1-D float tensors too.")] = False,
    sample: Annotated[int, typer.Option("--sample", help="Values per tensor measured for each setting (whole "
                                                         "rows; 0 = whole tensors).")] = planner.SAMPLE,
    candidates: Annotated[str, typer.Option("--candidates", help="'default' or 'fast' (no kmeans).")] = "default",
    jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", help="Tensors measured at once; default: the "
                                                                     "machine's cores.", show_default=False)] = None,
    json_out: JsonOpt = False, quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Print the rate-distortion points of every candidate setting on the model: bits per weight vs
    overall SQNR and weighted SQNR (what the planner chooses from).

    Example: quant curve model.safetensors --json --plot rd.png
    """
    with _errors(debug):
        if plot is not None:
            try:
                import matplotlib  # noqa: F401  (checked before the measuring, not after)
            except ImportError:
                raise ConfigError("--plot needs matplotlib: pip install 'quantcli[plot]'") from None
        result = planner.rate_distortion_curve(paths, only=only, skip=skip, include_1d=include_1d, sample=sample,
                                               candidates=planner.default_candidates(candidates), jobs=jobs)
        if plot is not None:
            planner.plot_curve(result, plot)
    if json_out:
        _print_json(plan_render.curve_json(result))
    elif not quiet:
        plan_render.print_curve(_stdout(), result)


def _debugging(argv: list[str]) -> bool:
    return "--debug" in argv


class _StdoutClosed(BaseException):
    """Our stdout's reader went away. A BaseException, so that nothing on the way (typer turns
    EPIPE into exit 1, rich too) mistakes it for a failure."""


class _GuardedStdout:
    """sys.stdout during `main`: a broken pipe on write or flush becomes `_StdoutClosed`."""

    def __init__(self, stream: Any):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise _StdoutClosed() from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise _StdoutClosed() from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _stdout_closed() -> None:
    """Point fd 1 at /dev/null so the interpreter's final flush of what is still buffered cannot
    fail again (it would print "Exception ignored ... BrokenPipeError")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def main() -> None:
    """Console-script entry point. Usage errors become one line (click prints four); an
    unexpected exception becomes one line and exit 1 (its traceback with --debug). Only typer's
    public exceptions are used: TyperException is the base of every usage error it raises.
    A reader closing our stdout is a normal end: exit 0, nothing on stderr."""
    install()
    argv = sys.argv[1:]
    stdout = sys.stdout
    sys.stdout = _GuardedStdout(stdout)  # type: ignore[assignment]
    try:
        code = app(args=argv, prog_name="quant", standalone_mode=False)  # returns typer.Exit's code
        sys.stdout.flush()  # inside the try: a closed pipe is seen here, not at interpreter exit
    except typer.Exit as e:
        raise SystemExit(e.exit_code) from None
    except typer.Abort:
        sys.stderr.write("quant: interrupted\n")
        raise SystemExit(130) from None
    except typer.TyperException as e:
        message = e.format_message().replace("Value error, ", "")  # type: ignore[attr-defined]
        status = getattr(e, "exit_code", 2)
        if message.startswith("Usage:"):  # `quant` alone: the help, as click shows it
            sys.stderr.write(message + "\n")
            raise SystemExit(2) from None
        ctx = getattr(e, "ctx", None)
        command = ctx.command_path if ctx is not None else "quant"
        sys.stderr.write(f"quant: error: {one_line(message)} (see '{command} --help')\n")
        raise SystemExit(status) from None
    except (_StdoutClosed, BrokenPipeError):
        _stdout_closed()
        raise SystemExit(0) from None
    except KeyboardInterrupt:
        sys.stderr.write("quant: interrupted; no output was written\n")
        raise SystemExit(130) from None
    except Interrupted:
        sys.stderr.write("quant: terminated; no output was written\n")
        raise SystemExit(143) from None
    except Exception as e:  # a bug: one line, not a traceback, unless asked
        if _debugging(argv):
            raise
        sys.stderr.write(f"quant: internal error: {type(e).__name__}: {one_line(str(e))} "
                         "(run with --debug for the traceback)\n")
        raise SystemExit(1) from None
    finally:
        sys.stdout = stdout
    if isinstance(code, int) and code:
        raise SystemExit(code)
