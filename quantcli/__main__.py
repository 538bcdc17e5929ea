"""`python -m quantcli` and the `quant` console script.

The signal handlers go in before anything heavy is imported (the CLI's imports take ~0.3 s), so
Ctrl-C or SIGTERM at any moment, start-up included, ends in one line and exit 130/143."""

import os
import sys

from .io.signals import Interrupted, exit_interrupted, install


def _version_only() -> None:
    """`quant --version` alone needs no CLI: answering before typer (and with it pydantic and rich)
    is imported makes it ~4x cheaper. Prints what the CLI's --version prints."""
    from . import __version__

    try:
        sys.stdout.write(f"quant {__version__}\n")
        sys.stdout.flush()
    except BrokenPipeError:  # a reader that went away: a quiet end, as for every command
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError as e:  # a full disk: one line, as for every command
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.stderr.write(f"quant: error: standard output: cannot write: {e.strerror or e}\n")
        raise SystemExit(1) from None


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        _version_only()
        return
    try:
        install()
        from .cli.entry import main as cli_main
    except (KeyboardInterrupt, Interrupted) as e:
        exit_interrupted(e)
    cli_main()


if __name__ == "__main__":
    main()
