"""The `quant` command: options -> Spec -> one library call -> rendered report.

stdout carries results (a table, or one JSON document with --json); progress, warnings and errors
go to stderr. Exit status: 0 success, 1 failure while working (disk full, interrupted), 2 bad
usage or bad input. Errors are one line unless --debug.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager, nullcontext
from enum import Enum
from typing import Annotated, Any, Callable, Iterator, Optional

import typer
from rich.console import Console

from .. import __version__, methods, presets
from .util import (
    ProgressLabels, QuantCommand, Reporter, archive_items, check_report, failing, failure, print_json, print_report,
    report_json, source_items, stderr_line)
from ..io.signals import Interrupted, install
from ..spec import Codec as CodecChoice, Granularity, Normalize, OutputDtype, Scheme, Spec, StorageDtype

app = typer.Typer(
    name="quant", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help and one-line usage errors, friendly to pipes and logs
    help="Compress neural-network weight files (.npy, .npz, .safetensors) and report the error honestly.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


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


@contextmanager
def _errors(debug: bool) -> Iterator[None]:
    """Map library errors to one line on stderr and the documented exit status (`cliutil.failure`).
    SIGINT/SIGTERM raise (deferred while a temp file is being created or an output switched:
    `signals.held`); a closed stdout and typer's own exits pass through to `entry.main`."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if _main_thread() else None
    install()
    try:
        yield
    except (BrokenPipeError, typer.Exit, typer.Abort, typer.TyperException):
        raise
    except (Exception, KeyboardInterrupt, Interrupted) as e:  # not entry's BaseException for a closed stdout
        if debug and isinstance(e, Exception) and not isinstance(e, MemoryError):
            raise
        message, code = failure(e)
        sys.stderr.write(stderr_line(message, code))
        raise typer.Exit(code) from None
    finally:
        for sig, handler in (previous or {}).items():
            if handler is not None:
                signal.signal(sig, handler)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def _progress(enabled: bool, items: Callable[[], list[tuple[str, int]]]
              ) -> Iterator[Callable[[int, int, str], None] | None]:
    """A byte-based progress bar with ETA on stderr, only on a terminal and only when asked.
    `items` lists (tensor, bytes) in work order (read from headers only when the bar is shown):
    the label names the tensor in progress and the total is right from the start."""
    console = _stderr()
    if not enabled or not console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from .render import shorten

    labels = ProgressLabels(items())
    width = max(console.width // 3, 16)

    def describe(name: str) -> str:
        return shorten(name, width)

    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(),
                  TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task(describe(labels.label()), total=labels.total or None)

        def update(done: int, total: int, name: str) -> None:
            completed, label = labels.done(name, done)
            bar.update(task, completed=completed, total=labels.total or total, description=describe(label))

        yield update


@contextmanager
def _phase_progress(enabled: bool) -> Iterator[Callable[[Any], None] | None]:
    """The planner's phases with counts and ETA on stderr, only on a terminal and only when asked."""
    from .plan_render import phase_bar
    with phase_bar(_stderr() if enabled else None) as update:
        yield update


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
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of a table (on failure: "
                                                      "a document with the error).")]
ReportOpt = Annotated[Optional[str], typer.Option("--report", metavar="FILE", show_default=False,
                                                  help="Also write the JSON document to FILE, atomically and only "
                                                       "when the command succeeds.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No table and no progress bar.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")]


