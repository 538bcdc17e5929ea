"""Start-up time of `quant`: median wall time of each command over N runs, for one or more source
trees side by side (runs interleaved, so machine load hits every tree alike).

    python benchmarks/bench_startup.py                       # this checkout
    python benchmarks/bench_startup.py --tree before=/tmp/quant-before --tree after=.

A tree is a folder holding the `quantcli` package; it is put first on sys.path (ahead of an
editable install's import hook, which is removed) and the command runs as the `quant` console
script does (`quantcli.__main__:main`). Prints a markdown table of wall time and of CPU time (user +
system of the child: steadier than wall time on a loaded machine).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

COMMANDS = {
    "python -c pass": None,
    "python -c 'import numpy'": ["-c", "import numpy"],
    "import the CLI module": ["-c", "exec('try:\\n import quantcli.cli.commands\\nexcept ImportError:\\n import quantcli.cli')"],
    "quant --version": ["--version"],
    "quant inspect small.npy": ["inspect", "{small}"],
    "quant inspect small.npy --json": ["inspect", "{small}", "--json"],
    "quant quantize --help": ["quantize", "--help"],
}

# Drop an editable install's finder so that the tree on sys.path is the quantcli imported.
PRELUDE = ("import os, sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; "
           "sys.path.insert(0, os.environ['QUANT_TREE']); ")
RUNNER = PRELUDE + "from quantcli.__main__ import main; sys.argv = ['quant'] + sys.argv[1:]; main()"


def argv(command: list[str] | None, small: str) -> list[str]:
    if command is None:
        return [sys.executable, "-c", "pass"]
    if command[0] == "-c":
        return [sys.executable, "-c", PRELUDE + command[1]]
    return [sys.executable, "-c", RUNNER, *[a.format(small=small) for a in command]]


def run_once(args: list[str], tree: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run."""
    env = dict(os.environ, QUANT_TREE=os.path.abspath(tree), COLUMNS="80")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=DIR",
                    help="a source tree to time (repeatable); default: this checkout")
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    trees = [t.split("=", 1) for t in args.tree] or [["this", os.path.dirname(os.path.dirname(__file__)) or "."]]
    with tempfile.TemporaryDirectory() as tmp:
        small = os.path.join(tmp, "small.npy")
        np.save(small, np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32))
        times: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for _ in range(args.runs):
            for label, command in COMMANDS.items():
                for name, tree in trees:
                    times.setdefault((label, name), []).append(run_once(argv(command, small), tree))
    names = [n for n, _ in trees]
    print(f"median of {args.runs} runs, seconds (runs interleaved across trees); wall / CPU\n")
    print("| command | " + " | ".join(f"{n} wall | {n} CPU" for n in names) + " |")
    print("| --- | " + " | ".join("---: | ---:" for _ in names) + " |")
    for label in COMMANDS:
        cells = [f"{statistics.median(w for w, _ in times[label, n]):.3f} | "
                 f"{statistics.median(c for _, c in times[label, n]):.3f}" for n in names]
        print(f"| `{label}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
