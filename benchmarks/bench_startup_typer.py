"""Start-up CPU of `quant` under two typer releases, side by side: the same source tree run by two
venvs that differ only in typer (0.29 made pydantic a dependency). Runs are interleaved and the
CPU time (user + system of the child) is the median over N rounds, as a ratio to `import numpy`.

    python benchmarks/bench_startup_typer.py --tree . --python new=VENV29/bin/python \
        --python old=VENV28/bin/python --runs 10 --npy small.npy
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", default=".", help="folder holding the quantcli package")
    ap.add_argument("--python", action="append", required=True, help="LABEL=PATH of a venv's python")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--npy", required=True, help="a small .npy file for `quant inspect`")
    a = ap.parse_args()
    pys = dict(p.split("=", 1) for p in a.python)
    run = "import sys; sys.path.insert(0, {tree!r}); sys.argv = ['quant', *{argv!r}]; from quantcli.__main__ import main; main()"
    cmds = {"import numpy": ["-c", "import numpy"],
            "quant inspect small.npy": ["-c", run.format(tree=a.tree, argv=["inspect", a.npy])],
            "quant quantize --help": ["-c", run.format(tree=a.tree, argv=["quantize", "--help"])]}
    cpu: dict[tuple[str, str], list[float]] = {}
    for _ in range(a.runs):
        for label, py in pys.items():
            for name, args in cmds.items():
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                subprocess.run([py, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu.setdefault((label, name), []).append(
                    after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    print("| venv | " + " | ".join(cmds) + " |")
    print("| --- |" + " ---: |" * len(cmds))
    for label in pys:
        base = statistics.median(cpu[(label, "import numpy")])
        cells = [f"{statistics.median(cpu[(label, n)]):.3f} s ({statistics.median(cpu[(label, n)]) / base:.2f}x)"
                 for n in cmds]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