@app.command(cls=QuantCommand)
def inspect(paths: Paths,
            report: Annotated[Optional[str], typer.Option("--output", "-o", "--report", metavar="FILE",
                                                          show_default=False,
                                                          help="Write the JSON document to FILE, atomically and "
                                                               "only when the command succeeds.")] = None,
            json_out: JsonOpt = False, quiet: QuietOpt = False, debug: DebugOpt = False) -> None:
    """Describe weight files (per tensor: dtype, shape, bytes, min/max/mean/std/absmax, zeros) or
    archives (per tensor: method, bits per weight, stored bytes, error recorded at write time).

    Example: quant inspect model.safetensors model.qnt.safetensors -o report.json
    """
    with _errors(debug), Reporter("inspect", json_out, report) as out:
        from ..archive import inspection
        from . import render

        check_report(report, paths)
        with _progress(not quiet and not json_out, lambda: source_items(paths)) as progress:
            items = inspection.inspect_paths(paths, progress)
        out.emit(render.inspect_json(items))
        if not json_out and not quiet:
            render.print_inspect(_stdout(), items)


# The registry's names (reading them imports no method module, so start-up stays cheap).
Method = Enum("Method", {name: name for name in sorted(methods.CHOICES)}, type=str)  # type: ignore[misc]


class Objective(str, Enum):
    """What the planner minimises (planner.OBJECTIVES)."""

    auto = "auto"
    relative = "relative"
    mse = "mse"
    sensitivity = "sensitivity"
    relative_emb = "relative-emb"


class Candidates(str, Enum):
    """The planner's candidate sets (planner.default_candidates)."""

    default = "default"
    fast = "fast"
    all = "all"


SAMPLE = 1 << 16  # planner.SAMPLE, spelled here so that `--help` imports no planner


def _typed(ctx: typer.Context) -> set[str]:
    """The parameters typed on the command line (not defaults)."""
    return {name for name in ctx.params
            if (source := ctx.get_parameter_source(name)) is not None and source.name == "COMMANDLINE"}


