"""The console entry point around the Typer app: usage errors as one line, unexpected errors as
one line and exit 1, a reader closing our stdout as a quiet normal end."""

from __future__ import annotations

import sys
from typing import Any

import typer

from .commands import app
from ..errors import one_line
from .util import StdoutClosed, StdoutError, failing, stdout_closed
from ..io.signals import Interrupted, exit_interrupted, install


def _debugging(argv: list[str]) -> bool:
    return "--debug" in argv


class _GuardedStdout:
    """sys.stdout during `main`: a broken pipe on write or flush becomes `StdoutClosed`, any other
    write error (a full disk) a `StdoutError` naming where stdout goes."""

    def __init__(self, stream: Any):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise StdoutClosed() from None
        except OSError as e:
            raise StdoutError(e) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise StdoutClosed() from None
        except OSError as e:
            raise StdoutError(e) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _did_you_mean(message: str) -> str:
    """` (did you mean 'kmeans'?)` when a choice option got a near miss of one of its values. The
    value and the choices are read off the parser's message: typer's parameter objects do not
    expose the choices as a stable attribute."""
    import re

    found = re.search(r"'([^']*)' is not one of ((?:'[^']*'(?:, )?)+)", message)
    if not found:
        return ""
    import difflib

    close = difflib.get_close_matches(found.group(1), re.findall(r"'([^']*)'", found.group(2)), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _print_failure(command_path: str, message: str, status: int) -> None:
    """A parser failure's JSON document on stdout: the same keys as a library failure's."""
    from .util import SCHEMA, print_json

    command = command_path.split(" ", 1)[1] if " " in command_path else command_path
    with failing():
        print_json({"schema": SCHEMA, "command": command, "ok": False, "error": message, "exit_code": status})


def main() -> None:
    """Console-script entry point. Usage errors become one line (click prints four); an
    unexpected exception becomes one line and exit 1 (its traceback with --debug). Only typer's
    public exceptions are used: TyperException is the base of every usage error it raises.
    A reader closing our stdout ends a successful run quietly (exit 0, nothing on stderr); a failed
    run keeps its exit status and its line on stderr."""
    install()
    argv = sys.argv[1:]
    stdout = sys.stdout
    sys.stdout = _GuardedStdout(stdout)
    try:
        code = app(args=argv, prog_name="quant", standalone_mode=False)  # returns typer.Exit's code
        if isinstance(code, int) and code:
            with failing():  # what a failed run printed cannot turn its failure into a success
                sys.stdout.flush()
        sys.stdout.flush()  # inside the try: a closed pipe is seen here, not at interpreter exit
    except typer.Exit as e:
        raise SystemExit(e.exit_code) from None
    except typer.Abort:
        sys.stderr.write("quant: interrupted\n")
        raise SystemExit(130) from None
    except typer.TyperException as e:
        message = e.format_message().replace("Value error, ", "")
        status = getattr(e, "exit_code", 2)
        if message.startswith("Usage:"):  # `quant` alone: the help, as click shows it
            sys.stderr.write(message + "\n")
            raise SystemExit(2) from None
        ctx = getattr(e, "ctx", None)
        command = ctx.command_path if ctx is not None else "quant"
        message = one_line(message) + _did_you_mean(message)
        if "--json" in argv:  # the failure document docs/JSON.md promises, for parser failures too
            _print_failure(command, f"{message} (see '{command} --help')", status)
        sys.stderr.write(f"quant: error: {message} (see '{command} --help')\n")
        raise SystemExit(status) from None
    except (StdoutClosed, BrokenPipeError):
        stdout_closed()
        raise SystemExit(0) from None
    except (KeyboardInterrupt, Interrupted) as e:
        exit_interrupted(e)
    except StdoutError as e:  # stdout itself is unwritable: say so once, and stop flushing into it
        from .util import failure, stderr_line

        sys.stderr.write(stderr_line(*failure(e)))
        stdout_closed()
        raise SystemExit(e.exit_code) from None
    except Exception as e:  # a bug: one line, not a traceback, unless asked
        if _debugging(argv):
            raise
        from .util import failure, stderr_line

        sys.stderr.write(stderr_line(*failure(e)))
        raise SystemExit(1) from None
    finally:
        sys.stdout = stdout
    if isinstance(code, int) and code:
        raise SystemExit(code)
