"""`python -m quantcli` and the `quant` console script.

The signal handlers go in before anything heavy is imported (the CLI's imports take ~0.3 s), so
Ctrl-C or SIGTERM at any moment, start-up included, ends in one line and exit 130/143."""

import sys

from .signals import Interrupted, install


def main() -> None:
    try:
        install()
        from .entry import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("quant: interrupted; no output was written\n")
        raise SystemExit(130) from None
    except Interrupted:
        sys.stderr.write("quant: terminated; no output was written\n")
        raise SystemExit(143) from None
    cli_main()


if __name__ == "__main__":
    main()