@app.command(cls=QuantCommand)
def quantize(
    ctx: typer.Context,
    paths: Paths,
    output: Annotated[str, typer.Option("--output", "-o", metavar="FILE", help="The archive to write "
                                        "(.qnt.safetensors).", show_default=False)] = "",
    method: Annotated[Method, typer.Option(help="Quantization method.")] = methods.DEFAULT,  # type: ignore[assignment]
    bits: Annotated[int, typer.Option(metavar="N", help="Bits per code (uniform, nf, log: 2-8; kmeans 1-8; "
                                                        "vq 1-16).")] = 8,
    scheme: Annotated[Scheme, typer.Option(help="symmetric (zero maps to zero) or asymmetric (zero point).")]
    = Scheme.symmetric,
    granularity: Annotated[Granularity, typer.Option(help="One scale per tensor, per output channel (row), "
                                                          "or per group along the row.")] = Granularity.channel,
    group_size: Annotated[int, typer.Option(metavar="N", help="Values of a row per group with --granularity "
                                                             "group (and kmeans --normalize group).")] = 128,
    codebook_rows: Annotated[int, typer.Option(metavar="N", help="kmeans --granularity group: rows sharing one "
                                                                "codebook.")] = 128,
    scale_dtype: Annotated[StorageDtype, typer.Option(help="How scales are stored; auto = float16 for group "
                                                         "scales, float32 otherwise.")] = StorageDtype.auto,
    seed: Annotated[int, typer.Option(metavar="N", help="Random seed for methods that sample (kmeans, vq).")] = 0,
    scale_search: Annotated[bool, typer.Option("--scale-search", help="Choose each block's scale by a search over "
                                                                      "clipping ratios (uniform, nf, log): +0.3-0.7 "
                                                                      "dB, 5-12x slower.")] = False,
    normalize: Annotated[Normalize, typer.Option(help="kmeans: 'group' learns one codebook over values "
                                                      "normalised by per-group absmax scales (recommended).")]
    = Normalize.none,
    vector_dim: Annotated[int, typer.Option(metavar="N", help="vq: values per vector (rows are cut into pieces of "
                                                              "this length).")] = 4,
    iters: Annotated[int, typer.Option(metavar="N", help="vq: Lloyd iterations.")] = 25,
    step: Annotated[Optional[float], typer.Option(metavar="S", help="ecsq: the grid step (values round to "
                                                                    "multiples of S).", show_default=False)] = None,
    step_rms: Annotated[Optional[float], typer.Option("--step-rms", metavar="F", help="ecsq: the step as F times "
                                                      "each tensor's RMS.", show_default=False)] = None,
    sqnr: Annotated[Optional[float], typer.Option(metavar="DB", help="ecsq: the SQNR over all quantized tensors "
                                                                     "together; one step is chosen for it.",
                                                  show_default=False)] = None,
    trellis: Annotated[bool, typer.Option("--trellis", help="ecsq: dependent quantization (two interleaved grids "
                                                            "and a Viterbi search per row): ~0.15 bits per weight "
                                                            "smaller at equal SQNR, ~4x slower.")] = False,
    codec: Annotated[CodecChoice, typer.Option(help="How codes are stored: bitpack (fixed rate, what LUT kernels "
                                                    "read) or entropy (smaller files; format version 2).")]
    = CodecChoice.bitpack,
    only: Annotated[Optional[str], typer.Option(metavar="REGEX", help="Quantize only tensors whose name matches "
                                                                      "this regex.")] = None,
    skip: Annotated[Optional[str], typer.Option(metavar="REGEX", help="Keep tensors whose name matches this regex "
                                                                      "as they are.")] = None,
    include_1d: Annotated[bool, typer.Option("--include-1d", help="Quantize 1-D float tensors (biases, "
                                                                  "norms) too.")] = False,
    keep_nonfinite: Annotated[bool, typer.Option("--keep-nonfinite", help="Keep tensors holding NaN/Inf as "
                                                                          "they are instead of failing.")] = False,
    recipe: Annotated[Optional[str], typer.Option(metavar="FILE", help="TOML file mapping name patterns to "
                                                                       "settings (first match wins; see README).")]
    = None,
    jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", metavar="N", help="Tensors encoded at once; "
                                                "default: the machine's cores. Output bytes do not depend on it.",
                                                show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the per-tensor plan and predicted archive "
                                                            "size; read headers only, write nothing.")] = False,
    target_bpw: Annotated[Optional[float], typer.Option("--target-bpw", metavar="BITS", help="Plan per-tensor "
                                                        "settings for the best weighted SQNR at <= this many "
                                                        "archive bits per quantized weight.",
                                                        show_default=False)] = None,
    max_size: Annotated[Optional[str], typer.Option("--max-size", metavar="SIZE", help="Plan for the best weighted "
                                                    "SQNR with the whole archive <= this size (e.g. 30MB).",
                                                    show_default=False)] = None,
    min_sqnr: Annotated[Optional[float], typer.Option("--min-sqnr", metavar="DB", help="Plan the smallest archive "
                                                      "with every planned tensor >= this SQNR (dB).",
                                                      show_default=False)] = None,
    sample: Annotated[int, typer.Option("--sample", metavar="N", help="Planner: values per tensor measured for "
                                                                      "each candidate (whole rows; 0 = whole "
                                                                      "tensors).")] = SAMPLE,
    candidates: Annotated[Candidates, typer.Option("--candidates", help="Planner: fast = uniform g64/g128/"
                                                                        "channel; all = + nf, kmeans.")] = Candidates.default,
    objective: Annotated[Objective, typer.Option("--objective", help="Planner: auto = element-weighted relative "
                                                 "error with two structural exceptions (an input token table 4x "
                                                 "coarser, tensors of outlying scale as mse; docs/PLANNER.md); "
                                                 "relative = without them; mse = total squared error (what SQNR "
                                                 "over the model measures); sensitivity = each tensor's measured "
                                                 "output change (--importance with NAME.sensitivity); "
                                                 "relative-emb = auto. With --importance: the layers' output "
                                                 "error.")] = Objective.auto,
    importance: Annotated[Optional[str], typer.Option("--importance", metavar="FILE", help="Calibration "
                                                      "statistics (safetensors; docs/IMPORTANCE.md): the tensors "
                                                      "they cover are quantized for their layer's output error.",
                                                      show_default=False)] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", metavar="NAME", help=presets.help_text(),
                                                  show_default=False)] = None,
    json_out: JsonOpt = False, report: ReportOpt = None, quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Quantize weights into one archive file and report bits per weight, SQNR and max error.

    With no options: 8-bit symmetric uniform, one float32 scale per output channel, the safe
    default. Float tensors of 2+ dimensions (and any .npy you name) are quantized; 1-D and
    integer tensors are kept as they are.

    Example: quant quantize model.safetensors -o model.qnt.safetensors --bits 4 --scheme asymmetric
    --granularity group --group-size 64
    """
    with _errors(debug), Reporter("quantize", json_out, report) as out:
        from .. import api

        options = {k: getattr(v, "value", v) for k, v in ctx.params.items() if k not in _OUTPUT_FLAGS}
        check_report(report, paths + ([importance] if importance else []), [output] if output else [])
        show = not quiet and not json_out
        display = (_phase_progress(show) if api.is_planned(**options) else
                   _progress(show and not dry_run, lambda: source_items(paths)))
        with display as progress:
            result = api.quantize(options.pop("paths"), typed=_typed(ctx), progress=progress, **options)
        out.emit(report_json(result))
        if show:
            print_report(_stdout(), result)


_OUTPUT_FLAGS = frozenset({"json_out", "report", "quiet", "debug"})  # how a command reports, not what it does


@app.command(cls=QuantCommand)
def dequantize(
    archive: Annotated[str, typer.Argument(help="An archive written by quant quantize.", show_default=False,
                                           metavar="ARCHIVE")],
    output: Annotated[str, typer.Option("--output", "-o", metavar="PATH", help="Where to write: .safetensors, "
                                        ".npz or .npy, or a folder of shards.", show_default=False)],
    dtype: Annotated[OutputDtype, typer.Option(help="dtype of the quantized tensors written; original = each "
                                                    "tensor's own; kept tensors always come back bit for bit. "
                                                    "Values beyond a narrower dtype's range are refused "
                                                    "(.npy/.npz hold bfloat16 as float32).")]
    = OutputDtype.original,
    shard_size: Annotated[Optional[str], typer.Option(metavar="SIZE", help="Write a folder of safetensors shards "
                                                      "of at most this size (e.g. 2GB) plus "
                                                      "model.safetensors.index.json.", show_default=False)] = None,
    like: Annotated[Optional[str], typer.Option("--like", metavar="MODEL_DIR", help="With a folder output: copy "
                                                "the original model folder's other files (configs, tokenizer, "
                                                "sub-folders) beside the weights, so the folder loads with "
                                                "from_pretrained.", show_default=False)] = None,
    json_out: JsonOpt = False, report: ReportOpt = None, quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Reconstruct the weights of an archive: same names, shapes and (by default) dtypes as the input.
    A folder output (or --shard-size) gives Hugging Face style shards with an index.

    Example: quant dequantize model.qnt.safetensors -o restored/ --like original-model/
    """
    with _errors(debug), Reporter("dequantize", json_out, report) as out:
        from .. import api
        from . import render

        check_report(report, [archive], [output + os.sep if shard_size and not output.endswith(os.sep) else output])
        with _progress(not quiet and not json_out, lambda: archive_items(archive)) as progress:
            result = api.dequantize_file(archive, output, dtype.value, progress, shard_size, like)
        out.emit(render.dequantize_json(result))
        if not json_out and not quiet:
            render.print_dequantize(_stdout(), result)


@app.command(cls=QuantCommand)
def verify(
    archives: Annotated[list[str], typer.Argument(help="Archives written by quant quantize.", show_default=False,
                                                  metavar="ARCHIVE...")],
    json_out: JsonOpt = False, report: ReportOpt = None, quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Check archives end to end: structure, the manifest checksum, every tensor's SHA-256, and
    every tensor decoded (refusing what dequantize refuses). Exit 0 when all hold, 2 (one line per
    bad archive on stderr) otherwise.
    --report is written only when every archive is ok.

    Example: quant verify model.qnt.safetensors && cp model.qnt.safetensors /deploy/
    """
    with _errors(debug), Reporter("verify", json_out, report) as out:
        from ..archive import inspection
        from . import render

        check_report(report, archives)
        results = inspection.verify_archives(archives)
        doc = render.verify_json(results)
        sys.stderr.write("".join(render.verify_problems(results)))
        with nullcontext() if doc["ok"] else failing():  # a closed stdout does not make a failure a success
            if doc["ok"]:
                out.emit(doc)
            elif json_out:
                print_json(doc)
            if not json_out and not quiet:
                render.print_verify(results)
    if not doc["ok"]:
        raise typer.Exit(2)


@app.command("pq-encode", cls=QuantCommand)
def pq_encode(
    paths: Paths,
    output: Annotated[str, typer.Option("--output", "-o", metavar="FILE", help="The archive to write "
                                        "(.pq.safetensors).", show_default=False)],
    subvector_dim: Annotated[Optional[int], typer.Option(metavar="N", help="Values per sub-vector (default 4); "
                                                         "M = ceil(columns / this).", show_default=False)] = None,
    subspaces: Annotated[Optional[int], typer.Option(metavar="M", help="Number of sub-vectors M per row (instead "
                                                     "of --subvector-dim).", show_default=False)] = None,
    centroids: Annotated[int, typer.Option(metavar="K", help="Centroids K per subspace (2-65536); codes take "
                                                             "ceil(log2 K) bits.")] = 256,
    iters: Annotated[int, typer.Option(metavar="N", help="At most this many Lloyd iterations.")] = 25,
    seed: Annotated[int, typer.Option(metavar="N", help="Random seed (k-means++ and the training sample).")] = 0,
    codebook_dtype: Annotated[StorageDtype, typer.Option(help="How codebooks are stored; auto = float32.")]
    = StorageDtype.auto,
    only: Annotated[Optional[str], typer.Option(metavar="REGEX", help="Encode only tensors whose name matches this "
                                                                      "regex.")] = None,
    skip: Annotated[Optional[str], typer.Option(metavar="REGEX", help="Keep tensors whose name matches this regex "
                                                                      "as they are.")] = None,
    jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", metavar="N", help="Tensors encoded at once; "
                                                "default: the machine's cores.", show_default=False)] = None,
    keep_nonfinite: Annotated[bool, typer.Option("--keep-nonfinite", help="Keep tensors holding NaN/Inf as "
                                                                          "they are instead of failing.")] = False,
    json_out: JsonOpt = False, report: ReportOpt = None, quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Product-quantize weight rows: each row cut into M sub-vectors, one k-means codebook of K
    centroids per subspace. The archive works with inspect, dequantize, verify and pq-dot.

    Example: quant pq-encode model.safetensors -o m.pq.safetensors --subvector-dim 4 --centroids 256 --seed 0
    """
    with _errors(debug), Reporter("pq-encode", json_out, report) as out:
        from .. import api
        from . import render

        check_report(report, paths, [output])
        spec = Spec(method=methods.LOOKUP, subvector_dim=subvector_dim, subspaces=subspaces, centroids=centroids, iters=iters,
                    seed=seed, scale_dtype=codebook_dtype.value)
        with _progress(not quiet and not json_out, lambda: source_items(paths)) as progress:
            result = api.quantize_file(paths, output, spec, only=only, skip=skip, jobs=jobs,
                                       keep_nonfinite=keep_nonfinite, progress=progress)
        out.emit(render.quantize_json(result, "pq-encode"))
        if not json_out and not quiet:
            render.print_quantize(_stdout(), result)


@app.command("pq-dot", cls=QuantCommand)
def pq_dot(
    archive: Annotated[str, typer.Argument(help="An archive written by quant pq-encode.", show_default=False,
                                           metavar="ARCHIVE")],
    query: Annotated[str, typer.Option("--query", metavar="FILE", help="Queries: a .npy (or .npz/.safetensors "
                                       "with one array) of shape [d] or [b, d].", show_default=False)],
    tensor: Annotated[Optional[str], typer.Option(metavar="NAME", help="The PQ tensor (needed when the archive has "
                                                  "several).", show_default=False)] = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", metavar="FILE", help="Write the [b, n] result "
                                                  "to this .npy.", show_default=False)] = None,
    reference: Annotated[Optional[str], typer.Option(metavar="FILE", help="The original weights: report the "
                                                     "relative error and time the LUT path against a dense matmul.",
                                                     show_default=False)] = None,
    repeat: Annotated[int, typer.Option(metavar="N", help="Timed runs per path with --reference (median).")] = 7,
    json_out: JsonOpt = False, report: ReportOpt = None, quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Dot products of float queries with PQ-encoded weight rows through lookup tables
    (LUT[b, m, k] = <q_m, codebook_m[k]>, then a gather-and-sum over m), without reconstructing W.

    Example: quant pq-dot m.pq.safetensors --tensor encoder.layer.0.attention.self.query.weight
    --query q.npy --reference model.safetensors --json
    """
    with _errors(debug), Reporter("pq-dot", json_out, report) as out:
        from .. import api
        from . import render

        check_report(report, [archive, query] + ([reference] if reference else []), [output] if output else [])
        result = api.pq_dot(archive, query, tensor, output=output, reference=reference, repeat=repeat)
        out.emit(render.pq_dot_json(result))
        if not json_out and not quiet:
            render.print_pq_dot(_stdout(), result)


@app.command(cls=QuantCommand)
def curve(
    paths: Paths,
    plot: Annotated[Optional[str], typer.Option("--plot", metavar="FILE", help="Also draw the curves into this PNG "
                                                "(needs matplotlib: pip install matplotlib).",
                                                show_default=False)] = None,
    only: Annotated[Optional[str], typer.Option(metavar="REGEX", help="Measure only tensors whose name matches "
                                                                      "this regex.")] = None,
    skip: Annotated[Optional[str], typer.Option(metavar="REGEX", help="Leave out tensors whose name matches this "
                                                                      "regex.")] = None,
    include_1d: Annotated[bool, typer.Option("--include-1d", help="Measure 1-D float tensors too.")] = False,
    sample: Annotated[int, typer.Option("--sample", metavar="N", help="Values per tensor measured for each setting "
                                                                      "(whole rows; 0 = whole tensors).")] = SAMPLE,
    candidates: Annotated[Candidates, typer.Option("--candidates", help="all = + nf, kmeans.")] = Candidates.default,
    jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", metavar="N", help="Tensors measured at once; "
                                                "default: the machine's cores.", show_default=False)] = None,
    json_out: JsonOpt = False, report: ReportOpt = None, quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Print the rate-distortion points of every candidate setting on the model: bits per weight vs
    overall SQNR and weighted SQNR (what the planner chooses from).

    Example: quant curve model.safetensors --json --plot rd.png
    """
    with _errors(debug), Reporter("curve", json_out, report) as out:
        from .. import api
        from . import plan_render

        check_report(report, paths, [plot] if plot else [])
        result = api.curve(paths, plot=plot, only=only, skip=skip, include_1d=include_1d, sample=sample,
                           candidates=candidates.value, jobs=jobs)
        out.emit(plan_render.curve_json(result))
        if not json_out and not quiet:
            plan_render.print_curve(_stdout(), result)


from .collect import make_collect_command  # noqa: E402  (the command's options live beside it)

app.command("collect-importance", cls=QuantCommand)(make_collect_command(_errors, _stderr))
